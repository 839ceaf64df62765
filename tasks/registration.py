"""Prefect tasks: register a run's model and record what a run produced."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from model.device import default_device
from tasks import registry
from tasks.errors import DatasetError, VigilError
from tasks.evaluation import check_compatible, evaluate_split
from tasks.logs import run_logger
from tasks.monitoring import FIGURE_DECIMALS, baseline_figures, card_figures
from tasks.runs import find_run, run_folder, write_run_record
from tasks.schemas import ConfusionMatrix, Metrics
from tasks.snapshots import find_snapshot
from tasks.store import read_table, table_context, write_table


def headline_figures(metrics_path: Path) -> dict[str, float | None]:
    """Flat headline figures for a model card, e.g. ``test_accuracy``."""
    return card_figures(read_table(metrics_path, Metrics))


def stamp_version(folder: Path, version: int) -> None:
    """Fill the model version into a run's evaluation tables."""
    for name, schema in (("metrics", Metrics), ("confusion", ConfusionMatrix)):
        path = folder / f"{name}.parquet"
        frame = read_table(path, schema).assign(model_version=version)
        context = {**table_context(path), "model_version": version}
        write_table(frame, schema, path, context)


def score_on(root: Path, snapshot_id: str) -> Callable[[registry.ModelVersion], float]:
    """Score a registered version on this snapshot's test split.

    A version tested on the same snapshot keeps its card's figure; another is
    evaluated here, so that champions are compared on the same images.
    """

    def score(version: registry.ModelVersion) -> float:
        if version.card["snapshot_id"] == snapshot_id:
            return registry.card_score(version)
        snapshot = find_snapshot(root, snapshot_id)
        checkpoint = registry.load_checkpoint(version.checkpoint_path)
        check_compatible(checkpoint, snapshot)
        network = registry.network_from_checkpoint(checkpoint).to(default_device())
        rows, _, _ = evaluate_split(network, snapshot, "test")
        (accuracy,) = [row["value"] for row in rows if row["metric"] == "accuracy"]
        return round(accuracy, FIGURE_DECIMALS)

    return score


def check_registrable(root: Path, model_name: str, snapshot_id: str) -> None:
    """Refuse to add a model for other classes or images to an existing name."""
    known = registry.versions(root, model_name)
    if not known:
        return
    latest = registry.resolve(root, model_name, known[-1])
    snapshot = find_snapshot(root, snapshot_id)
    try:
        check_compatible(registry.load_checkpoint(latest.checkpoint_path), snapshot)
    except DatasetError as error:
        raise DatasetError(
            f"model {model_name!r} cannot take this data: {error}; choose another "
            "--model-name"
        ) from None


@task(name="check-model-name", cache_policy=NO_CACHE)
def check_model_name_for(root: str, model_name: str, snapshot_id: str) -> str:
    """The model name, once it is valid and its versions fit the snapshot."""
    registry.check_model_name(model_name)
    check_registrable(Path(root), model_name, snapshot_id)
    return model_name


@task(name="register-model", cache_policy=NO_CACHE)
def register_model(root: str, run_id: str, model_name: str) -> dict[str, Any]:
    """Register the run's evaluated checkpoint; promote it when it is the best."""
    logger = run_logger()
    folder = run_folder(Path(root), run_id)
    checkpoint = registry.load_checkpoint(folder / "checkpoint.pt")
    card = {
        "architecture": checkpoint["architecture"],
        "snapshot_id": checkpoint["snapshot_id"],
        "dataset": checkpoint["dataset"],
        "class_names": checkpoint["class_names"],
        "input": checkpoint["input"],
        "hyperparameters": checkpoint["config"],
        "metrics": headline_figures(folder / "metrics.parquet"),
        "run_id": run_id,
    }
    registry.check_model_name(model_name)
    version = registry.register(Path(root), model_name, folder / "checkpoint.pt", card)
    stamp_version(folder, version.version)
    champion = registry.promote_if_better(
        Path(root), version, score_on(Path(root), checkpoint["snapshot_id"])
    )
    logger.info(
        "registered %s version %d%s",
        model_name,
        version.version,
        " as champion" if champion else " (champion unchanged)",
    )
    return {"model_name": model_name, "version": version.version, "champion": champion}


@task(name="record-run", cache_policy=NO_CACHE)
def record_run(root: str, run_id: str, record: dict[str, Any]) -> str:
    """Write the run's JSON record: flow, parameters and outputs."""
    return str(write_run_record(Path(root), run_id, record))


@task(name="resolve-model", cache_policy=NO_CACHE)
def resolve_model(
    root: str, model_name: str | None, version: str, run_id: str | None
) -> dict[str, Any]:
    """Find the checkpoint to evaluate: a registered version or a run's own."""
    if run_id is not None:
        folder = find_run(Path(root), run_id)
        checkpoint = registry.load_checkpoint(folder / "checkpoint.pt")
        name = model_name or f"{checkpoint['dataset']}-{checkpoint['architecture']}"
        return {
            "checkpoint": str(folder / "checkpoint.pt"),
            "model_name": name,
            "model_version": None,
            "snapshot_id": checkpoint["snapshot_id"],
            "baseline": None,
        }
    if model_name is None:
        known = ", ".join(registry.model_names(Path(root))) or "none registered yet"
        raise VigilError(
            f"name a model (--model) or a run (--run); known models: {known}"
        )
    found = registry.resolve(Path(root), model_name, version)
    return {
        "checkpoint": str(found.checkpoint_path),
        "model_name": found.name,
        "model_version": found.version,
        "snapshot_id": found.card["snapshot_id"],
        # The figures recorded at registration: what re-evaluations compare to.
        "baseline": baseline_figures(found.card["metrics"]),
    }
