"""Tests for the artifact store: atomic writes, validated tables (tasks/store.py)."""

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq
import pytest

import tasks.store
from tasks.errors import NotFoundError, StorageError, TableError
from tasks.schemas import (
    AliasEvents,
    ConfusionMatrix,
    DatasetProfile,
    Metrics,
    SnapshotSplit,
    TrainingHistory,
)
from tasks.store import (
    atomic_path,
    read_json,
    read_table,
    resolve_root,
    staging_folder,
    table_context,
    write_json,
    write_table,
)

# --- tiny valid tables, as plain Python records ---------------------------------------

PROVENANCE = {
    "run_id": "run-1",
    "model_name": "digits",
    "model_version": 2,
    "snapshot_id": "0123abcd",
    "split": "test",
    "environment": "clean",
}

METRICS_RECORDS = [
    {
        **PROVENANCE,
        "metric": "accuracy",
        "average": None,
        "class_index": None,
        "class_name": None,
        "value": 0.75,
        "lower": 0.5,
        "upper": 0.9,
        "count": 20,
    },
    {
        **PROVENANCE,
        "model_version": None,
        "metric": "f1",
        "average": "macro",
        "class_index": None,
        "class_name": None,
        "value": 0.7,
        "lower": None,
        "upper": None,
        "count": 20,
    },
    {
        **PROVENANCE,
        "metric": "recall",
        "average": None,
        "class_index": 1,
        "class_name": "one",
        "value": None,
        "lower": None,
        "upper": None,
        "count": 0,
    },
]

CONFUSION_RECORDS = [
    {
        **PROVENANCE,
        "true_index": t,
        "true_class": f"c{t}",
        "predicted_index": p,
        "predicted_class": f"c{p}",
        "count": 3 * t + p,
    }
    for t in range(2)
    for p in range(2)
]

HISTORY_RECORDS = [
    {
        "run_id": "run-1",
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 0.5 + 0.1 * epoch,
        "val_loss": 1.2 / epoch,
        "val_accuracy": 0.4 + 0.1 * epoch,
        "learning_rate": 0.01,
        "seconds": 1.5,
        "samples_per_second": 1000.0,
        "peak_memory_bytes": 4096,
    }
    for epoch in (1, 2)
]

PROFILE_RECORDS = [
    {
        "split": "train",
        "statistic": "count",
        "class_index": 0,
        "class_name": "zero",
        "channel": None,
        "value": 4.0,
    },
    {
        "split": "validation",
        "statistic": "std",
        "class_index": None,
        "class_name": None,
        "channel": 0,
        "value": 12.5,
    },
]

ALIAS_RECORDS = [
    {
        "changed_at": pd.Timestamp("2024-05-01T12:00:00.123456", tz="UTC"),
        "model_name": "digits",
        "alias": "champion",
        "previous_version": None,
        "version": 1,
        "reason": "first",
    },
    {
        "changed_at": pd.Timestamp("2024-05-02T08:30:00", tz="UTC"),
        "model_name": "digits",
        "alias": "champion",
        "previous_version": 1,
        "version": 2,
        "reason": "better",
    },
]

SPLIT_RECORDS = [
    {"index": i, "label": i % 2, "image": [i, 255 - i, 7, 0]} for i in range(3)
]


def _split_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A SnapshotSplit frame: pixels as an Arrow fixed-size uint8 list column."""
    flat = pyarrow.array(
        np.array([r["image"] for r in records], dtype=np.uint8).reshape(-1)
    )
    images = pyarrow.FixedSizeListArray.from_arrays(flat, len(records[0]["image"]))
    return pd.DataFrame(
        {
            "index": [r["index"] for r in records],
            "label": [r["label"] for r in records],
            "image": pd.Series(images, dtype=pd.ArrowDtype(images.type)),
        }
    )


def _plain(value: Any) -> Any:
    """A stored cell as plain Python: lists for arrays, None for missing."""
    if isinstance(value, (list, np.ndarray)):
        return [int(v) for v in value]
    if value is None or pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {column: _plain(frame[column].iloc[row]) for column in frame.columns}
        for row in range(len(frame))
    ]


TABLES = {
    "SnapshotSplit": (SnapshotSplit, "train", SPLIT_RECORDS),
    "DatasetProfile": (DatasetProfile, "profile", PROFILE_RECORDS),
    "TrainingHistory": (TrainingHistory, "training_history", HISTORY_RECORDS),
    "Metrics": (Metrics, "metrics", METRICS_RECORDS),
    "ConfusionMatrix": (ConfusionMatrix, "confusion", CONFUSION_RECORDS),
    "AliasEvents": (AliasEvents, "alias_events", ALIAS_RECORDS),
}


def _frame(schema: Any, records: list[dict[str, Any]]) -> pd.DataFrame:
    if schema is SnapshotSplit:
        return _split_frame(records)
    return pd.DataFrame(records)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _metrics_with(**columns: list[Any]) -> pd.DataFrame:
    """Four Metrics rows (accuracy per class), with some columns replaced."""
    frame = pd.DataFrame(
        [
            {
                **METRICS_RECORDS[0],
                "average": None,
                "class_index": i,
                "class_name": f"c{i}",
            }
            for i in range(4)
        ]
    )
    return frame.assign(**columns)


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "stem", "records"), list(TABLES.values()), ids=list(TABLES)
)
def test_table_round_trip_keeps_every_value(tmp_path, schema, stem, records):
    path = tmp_path / f"{stem}.parquet"
    assert write_table(_frame(schema, records), schema, path) == path
    assert _records(read_table(path)) == records


@pytest.mark.parametrize(
    ("schema", "stem", "records"), list(TABLES.values()), ids=list(TABLES)
)
def test_written_file_names_its_schema_in_parquet_metadata(
    tmp_path, schema, stem, records
):
    path = tmp_path / f"{stem}.parquet"
    write_table(_frame(schema, records), schema, path)
    metadata = pq.read_schema(path).metadata
    assert metadata[b"vigil.schema"] == schema.__name__.encode()
    assert pq.read_metadata(path).num_rows == len(records)


def test_read_table_with_explicit_schema_ignores_file_stem(tmp_path):
    path = tmp_path / "anything.parquet"
    write_table(pd.DataFrame(HISTORY_RECORDS), TrainingHistory, path)
    frame = read_table(path, TrainingHistory)
    assert frame["epoch"].tolist() == [1, 2]


def test_table_context_round_trip(tmp_path):
    context = {"run": {"epochs": 3, "lr": 0.01}, "sources": ["digits", "cifar10"]}
    path = tmp_path / "training_history.parquet"
    write_table(pd.DataFrame(HISTORY_RECORDS), TrainingHistory, path, context)
    assert table_context(path) == context


def test_table_context_defaults_to_empty(tmp_path):
    written = tmp_path / "training_history.parquet"
    write_table(pd.DataFrame(HISTORY_RECORDS), TrainingHistory, written)
    foreign = tmp_path / "foreign.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(foreign)
    assert table_context(written) == {}
    assert table_context(foreign) == {}


def test_json_record_round_trip(tmp_path):
    record = {"name": "digits", "counts": {"train": 10}, "names": ["a", "b"]}
    path = tmp_path / "deep" / "record.json"
    assert write_json(record, path) == path
    assert read_json(path) == record
    assert json.loads(path.read_text()) == record


# --- atomic writes --------------------------------------------------------------------


def _failing_writer(table: Any, where: Any, **kwargs: Any) -> None:
    """Write a few bytes, as a crash mid-write would leave them, then fail."""
    Path(where).write_bytes(b"PAR1 half a table")
    raise OSError("disk full")


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks.store.pq, "write_table", _failing_writer)
    folder = tmp_path / "runs" / "r1"
    with pytest.raises(OSError, match="disk full"):
        write_table(
            pd.DataFrame(HISTORY_RECORDS), TrainingHistory, folder / "h.parquet"
        )
    assert _listing(folder) == []


def test_failed_overwrite_keeps_the_previous_table(tmp_path, monkeypatch):
    path = tmp_path / "training_history.parquet"
    write_table(pd.DataFrame(HISTORY_RECORDS), TrainingHistory, path)
    monkeypatch.setattr(tasks.store.pq, "write_table", _failing_writer)
    changed = pd.DataFrame(HISTORY_RECORDS).assign(run_id="run-2")
    with pytest.raises(OSError, match="disk full"):
        write_table(changed, TrainingHistory, path)
    assert _listing(tmp_path) == ["training_history.parquet"]
    assert read_table(path)["run_id"].tolist() == ["run-1", "run-1"]


def test_invalid_table_writes_nothing(tmp_path):
    bad = pd.DataFrame(HISTORY_RECORDS).assign(epoch=[0, 1])
    with pytest.raises(TableError):
        write_table(bad, TrainingHistory, tmp_path / "training_history.parquet")
    assert _listing(tmp_path) == []


def test_failed_json_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json({"not json": object()}, tmp_path / "record.json")
    assert _listing(tmp_path) == []


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary != target
        temporary.write_bytes(b"done")
        assert not target.exists()
    assert target.read_bytes() == b"done"
    assert _listing(tmp_path) == ["out.bin"]


# --- schema failures ------------------------------------------------------------------

BROKEN_TABLES = {
    "metrics_negative_count": (
        Metrics,
        lambda: _metrics_with(count=[5, -1, 5, -2]),
        ["Metrics", "column 'count'", "rows [1, 3]", "-1, -2"],
    ),
    "history_accuracy_above_one": (
        TrainingHistory,
        lambda: pd.DataFrame(HISTORY_RECORDS).assign(train_accuracy=[1.5, 0.9]),
        ["TrainingHistory", "column 'train_accuracy'", "rows [0]", "1.5"],
    ),
    "profile_unknown_split": (
        DatasetProfile,
        lambda: pd.DataFrame(PROFILE_RECORDS).assign(split=["train", "holdout"]),
        ["DatasetProfile", "column 'split'", "rows [1]", "holdout"],
    ),
    "confusion_negative_predicted_index": (
        ConfusionMatrix,
        lambda: pd.DataFrame(CONFUSION_RECORDS).assign(predicted_index=[0, 1, -1, 1]),
        ["ConfusionMatrix", "column 'predicted_index'", "rows [2]"],
    ),
    "alias_events_unknown_alias": (
        AliasEvents,
        lambda: pd.DataFrame(ALIAS_RECORDS).assign(alias=["champion", "best"]),
        ["AliasEvents", "column 'alias'", "rows [1]", "best"],
    ),
    "split_repeated_index": (
        SnapshotSplit,
        lambda: _split_frame(SPLIT_RECORDS).assign(index=[0, 1, 1]),
        ["SnapshotSplit", "column 'index'", "rows [1, 2]"],
    ),
}


@pytest.mark.parametrize(
    ("schema", "make_frame", "fragments"),
    list(BROKEN_TABLES.values()),
    ids=list(BROKEN_TABLES),
)
def test_broken_table_names_schema_column_and_rows(
    tmp_path, schema, make_frame, fragments
):
    path = tmp_path / "table.parquet"
    pattern = ".*".join(re.escape(fragment) for fragment in fragments)
    with pytest.raises(TableError, match=pattern) as raised:
        write_table(make_frame(), schema, path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_error_names_at_most_five_rows(tmp_path):
    frame = pd.concat([_metrics_with(count=[-1] * 4)] * 2, ignore_index=True)
    with pytest.raises(TableError, match=re.escape("rows [0, 1, 2, 3, 4] ")):
        write_table(frame, Metrics, tmp_path / "metrics.parquet")


def test_unexpected_column_is_named(tmp_path):
    frame = pd.DataFrame(HISTORY_RECORDS).assign(surprise=1)
    with pytest.raises(TableError, match="TrainingHistory.*surprise"):
        write_table(frame, TrainingHistory, tmp_path / "training_history.parquet")


def test_missing_column_is_named(tmp_path):
    frame = pd.DataFrame(HISTORY_RECORDS).drop(columns="val_loss")
    with pytest.raises(TableError, match="TrainingHistory.*val_loss"):
        write_table(frame, TrainingHistory, tmp_path / "training_history.parquet")


def test_table_wide_check_failure_is_reported_once(tmp_path):
    # Bounds reversed in row 2 only: one broken rule at one row.
    frame = _metrics_with(lower=[0.1, 0.1, 0.9, 0.1], upper=[0.5, 0.5, 0.2, 0.5])
    with pytest.raises(TableError, match=re.escape("rows [2]")) as raised:
        write_table(frame, Metrics, tmp_path / "metrics.parquet")
    message = str(raised.value)
    assert message.count("bounds_are_ordered") == 1
    assert "column 'run_id'" not in message


def test_pixels_not_stored_as_fixed_size_uint8_arrays_are_refused(tmp_path):
    frame = pd.DataFrame({"index": [0, 1], "label": [0, 1], "image": [[1, 2], [3]]})
    with pytest.raises(TableError, match="SnapshotSplit.*is_fixed_size_uint8_array"):
        write_table(frame, SnapshotSplit, tmp_path / "train.parquet")


# --- reading foreign and damaged files ------------------------------------------------


def test_file_rewritten_by_pandas_is_checked_against_schema_of_its_stem(tmp_path):
    path = tmp_path / "metrics.parquet"
    _metrics_with(count=[5, -3, 5, 5]).to_parquet(path)
    assert b"vigil.schema" not in (pq.read_schema(path).metadata or {})
    with pytest.raises(
        TableError, match=r"breaks schema Metrics: column 'count'.* at rows \[1\]"
    ):
        read_table(path)


def test_valid_file_written_by_pandas_reads_by_its_stem(tmp_path):
    path = tmp_path / "confusion.parquet"
    pd.DataFrame(CONFUSION_RECORDS).to_parquet(path)
    assert _records(read_table(path)) == CONFUSION_RECORDS


def test_file_with_unknown_stem_and_no_schema_is_refused(tmp_path):
    path = tmp_path / "notes.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(path)
    with pytest.raises(TableError, match="names no known schema"):
        read_table(path)


def test_non_parquet_file_gives_one_line_error(tmp_path):
    path = tmp_path / "metrics.parquet"
    path.write_text("run_id,value\nr,1\n" * 10)
    with pytest.raises(TableError, match="is not a readable Parquet file") as raised:
        read_table(path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_table_gives_one_line_error(tmp_path):
    path = tmp_path / "metrics.parquet"
    with pytest.raises(NotFoundError, match=re.escape(f"no such table: {path}")):
        read_table(path)


def test_damaged_json_record_gives_one_line_error(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"run_id": ')
    with pytest.raises(TableError, match="is not valid JSON") as raised:
        read_json(path)
    assert "\n" not in str(raised.value)


def test_missing_json_record_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="no such record"):
        read_json(tmp_path / "run.json")


# --- the artifact root ----------------------------------------------------------------


def test_root_argument_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_ARTIFACT_ROOT", str(tmp_path / "from-env"))
    assert resolve_root(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert resolve_root(str(tmp_path / "from-arg")) == tmp_path / "from-arg"


def test_environment_wins_over_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIGIL_ARTIFACT_ROOT", str(tmp_path / "from-env"))
    assert resolve_root() == tmp_path / "from-env"


def test_default_root_is_artifacts_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIGIL_ARTIFACT_ROOT", raising=False)
    assert resolve_root() == tmp_path / "artifacts"


def test_relative_and_home_roots_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root("store") == tmp_path / "store"
    assert resolve_root("~/store") == tmp_path / "home" / "store"


def test_an_artifact_root_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact root should be")
    with pytest.raises(StorageError, match="cannot create folder .*: Not a directory"):
        write_json({"a": 1}, blocker / "runs" / "x" / "run.json")


def test_artifacts_get_the_modes_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = write_json({"a": 1}, tmp_path / "record.json")
        folder = staging_folder(tmp_path, ".stage.")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
