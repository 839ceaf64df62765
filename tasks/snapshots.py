"""Content-addressed dataset snapshots in the artifact store.

A snapshot is a folder ``datasets/<name>/<snapshot-id>/`` holding one Parquet
table per split (train, validation, test), a profile table and a
``snapshot.json`` record. The id is a hash of the split contents and class
names, so the same data always gives the same id and ingesting it again
writes nothing.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import torch

from model.splits import stratified_split
from model.statistics import channel_statistics
from tasks.errors import DatasetError, NotFoundError
from tasks.schemas import SPLITS, DatasetProfile, SnapshotSplit
from tasks.sources import DecodedSource
from tasks.store import (
    read_json,
    read_table,
    staging_folder,
    write_json,
    write_table,
)

ID_LENGTH = 16
RECORD = "snapshot.json"

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, H, W, C), labels (N,)


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot, as described by its record."""

    snapshot_id: str
    name: str
    path: Path
    class_names: list[str]
    height: int
    width: int
    channels: int
    counts: dict[str, int]
    source: dict[str, Any]
    validation_fraction: float

    @classmethod
    def from_record(cls, path: Path) -> "Snapshot":
        record = read_json(path / RECORD)
        return cls(
            snapshot_id=record["snapshot_id"],
            name=record["name"],
            path=path,
            class_names=record["class_names"],
            height=record["height"],
            width=record["width"],
            channels=record["channels"],
            counts=record["counts"],
            source=record["source"],
            validation_fraction=record["validation_fraction"],
        )


def carve_validation(decoded: DecodedSource, fraction: float, seed: int) -> dict:
    """Train, validation and test splits, validation carved from train."""
    images, labels = decoded.splits["train"]
    kept, held_out = stratified_split(torch.from_numpy(labels), fraction, seed)
    return {
        "train": (images[kept.numpy()], labels[kept.numpy()]),
        "validation": (images[held_out.numpy()], labels[held_out.numpy()]),
        "test": decoded.splits["test"],
    }


def content_id(splits: dict[str, Split], class_names: list[str]) -> str:
    """A hash of the class names, shapes, labels and pixels of every split."""
    digest = hashlib.sha256(json.dumps(class_names).encode())
    for split in SPLITS:
        images, labels = splits[split]
        digest.update(f"{split}:{images.shape}".encode())
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:ID_LENGTH]


def split_frame(images: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """One row per image, pixels flattened into a fixed-size uint8 array."""
    pixels_per_image = int(np.prod(images.shape[1:]))
    flat = pyarrow.array(np.ascontiguousarray(images).reshape(-1))
    arrays = pyarrow.FixedSizeListArray.from_arrays(flat, pixels_per_image)
    return pd.DataFrame(
        {
            "index": np.arange(len(labels), dtype=np.int64),
            "label": labels.astype(np.int64),
            "image": pd.Series(arrays, dtype=pd.ArrowDtype(arrays.type)),
        }
    )


def profile_frame(splits: dict[str, Split], class_names: list[str]) -> pd.DataFrame:
    """Per split: a count per class and per-channel pixel statistics."""
    rows: list[dict[str, Any]] = []
    for split, (images, labels) in splits.items():
        counts = np.bincount(labels, minlength=len(class_names))
        for class_index, count in enumerate(counts):
            rows.append(
                {
                    "split": split,
                    "statistic": "count",
                    "class_index": class_index,
                    "class_name": class_names[class_index],
                    "channel": None,
                    "value": float(count),
                }
            )
        statistics = channel_statistics(torch.from_numpy(images))
        for statistic, values in statistics.items():
            for channel, value in enumerate(values.tolist()):
                rows.append(
                    {
                        "split": split,
                        "statistic": statistic,
                        "class_index": None,
                        "class_name": None,
                        "channel": channel,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


def check_splits(splits: dict[str, Split], class_names: list[str]) -> None:
    """Refuse empty splits and labels outside the class list."""
    for split, (_, labels) in splits.items():
        if len(labels) == 0:
            raise DatasetError(
                f"the {split} split is empty; expected at least one image per split "
                "(use more data or a smaller --test-fraction/--validation-fraction)"
            )
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DatasetError(
                f"the {split} split has labels from {labels.min()} to {labels.max()}; "
                f"expected labels in [0, {len(class_names)})"
            )


def write_snapshot(
    root: Path,
    decoded: DecodedSource,
    validation_fraction: float,
    seed: int,
    source: dict[str, Any],
) -> tuple[Snapshot, bool]:
    """Store ``decoded`` as a snapshot; return it and whether it was new."""
    if not 0.0 < validation_fraction < 1.0:
        raise DatasetError(
            f"validation_fraction {validation_fraction} is out of range; "
            "expected a fraction strictly between 0 and 1"
        )
    check_splits(decoded.splits, decoded.class_names)
    splits = carve_validation(decoded, validation_fraction, seed)
    check_splits(splits, decoded.class_names)
    snapshot_id = content_id(splits, decoded.class_names)
    parent = root / "datasets" / decoded.name
    final = parent / snapshot_id
    if (final / RECORD).is_file():
        return Snapshot.from_record(final), False

    # Build the whole folder aside, then rename it into place in one step.
    staging = staging_folder(parent, f".{snapshot_id}.")
    try:
        context = {"snapshot_id": snapshot_id, "source": source}
        for split, (images, labels) in splits.items():
            frame = split_frame(images, labels)
            write_table(frame, SnapshotSplit, staging / f"{split}.parquet", context)
        profile = profile_frame(splits, decoded.class_names)
        write_table(profile, DatasetProfile, staging / "profile.parquet", context)
        height, width, channels = splits["train"][0].shape[1:]
        write_json(
            {
                "snapshot_id": snapshot_id,
                "name": decoded.name,
                "class_names": decoded.class_names,
                "height": int(height),
                "width": int(width),
                "channels": int(channels),
                "counts": {split: len(labels) for split, (_, labels) in splits.items()},
                "validation_fraction": validation_fraction,
                "seed": seed,
                "source": source,
                "created_at": datetime.now(timezone.utc).isoformat(),
            },
            staging / RECORD,
        )
        try:
            os.rename(staging, final)
        except OSError:
            # Another ingestion of the same data got there first: same content.
            if not (final / RECORD).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Snapshot.from_record(final), True


def find_snapshot(root: Path, snapshot_id: str) -> Snapshot:
    """The snapshot whose id is or starts with ``snapshot_id``."""
    matches = sorted(
        path.parent
        for path in root.glob(f"datasets/*/*/{RECORD}")
        if snapshot_id and path.parent.name.startswith(snapshot_id)
    )
    if not matches:
        raise NotFoundError(
            f"no snapshot {snapshot_id!r} under {root / 'datasets'}; "
            "run `vigil ingest` or `vigil artifacts list` to see the snapshots"
        )
    if len({path.name for path in matches}) > 1:
        names = ", ".join(path.name for path in matches)
        raise NotFoundError(f"snapshot id {snapshot_id!r} is ambiguous: {names}")
    return Snapshot.from_record(matches[0])


def load_split(snapshot: Snapshot, split: str) -> Split:
    """Read one split back as (images uint8 (N, H, W, C), labels int64 (N,))."""
    if split not in SPLITS:
        choices = ", ".join(SPLITS)
        raise DatasetError(f"unknown split {split!r}; expected one of: {choices}")
    path = snapshot.path / f"{split}.parquet"
    frame = read_table(path, SnapshotSplit)
    pixels = pyarrow.array(frame["image"]).values.to_numpy(zero_copy_only=False)
    shape = (len(frame), snapshot.height, snapshot.width, snapshot.channels)
    if pixels.size != int(np.prod(shape)):
        raise DatasetError(
            f"table {path} holds {pixels.size} pixels; expected images of shape {shape}"
        )
    # A copy: Arrow's buffer is read-only and torch wants writable arrays.
    labels = np.array(frame["label"], dtype=np.int64)
    return pixels.reshape(shape).copy(), labels
