"""The nightly re-evaluation of the model in service."""

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed

from tasks.evaluation import evaluate_model, publish_metrics
from tasks.ingest import ingest_snapshot
from tasks.monitoring import DEFAULT_THRESHOLDS, check_thresholds
from tasks.reevaluation import compare_with_baseline, record_history, source_for_model
from tasks.registration import record_run, resolve_model
from tasks.runs import new_run_id
from tasks.sources import SourceSpec
from tasks.store import resolve_root

DEFAULT_MODEL = "digits-lenet"


@flow(name="reevaluate")
def reevaluate(
    model_name: str = DEFAULT_MODEL,
    version: str | int = "champion",
    source: str | None = None,
    data: str | None = None,
    extra_sets: dict[str, dict[str, str]] | None = None,
    thresholds: dict[str, float] | None = None,
    artifact_root: str | None = None,
) -> Any:
    """Re-evaluate a registered model on fresh data; fail when it degraded.

    ``source``/``data`` default to the source the model's snapshot came from.
    ``extra_sets`` names more evaluation sets, e.g.
    ``{"shifted": {"source": "imagefolder", "data": "/data/shifted"}}``; their
    figures go to the history but only the main source is compared with the
    baseline.
    """
    root = str(resolve_root(artifact_root))
    run_id = new_run_id(flow_run.get_id())
    limits = check_thresholds(thresholds or DEFAULT_THRESHOLDS)

    # 1. Resolve the model by alias or version.
    model = resolve_model(root, model_name, str(version), None)

    # 2. Re-ingest its source; content addressing makes this free if unchanged.
    source = source_for_model(root, model["snapshot_id"], source, data)
    snapshot = ingest_snapshot(root, source["spec"], source["validation_fraction"])

    # 3. Evaluate on the newest snapshot, then on each extra set.
    arguments = (model["checkpoint"], model["model_name"], model["model_version"])
    metrics = _evaluate(root, run_id, snapshot["snapshot_id"], "clean", *arguments)
    for environment, spec in (extra_sets or {}).items():
        path = Path(spec["data"]) if spec.get("data") else None
        extra = ingest_snapshot(root, SourceSpec(spec["source"], path))
        _evaluate(root, run_id, extra["snapshot_id"], environment, *arguments)

    # 4. Append every figure to the metric history.
    history = record_history(root, metrics)

    # 5. Compare with the baseline; publish the comparison and any alarm.
    verdict = compare_with_baseline(metrics, model, model["baseline"], limits)
    publish_metrics(metrics, model["model_name"])

    # 6. Record the run, and fail it loudly when the model degraded.
    outputs = {**model, "snapshot_id": snapshot["snapshot_id"], "history": history}
    record_run(root, run_id, {"flow": "reevaluate", **outputs, **verdict})
    if verdict["degraded"]:
        return Failed(message=verdict["message"])
    return {"run_id": run_id, **outputs, **verdict}


def _evaluate(
    root: str,
    run_id: str,
    snapshot_id: str,
    environment: str,
    checkpoint: str,
    model_name: str,
    model_version: int,
) -> str:
    return evaluate_model(
        root,
        run_id,
        checkpoint,
        snapshot_id,
        model_name,
        model_version,
        ("test",),
        environment,
    )
