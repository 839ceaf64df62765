"""Prefect task: turn a data source into a stored snapshot."""

from dataclasses import asdict
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.logs import run_logger
from tasks.snapshots import write_snapshot
from tasks.sources import SourceSpec, load_source


@task(name="ingest-snapshot", cache_policy=NO_CACHE)
def ingest_snapshot(
    root: str, spec: SourceSpec, validation_fraction: float = 0.1
) -> dict[str, str]:
    """Decode a source and store it as a snapshot; return its id and dataset."""
    logger = run_logger()
    decoded = load_source(spec)
    source = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()}
    snapshot, created = write_snapshot(
        Path(root), decoded, validation_fraction, spec.seed, source
    )
    state = "stored" if created else "unchanged, already stored"
    logger.info(
        "snapshot %s of %s: %s (%s)",
        snapshot.snapshot_id,
        snapshot.name,
        ", ".join(f"{split} {n}" for split, n in snapshot.counts.items()),
        state,
    )
    return {"snapshot_id": snapshot.snapshot_id, "dataset": snapshot.name}
