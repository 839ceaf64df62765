"""What the artifact store holds, for ``vigil artifacts``."""

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from tasks import registry
from tasks.errors import NotFoundError
from tasks.runs import find_run, read_run_record
from tasks.schemas import Metrics
from tasks.snapshots import RECORD as SNAPSHOT_RECORD
from tasks.snapshots import Snapshot
from tasks.store import read_arrow, read_table, schema_for


def list_datasets(root: Path) -> list[dict[str, Any]]:
    """One row per stored snapshot."""
    rows = []
    for record in sorted(root.glob(f"datasets/*/*/{SNAPSHOT_RECORD}")):
        snapshot = Snapshot.from_record(record.parent)
        rows.append(
            {
                "dataset": snapshot.name,
                "snapshot": snapshot.snapshot_id,
                "height": snapshot.height,
                "width": snapshot.width,
                "channels": snapshot.channels,
                "classes": len(snapshot.class_names),
                **{split: n for split, n in snapshot.counts.items()},
            }
        )
    return rows


def list_runs(root: Path) -> list[dict[str, Any]]:
    """One row per recorded flow run, oldest first."""
    rows = []
    for record_path in root.glob("runs/*/run.json"):
        record = read_run_record(record_path.parent)
        rows.append(
            {
                "run": record["run_id"],
                "flow": record.get("flow"),
                "written_at": record.get("written_at", "")[:19],
                "model": record.get("model_name"),
                "version": record.get("version", record.get("model_version")),
                "snapshot": record.get("snapshot_id"),
                "test accuracy": _test_accuracy(record_path.parent),
            }
        )
    return sorted(rows, key=lambda row: row["written_at"])


def _test_accuracy(folder: Path) -> str | None:
    path = folder / "metrics.parquet"
    if not path.is_file():
        return None
    metrics = read_table(path, Metrics)
    match = metrics[
        (metrics["split"] == "test")
        & (metrics["metric"] == "accuracy")
        & metrics["average"].isna()
    ]
    return None if match.empty else f"{match['value'].iloc[0]:.4f}"


def list_models(root: Path) -> list[dict[str, Any]]:
    """One row per registered model version."""
    rows = []
    for name in registry.model_names(root):
        by_version = {v: a for a, v in registry.aliases(root, name).items()}
        for version in registry.versions(root, name):
            card = registry.resolve(root, name, version).card
            rows.append(
                {
                    "model": name,
                    "version": version,
                    "alias": by_version.get(version),
                    "architecture": card.get("architecture"),
                    "snapshot": card.get("snapshot_id"),
                    "test accuracy": card.get("metrics", {}).get("test_accuracy"),
                    "registered_at": str(card.get("registered_at", ""))[:19],
                }
            )
    return rows


def locate_table(root: Path, target: str) -> Path:
    """Resolve a table named by path, or relative to the root (runs/<id>/x)."""
    candidates = [Path(target), root / target]
    parts = Path(target).parts
    if len(parts) == 3 and parts[0] == "runs":
        # runs/<id-prefix>/<table>: let a run id prefix stand for the run.
        with contextlib.suppress(NotFoundError):
            candidates.append(find_run(root, parts[1]) / parts[2])
    for candidate in candidates:
        for path in (candidate, candidate.with_name(candidate.name + ".parquet")):
            if path.is_file():
                return path
    raise NotFoundError(
        f"no table {target!r} (looked under {root}); expected a Parquet path "
        "or runs/<run-id>/<table>, e.g. runs/<run-id>/metrics"
    )


def show_table(root: Path, target: str) -> tuple[str, pd.DataFrame, Path]:
    """Read and validate one table; return its schema name, frame and path."""
    path = locate_table(root, target)
    schema = schema_for(path, read_arrow(path))
    frame = read_table(path, schema)
    if "image" in frame:
        # Pixel arrays print as their length, not as thousands of numbers.
        frame = frame.assign(
            image=frame["image"].map(lambda pixels: f"<{len(pixels)} uint8>")
        )
    return schema.Config.name, frame, path
