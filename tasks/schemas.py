"""Pandera models for every table that vigil writes.

Each table is validated before it is written and again when it is read back
(see ``tasks.store``). Checks are named as predicates so that a failure reads
as the rule that was broken.
"""

from typing import Any

import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

SPLITS = ("train", "validation", "test")
PROFILE_STATISTICS = ("count", "mean", "std", "min", "max")
METRICS = ("accuracy", "precision", "recall", "f1", "specificity", "support")
AVERAGES = ("macro", "weighted", "micro")
ALIASES = ("champion",)


class _Strict(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = True


class SnapshotSplit(_Strict):
    """One split of a dataset snapshot: flattened uint8 pixels and a label."""

    index: Series[int] = pa.Field(ge=0, unique=True)
    label: Series[int] = pa.Field(ge=0)
    image: Series[Any]

    @pa.check("image", name="is_fixed_size_uint8_array")
    def is_fixed_size_uint8_array(cls, image: pd.Series) -> bool:
        arrow_type = getattr(image.dtype, "pyarrow_dtype", None)
        return (
            arrow_type is not None
            and pyarrow.types.is_fixed_size_list(arrow_type)
            and arrow_type.value_type == pyarrow.uint8()
            and not image.isna().any()
        )

    class Config:
        name = "SnapshotSplit"
        coerce = False


class DatasetProfile(_Strict):
    """Per split: class counts and per-channel pixel statistics (0-255 scale)."""

    split: Series[str] = pa.Field(isin=list(SPLITS))
    statistic: Series[str] = pa.Field(isin=list(PROFILE_STATISTICS))
    class_index: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    class_name: Series[str] = pa.Field(nullable=True)
    channel: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    value: Series[float] = pa.Field(ge=0)

    class Config:
        name = "DatasetProfile"


class TrainingHistory(_Strict):
    """One row per training epoch."""

    run_id: Series[str]
    epoch: Series[int] = pa.Field(ge=1)
    train_loss: Series[float] = pa.Field(ge=0)
    train_accuracy: Series[float] = pa.Field(ge=0, le=1)
    val_loss: Series[float] = pa.Field(ge=0)
    val_accuracy: Series[float] = pa.Field(ge=0, le=1)
    learning_rate: Series[float] = pa.Field(gt=0)
    seconds: Series[float] = pa.Field(ge=0)
    samples_per_second: Series[float] = pa.Field(ge=0)
    peak_memory_bytes: Series[int] = pa.Field(ge=0)

    class Config:
        name = "TrainingHistory"


class _Evaluated(_Strict):
    """Columns that say where an evaluation's numbers came from."""

    run_id: Series[str]
    model_name: Series[str]
    # Null until the run's model is registered (see tasks.registry).
    model_version: Series[pd.Int64Dtype] = pa.Field(ge=1, nullable=True)
    snapshot_id: Series[str]
    split: Series[str] = pa.Field(isin=list(SPLITS))
    environment: Series[str]


class Metrics(_Evaluated):
    """Long format: one row per (environment, metric, average or class)."""

    metric: Series[str] = pa.Field(isin=list(METRICS))
    average: Series[str] = pa.Field(isin=list(AVERAGES), nullable=True)
    class_index: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    class_name: Series[str] = pa.Field(nullable=True)
    value: Series[float] = pa.Field(nullable=True)
    lower: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    upper: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    count: Series[int] = pa.Field(ge=0)

    @pa.dataframe_check(name="bounds_are_ordered")
    def bounds_are_ordered(cls, frame: pd.DataFrame) -> pd.Series:
        known = frame["lower"].notna() & frame["upper"].notna()
        return ~known | (frame["lower"] <= frame["upper"])

    @pa.dataframe_check(name="rows_are_per_class_or_averaged")
    def rows_are_per_class_or_averaged(cls, frame: pd.DataFrame) -> pd.Series:
        # A row is about one class or an average, never both.
        return ~(frame["average"].notna() & frame["class_index"].notna())

    class Config:
        name = "Metrics"


class ConfusionMatrix(_Evaluated):
    """Long format: one row per (true class, predicted class)."""

    true_index: Series[int] = pa.Field(ge=0)
    true_class: Series[str]
    predicted_index: Series[int] = pa.Field(ge=0)
    predicted_class: Series[str]
    count: Series[int] = pa.Field(ge=0)

    class Config:
        name = "ConfusionMatrix"


class MetricHistory(Metrics):
    """One re-evaluation's metric rows, as appended to the metric history.

    One file per flow run, ``history/date=YYYY-MM-DD/<run-id>.parquet``; the
    date is the Hive partition and is not stored inside the file.
    """

    evaluated_at: Series[pd.DatetimeTZDtype] = pa.Field(
        dtype_kwargs={"unit": "us", "tz": "UTC"}
    )

    class Config:
        name = "MetricHistory"


class AliasEvents(_Strict):
    """Every change of a model alias, oldest first."""

    changed_at: Series[pd.DatetimeTZDtype] = pa.Field(
        dtype_kwargs={"unit": "us", "tz": "UTC"}
    )
    model_name: Series[str]
    alias: Series[str] = pa.Field(isin=list(ALIASES))
    previous_version: Series[pd.Int64Dtype] = pa.Field(ge=1, nullable=True)
    version: Series[int] = pa.Field(ge=1)
    reason: Series[str]

    class Config:
        name = "AliasEvents"


TABLE_SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    schema.Config.name: schema
    for schema in (
        SnapshotSplit,
        DatasetProfile,
        TrainingHistory,
        Metrics,
        ConfusionMatrix,
        MetricHistory,
        AliasEvents,
    )
}

# The schema of each table file vigil writes, by file stem: the fallback when a
# file's metadata does not name its schema (a table rewritten by another tool).
FILE_SCHEMAS: dict[str, type[pa.DataFrameModel]] = {
    "train": SnapshotSplit,
    "validation": SnapshotSplit,
    "test": SnapshotSplit,
    "profile": DatasetProfile,
    "training_history": TrainingHistory,
    "metrics": Metrics,
    "confusion": ConfusionMatrix,
    "alias_events": AliasEvents,
}
