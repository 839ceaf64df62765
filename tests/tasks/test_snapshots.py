"""Tests for content-addressed dataset snapshots (tasks/snapshots.py)."""

import dataclasses
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks.snapshots
from model.splits import stratified_split
from tasks.errors import DatasetError, NotFoundError
from tasks.snapshots import find_snapshot, load_split, write_snapshot
from tasks.sources import DecodedSource
from tasks.store import read_json, read_table, table_context

CLASS_NAMES = ["cat", "dog", "eel"]
TRAIN_PER_CLASS = (10, 6, 4)
TEST_PER_CLASS = (3, 3, 3)
FRACTION = 0.3
SEED = 0
# round(0.3 * n) for n = 10, 6, 4, worked out by hand.
VALIDATION_PER_CLASS = [3, 2, 1]
SOURCE = {"source": "synthetic"}


def _split(per_class: tuple[int, ...], shape: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(per_class)), per_class))
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    return images, labels.astype(np.int64)


def _decoded(shape: tuple[int, ...] = (4, 4, 3), name: str = "toy") -> DecodedSource:
    return DecodedSource(
        name=name,
        class_names=list(CLASS_NAMES),
        splits={
            "train": _split(TRAIN_PER_CLASS, shape, seed=1),
            "test": _split(TEST_PER_CLASS, shape, seed=2),
        },
    )


def _write(root: Path, decoded: DecodedSource, fraction=FRACTION, seed=SEED):
    return write_snapshot(root, decoded, fraction, seed, SOURCE)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its modification time and size."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.stat()
            found[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return found


def _hidden_entries(root: Path) -> list[str]:
    return [name for name in _files(root) if Path(name).name.startswith(".")]


def _carved(decoded: DecodedSource, fraction=FRACTION, seed=SEED):
    """Train and validation as the independent call to stratified_split makes them."""
    images, labels = decoded.splits["train"]
    kept, held = stratified_split(torch.from_numpy(labels), fraction, seed)
    return {
        "train": (images[kept.numpy()], labels[kept.numpy()]),
        "validation": (images[held.numpy()], labels[held.numpy()]),
        "test": decoded.splits["test"],
    }


@pytest.fixture
def stored(tmp_path):
    decoded = _decoded()
    snapshot, created = _write(tmp_path, decoded)
    assert created
    return tmp_path, decoded, snapshot


# --- content addressing ---------------------------------------------------------------


def test_same_data_gives_same_id_in_any_root(tmp_path):
    first, _ = _write(tmp_path / "a", _decoded())
    second, _ = _write(tmp_path / "b", _decoded())
    assert first.snapshot_id == second.snapshot_id
    assert re.fullmatch(r"[0-9a-f]{16}", first.snapshot_id)
    assert first.path == tmp_path / "a" / "datasets" / "toy" / first.snapshot_id


def test_writing_same_data_again_creates_nothing_and_changes_nothing(stored):
    root, decoded, snapshot = stored
    before = _files(root)
    again, created = _write(root, decoded)
    assert not created
    assert again == snapshot
    assert _files(root) == before


def _replace_split(decoded, split, images, labels):
    return dataclasses.replace(
        decoded, splits={**decoded.splits, split: (images, labels)}
    )


def _flip_pixel(split, where):
    def change(decoded):
        images, labels = decoded.splits[split]
        images = images.copy()
        images[where] ^= 1
        return _replace_split(decoded, split, images, labels), {}

    return change


def _next_label(decoded):
    images, labels = decoded.splits["test"]
    labels = labels.copy()
    labels[0] = (labels[0] + 1) % len(CLASS_NAMES)
    return _replace_split(decoded, "test", images, labels), {}


def _rename_class(decoded):
    return dataclasses.replace(decoded, class_names=["cat", "dog", "emu"]), {}


CHANGES = {
    "train_pixel": _flip_pixel("train", (5, 0, 0, 0)),
    "test_pixel": _flip_pixel("test", (-1, -1, -1, -1)),
    "test_label": _next_label,
    "class_name": _rename_class,
    "validation_fraction": lambda d: (d, {"fraction": 0.4}),
    "seed": lambda d: (d, {"seed": 1}),
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_any_change_of_content_or_carving_gives_a_new_id(tmp_path, change):
    original, _ = _write(tmp_path, _decoded())
    changed_source, options = change(_decoded())
    changed, created = _write(tmp_path, changed_source, **options)
    assert created
    assert changed.snapshot_id != original.snapshot_id
    assert sorted(os.listdir(tmp_path / "datasets" / "toy")) == sorted(
        [original.snapshot_id, changed.snapshot_id]
    )


# --- the splits -----------------------------------------------------------------------


def test_validation_is_carved_stratified(stored):
    _, _, snapshot = stored
    _, validation_labels = load_split(snapshot, "validation")
    _, train_labels = load_split(snapshot, "train")
    validation_counts = np.bincount(validation_labels, minlength=3).tolist()
    train_counts = np.bincount(train_labels, minlength=3).tolist()
    assert validation_counts == VALIDATION_PER_CLASS
    assert train_counts == [
        n - v for n, v in zip(TRAIN_PER_CLASS, VALIDATION_PER_CLASS, strict=True)
    ]
    assert snapshot.counts == {
        "train": sum(TRAIN_PER_CLASS) - sum(VALIDATION_PER_CLASS),
        "validation": sum(VALIDATION_PER_CLASS),
        "test": sum(TEST_PER_CLASS),
    }


def test_train_and_validation_together_are_the_original_train(stored):
    _, decoded, snapshot = stored

    def pairs(images, labels):
        return Counter(zip((i.tobytes() for i in images), labels.tolist(), strict=True))

    stored_pairs = pairs(*load_split(snapshot, "train")) + pairs(
        *load_split(snapshot, "validation")
    )
    assert stored_pairs == pairs(*decoded.splits["train"])


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_load_split_returns_exactly_the_carved_data(stored, split):
    _, decoded, snapshot = stored
    expected_images, expected_labels = _carved(decoded)[split]
    images, labels = load_split(snapshot, split)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert images.shape == (len(expected_labels), 4, 4, 3)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_single_channel_images_round_trip(tmp_path):
    decoded = _decoded(shape=(8, 8, 1))
    snapshot, _ = _write(tmp_path, decoded)
    images, labels = load_split(snapshot, "test")
    assert (snapshot.height, snapshot.width, snapshot.channels) == (8, 8, 1)
    np.testing.assert_array_equal(images, decoded.splits["test"][0])
    np.testing.assert_array_equal(labels, decoded.splits["test"][1])


def test_unknown_split_is_refused(stored):
    _, _, snapshot = stored
    expected = "unknown split 'valid'; expected one of: train, validation, test"
    with pytest.raises(DatasetError, match=re.escape(expected)):
        load_split(snapshot, "valid")


def test_split_that_does_not_match_the_recorded_shape_is_refused(stored):
    _, _, snapshot = stored
    wrong = dataclasses.replace(snapshot, height=5)
    with pytest.raises(DatasetError, match=r"holds 432 pixels; expected images"):
        load_split(wrong, "test")


# --- profile and record ---------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_profile_counts_classes_per_split(stored, split):
    _, decoded, snapshot = stored
    _, labels = _carved(decoded)[split]
    profile = read_table(snapshot.path / "profile.parquet")
    rows = profile[(profile["split"] == split) & (profile["statistic"] == "count")]
    assert rows["class_index"].tolist() == [0, 1, 2]
    assert rows["class_name"].tolist() == CLASS_NAMES
    assert rows["value"].tolist() == np.bincount(labels, minlength=3).tolist()
    assert rows["channel"].isna().all()


@pytest.mark.parametrize("statistic", ["mean", "std", "min", "max"])
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_profile_channel_statistics_match_numpy(stored, split, statistic):
    _, decoded, snapshot = stored
    images, _ = _carved(decoded)[split]
    pixels = images.reshape(-1, 3).astype(np.float64)
    expected = {
        "mean": pixels.mean(axis=0),
        "std": pixels.std(axis=0),
        "min": pixels.min(axis=0),
        "max": pixels.max(axis=0),
    }[statistic]
    profile = read_table(snapshot.path / "profile.parquet")
    rows = profile[(profile["split"] == split) & (profile["statistic"] == statistic)]
    assert rows["channel"].tolist() == [0, 1, 2]
    assert rows["class_index"].isna().all()
    np.testing.assert_allclose(rows["value"].to_numpy(), expected, rtol=1e-9)


def test_profile_has_one_row_per_class_and_statistic_channel(stored):
    _, _, snapshot = stored
    profile = read_table(snapshot.path / "profile.parquet")
    # Per split: 3 class counts + 4 statistics x 3 channels.
    assert profile.groupby("split").size().to_dict() == {
        "test": 15,
        "train": 15,
        "validation": 15,
    }


def test_record_and_table_context_describe_the_snapshot(stored):
    _, _, snapshot = stored
    record = read_json(snapshot.path / "snapshot.json")
    assert record["snapshot_id"] == snapshot.snapshot_id
    assert record["name"] == "toy"
    assert record["class_names"] == CLASS_NAMES
    assert (record["height"], record["width"], record["channels"]) == (4, 4, 3)
    assert record["validation_fraction"] == FRACTION
    assert record["seed"] == SEED
    assert record["source"] == SOURCE
    context = table_context(snapshot.path / "train.parquet")
    assert context == {"snapshot_id": snapshot.snapshot_id, "source": SOURCE}
    assert sorted(os.listdir(snapshot.path)) == [
        "profile.parquet",
        "snapshot.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]


# --- refused input and leftovers ------------------------------------------------------


def _with_split(split, images, labels):
    return _replace_split(_decoded(), split, images, labels)


EMPTY = np.zeros((0, 4, 4, 3), dtype=np.uint8), np.zeros(0, dtype=np.int64)
ONE_PER_CLASS = np.zeros((3, 4, 4, 3), dtype=np.uint8), np.arange(3)

EMPTY_SPLITS = {
    "empty_train": (("train", *EMPTY), "train"),
    "empty_test": (("test", *EMPTY), "test"),
    "nothing_left_for_validation": (("train", *ONE_PER_CLASS), "validation"),
}


@pytest.mark.parametrize(
    ("replacement", "empty"), list(EMPTY_SPLITS.values()), ids=list(EMPTY_SPLITS)
)
def test_empty_split_is_refused_and_writes_nothing(tmp_path, replacement, empty):
    with pytest.raises(DatasetError, match=f"the {empty} split is empty"):
        _write(tmp_path, _with_split(*replacement))
    assert _files(tmp_path) == {}


def _labels_replaced(split, index, value):
    images, labels = _decoded().splits[split]
    labels = labels.copy()
    labels[index] = value
    return _with_split(split, images, labels)


BAD_LABELS = {
    "negative_train_label": (("train", 4, -1), r"train split has labels from -1 to 2"),
    "test_label_past_last_class": (
        ("test", 0, 3),
        r"test split has labels from 0 to 3",
    ),
}


@pytest.mark.parametrize(
    ("replacement", "message"), list(BAD_LABELS.values()), ids=list(BAD_LABELS)
)
def test_labels_outside_class_list_are_refused(tmp_path, replacement, message):
    with pytest.raises(DatasetError, match=message + r"; expected labels in \[0, 3\)"):
        _write(tmp_path, _labels_replaced(*replacement))
    assert _files(tmp_path) == {}


def test_success_leaves_no_staging_folder(stored):
    root, _, snapshot = stored
    assert os.listdir(snapshot.path.parent) == [snapshot.snapshot_id]
    assert _hidden_entries(root) == []


@pytest.mark.parametrize("failing", ["write_json", "profile_frame"])
def test_failure_while_writing_leaves_no_staging_folder(tmp_path, monkeypatch, failing):
    def fail(*args, **kwargs):
        raise OSError("no space left")

    monkeypatch.setattr(tasks.snapshots, failing, fail)
    with pytest.raises(OSError, match="no space left"):
        _write(tmp_path, _decoded())
    assert os.listdir(tmp_path / "datasets" / "toy") == []
    assert _hidden_entries(tmp_path) == []


def test_losing_the_race_to_an_identical_snapshot_is_harmless(tmp_path, monkeypatch):
    real_rename = os.rename

    def rival_first(source, destination):
        # Another ingestion of the same data finishes just before this one.
        shutil.copytree(source, destination)
        real_rename(source, destination)

    monkeypatch.setattr(tasks.snapshots.os, "rename", rival_first)
    snapshot, _ = _write(tmp_path, _decoded())
    monkeypatch.undo()
    assert os.listdir(tmp_path / "datasets" / "toy") == [snapshot.snapshot_id]
    images, _ = load_split(snapshot, "test")
    np.testing.assert_array_equal(images, _decoded().splits["test"][0])


# --- finding snapshots ----------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 6, 1], ids=["full_id", "prefix6", "prefix1"])
def test_find_snapshot_by_id_or_prefix(stored, length):
    root, _, snapshot = stored
    assert find_snapshot(root, snapshot.snapshot_id[:length]) == snapshot


def test_find_snapshot_unknown_id(stored):
    root, _, _ = stored
    with pytest.raises(NotFoundError, match="no snapshot 'nothere' under"):
        find_snapshot(root, "nothere")


def test_find_snapshot_ambiguous_prefix(stored):
    root, _, snapshot = stored
    prefix = snapshot.snapshot_id[:4]
    twin = prefix + ("0" * 12 if snapshot.snapshot_id[4:] != "0" * 12 else "1" * 12)
    shutil.copytree(snapshot.path, snapshot.path.parent / twin)
    with pytest.raises(NotFoundError, match=f"snapshot id '{prefix}' is ambiguous"):
        find_snapshot(root, prefix)


@pytest.mark.parametrize("reference", ["", "*"], ids=["empty", "glob_star"])
def test_find_snapshot_refuses_ids_that_are_not_a_prefix(stored, reference):
    root, _, _ = stored
    with pytest.raises(NotFoundError, match="no snapshot"):
        find_snapshot(root, reference)
