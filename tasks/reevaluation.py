"""Prefect tasks of the nightly re-evaluation: source, history, comparison."""

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from tasks.evaluation import artifact_key
from tasks.history import append_history
from tasks.logs import run_logger
from tasks.monitoring import (
    compare_to_baseline,
    comparison_markdown,
    current_figures,
    degradation_message,
)
from tasks.schemas import Metrics
from tasks.snapshots import find_snapshot
from tasks.sources import SourceSpec
from tasks.store import read_table

DEGRADED_EVENT = "vigil.model.degraded"


@task(name="source-for-model", cache_policy=NO_CACHE)
def source_for_model(
    root: str, snapshot_id: str, source: str | None, data: str | None
) -> dict[str, Any]:
    """The source to re-ingest: as recorded with the model's snapshot, or given."""
    record = find_snapshot(Path(root), snapshot_id)
    recorded = record.source
    spec = SourceSpec(
        source=source or recorded["source"],
        path=Path(data) if data else _recorded_path(recorded, source),
        download=False,
        test_fraction=recorded["test_fraction"],
        seed=recorded["seed"],
    )
    return {"spec": spec, "validation_fraction": record.validation_fraction}


def _recorded_path(recorded: dict[str, Any], source: str | None) -> Path | None:
    # A different source without --data has no path of its own to reuse.
    if source not in (None, recorded["source"]) or not recorded.get("path"):
        return None
    return Path(recorded["path"])


@task(name="append-history", cache_policy=NO_CACHE)
def record_history(root: str, metrics_path: str) -> str:
    """Append the run's metrics to the Hive-partitioned metric history."""
    metrics = read_table(Path(metrics_path), Metrics)
    path = append_history(Path(root), metrics, datetime.now(timezone.utc))
    run_logger().info("history: %d rows in %s", len(metrics), path)
    return str(path)


@task(name="compare-with-baseline", cache_policy=NO_CACHE)
def compare_with_baseline(
    metrics_path: str,
    model: dict[str, Any],
    baseline: dict[str, float | None],
    thresholds: dict[str, float],
    environment: str = "clean",
) -> dict[str, Any]:
    """Compare the test figures with the baseline; publish and signal the result."""
    logger = run_logger()
    metrics = read_table(Path(metrics_path), Metrics)
    current = current_figures(metrics, split="test", environment=environment)
    comparisons = compare_to_baseline(baseline, current, thresholds)
    name, version = model["model_name"], model["model_version"]
    degraded = [c for c in comparisons if c.degraded]
    create_markdown_artifact(
        key=artifact_key(name, "reevaluation"),
        markdown=comparison_markdown(comparisons, name, version),
        description=f"{name} version {version} against its baseline",
    )
    if not degraded:
        logger.info("%s version %s holds its baseline", name, version)
        return {"degraded": False, "message": "no degradation"}
    message = degradation_message(comparisons, name, version)
    emit_event(
        event=DEGRADED_EVENT,
        resource={
            "prefect.resource.id": f"vigil.model.{name}.{version}",
            "prefect.resource.name": name,
        },
        payload={
            "model_name": name,
            "model_version": version,
            "metrics": {
                c.metric: {
                    "baseline": c.baseline,
                    "value": c.value,
                    "threshold": c.threshold,
                }
                for c in degraded
            },
        },
    )
    logger.error(message)
    return {"degraded": True, "message": message}
