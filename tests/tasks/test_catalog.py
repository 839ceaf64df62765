"""Tests for listing and showing what the artifact store holds (tasks/catalog.py)."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.catalog import (
    list_datasets,
    list_models,
    list_runs,
    locate_table,
    show_table,
)
from tasks.errors import NotFoundError
from tasks.registry import promote_if_better, register
from tasks.runs import run_folder, write_run_record
from tasks.schemas import Metrics
from tasks.snapshots import write_snapshot
from tasks.sources import DecodedSource
from tasks.store import write_table

CLASS_NAMES = ["a", "b", "c"]
# Two runs: the older one is written second, so listing must sort them.
OLD_RUN = "0a1b2c3d-old"
NEW_RUN = "9f8e7d6c-new"


def _decoded() -> DecodedSource:
    rng = np.random.default_rng(0)

    def split(per_class: int):
        labels = np.repeat(np.arange(3), per_class)
        images = rng.integers(0, 256, (len(labels), 4, 4, 3), dtype=np.uint8)
        return images, labels

    return DecodedSource(
        "toy", list(CLASS_NAMES), {"train": split(5), "test": split(2)}
    )


def _metrics(run_id: str, accuracy: float) -> pd.DataFrame:
    row = {
        "run_id": run_id,
        "model_name": "net",
        "model_version": 1,
        "snapshot_id": "s",
        "environment": "clean",
        "class_index": None,
        "class_name": None,
        "lower": None,
        "upper": None,
        "count": 6,
    }
    return pd.DataFrame(
        [
            {**row, "split": "validation", "metric": "accuracy", "average": None}
            | {"value": 0.1},
            {**row, "split": "test", "metric": "f1", "average": "macro"}
            | {"value": 0.2},
            {**row, "split": "test", "metric": "accuracy", "average": None}
            | {"value": accuracy},
        ]
    )


@pytest.fixture
def store(tmp_path):
    snapshot, _ = write_snapshot(tmp_path, _decoded(), 0.2, 0, {"source": "toy"})
    checkpoint = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, checkpoint)
    for accuracy in (0.75, 0.5):
        card = {
            "architecture": "lenet",
            "snapshot_id": snapshot.snapshot_id,
            "metrics": {"test_accuracy": accuracy},
        }
        promote_if_better(tmp_path, register(tmp_path, "net", checkpoint, card))
    write_run_record(
        tmp_path,
        NEW_RUN,
        {"flow": "evaluate", "written_at": "2024-06-02T10:00:00.5+00:00"}
        | {"model_name": "net", "model_version": 2, "snapshot_id": "s"},
    )
    write_run_record(
        tmp_path,
        OLD_RUN,
        {"flow": "train", "written_at": "2024-06-01T09:00:00.5+00:00"}
        | {"model_name": "net", "version": 1, "snapshot_id": "s"},
    )
    metrics_path = run_folder(tmp_path, NEW_RUN) / "metrics.parquet"
    write_table(_metrics(NEW_RUN, 0.8125), Metrics, metrics_path)
    return tmp_path, snapshot


# --- listings -------------------------------------------------------------------------


def test_list_datasets(store):
    root, snapshot = store
    assert list_datasets(root) == [
        {
            "dataset": "toy",
            "snapshot": snapshot.snapshot_id,
            "height": 4,
            "width": 4,
            "channels": 3,
            "classes": 3,
            "train": 12,
            "validation": 3,
            "test": 6,
        }
    ]


def test_list_models(store):
    root, snapshot = store
    rows = list_models(root)
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", row.pop("registered_at"))
    common = {"model": "net", "architecture": "lenet", "snapshot": snapshot.snapshot_id}
    assert rows == [
        {**common, "version": 1, "alias": "champion", "test accuracy": 0.75},
        {**common, "version": 2, "alias": None, "test accuracy": 0.5},
    ]


def test_list_runs_oldest_first_with_test_accuracy(store):
    root, _ = store
    assert list_runs(root) == [
        {
            "run": OLD_RUN,
            "flow": "train",
            "written_at": "2024-06-01T09:00:00",
            "model": "net",
            "version": 1,
            "snapshot": "s",
            "test accuracy": None,
        },
        {
            "run": NEW_RUN,
            "flow": "evaluate",
            "written_at": "2024-06-02T10:00:00",
            "model": "net",
            "version": 2,
            "snapshot": "s",
            "test accuracy": "0.8125",
        },
    ]


@pytest.mark.parametrize("listing", [list_datasets, list_models, list_runs])
def test_listings_of_an_empty_store_are_empty(tmp_path, listing):
    assert listing(tmp_path / "nothing-here") == []


# --- locating tables ------------------------------------------------------------------


def test_locate_table_by_absolute_path(store):
    root, snapshot = store
    path = snapshot.path / "train.parquet"
    assert locate_table(root, str(path)) == path


def test_locate_table_without_parquet_suffix(store):
    root, snapshot = store
    assert locate_table(root, str(snapshot.path / "profile")) == (
        snapshot.path / "profile.parquet"
    )


def test_locate_table_relative_to_root(store):
    root, snapshot = store
    target = f"datasets/toy/{snapshot.snapshot_id}/test"
    assert locate_table(root, target) == snapshot.path / "test.parquet"


@pytest.mark.parametrize(
    "target",
    [f"runs/{NEW_RUN}/metrics", f"runs/{NEW_RUN}/metrics.parquet", "runs/9f8e/metrics"],
    ids=["full_id", "full_id_with_suffix", "id_prefix"],
)
def test_locate_run_table(store, target):
    root, _ = store
    assert locate_table(root, target) == root / "runs" / NEW_RUN / "metrics.parquet"


@pytest.mark.parametrize(
    "target",
    ["runs/ffff/metrics", "runs/9f8e/confusion", "nowhere/metrics", "runs/metrics"],
    ids=["unknown_run", "missing_table", "unknown_path", "run_id_missing"],
)
def test_locate_unknown_table_is_not_found(store, target):
    root, _ = store
    expected = f"no table {target!r} (looked under {root})"
    with pytest.raises(NotFoundError, match=re.escape(expected)):
        locate_table(root, target)


# --- showing tables -------------------------------------------------------------------


def test_show_split_table_replaces_pixels_by_a_short_text(store):
    root, snapshot = store
    name, frame, path = show_table(root, f"datasets/toy/{snapshot.snapshot_id}/train")
    assert name == "SnapshotSplit"
    assert path == snapshot.path / "train.parquet"
    assert frame["image"].tolist() == ["<48 uint8>"] * 12
    assert frame["index"].tolist() == list(range(12))


def test_show_metrics_table(store):
    root, _ = store
    name, frame, path = show_table(root, "runs/9f8e/metrics")
    assert name == "Metrics"
    assert path == root / "runs" / NEW_RUN / "metrics.parquet"
    assert frame["value"].tolist() == [0.1, 0.2, 0.8125]
    assert frame["split"].tolist() == ["validation", "test", "test"]


def test_show_alias_events_table(store):
    root, _ = store
    name, frame, _ = show_table(root, "models/net/alias_events")
    assert name == "AliasEvents"
    assert frame["version"].tolist() == [1]
