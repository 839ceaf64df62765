"""The flows that ingest, train, evaluate and register models.

Flow bodies call tasks, one short comment per step; every step passes
references (snapshot ids, run ids, paths), never tensors.
"""

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from model.training import TrainConfig
from tasks.errors import VigilError
from tasks.evaluation import evaluate_model, publish_metrics
from tasks.ingest import ingest_snapshot
from tasks.registration import (
    check_model_name_for,
    record_run,
    register_model,
    resolve_model,
)
from tasks.registry import check_model_name, default_model_name
from tasks.runs import new_run_id
from tasks.sources import SourceSpec
from tasks.store import resolve_root
from tasks.training import train_model

DEFAULTS = TrainConfig()


def train_config(**values: Any) -> TrainConfig:
    """A validated training config; bad values become one-line user errors."""
    try:
        return TrainConfig(**values)
    except ValueError as error:
        raise VigilError(str(error)) from None


def source_spec(
    source: str, data: str | None, download: bool, test_fraction: float, seed: int
) -> SourceSpec:
    return SourceSpec(
        source, Path(data) if data else None, download, test_fraction, seed
    )


@flow(name="ingest")
def ingest(
    source: str = "digits",
    data: str | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
    artifact_root: str | None = None,
) -> str:
    """Store a data source as a content-addressed snapshot; return its id."""
    root = str(resolve_root(artifact_root))
    spec = source_spec(source, data, download, test_fraction, seed)
    return ingest_snapshot(root, spec, validation_fraction)["snapshot_id"]


@flow(name="train")
def train(
    snapshot_id: str,
    architecture: str = DEFAULTS.architecture,
    optimizer: str = DEFAULTS.optimizer,
    learning_rate: float = DEFAULTS.learning_rate,
    batch_size: int = DEFAULTS.batch_size,
    epochs: int = DEFAULTS.epochs,
    seed: int = DEFAULTS.seed,
    device: str | None = None,
    cpu_threads: int = DEFAULTS.cpu_threads,
    artifact_root: str | None = None,
) -> dict[str, str]:
    """Train a network on a snapshot; return the run id and checkpoint path."""
    root = str(resolve_root(artifact_root))
    run_id = new_run_id(flow_run.get_id())
    config = train_config(
        architecture=architecture,
        optimizer=optimizer,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        device=device,
        cpu_threads=cpu_threads,
    )

    # 1. Train; the checkpoint and history land in this run's folder.
    checkpoint = train_model(root, run_id, snapshot_id, config)

    # 2. Record the run.
    outputs = {"snapshot_id": snapshot_id, "checkpoint": checkpoint}
    record_run(root, run_id, {"flow": "train", **outputs})
    return {"run_id": run_id, **outputs}


@flow(name="evaluate")
def evaluate(
    model_name: str | None = None,
    version: str | int = "champion",
    run_id: str | None = None,
    snapshot_id: str | None = None,
    splits: tuple[str, ...] = ("test",),
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Evaluate a registered model (or a train run's checkpoint) on a snapshot."""
    root = str(resolve_root(artifact_root))
    this_run = new_run_id(flow_run.get_id())

    # 1. Find the checkpoint and, unless given, the snapshot it was trained on.
    target = resolve_model(root, model_name, str(version), run_id)
    snapshot_id = snapshot_id or target["snapshot_id"]

    # 2. Evaluate it.
    metrics = evaluate_model(
        root,
        this_run,
        target["checkpoint"],
        snapshot_id,
        target["model_name"],
        target["model_version"],
        splits,
    )

    # 3. Publish the headline figures and record the run.
    headline = publish_metrics(metrics, target["model_name"])
    outputs = {**target, "snapshot_id": snapshot_id, "metrics": metrics}
    record_run(root, this_run, {"flow": "evaluate", **outputs})
    return {"run_id": this_run, **outputs, "headline": headline}


@flow(name="pipeline")
def pipeline(
    source: str = "digits",
    data: str | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    architecture: str = DEFAULTS.architecture,
    optimizer: str = DEFAULTS.optimizer,
    learning_rate: float = DEFAULTS.learning_rate,
    batch_size: int = DEFAULTS.batch_size,
    epochs: int = DEFAULTS.epochs,
    seed: int = DEFAULTS.seed,
    device: str | None = None,
    cpu_threads: int = DEFAULTS.cpu_threads,
    model_name: str | None = None,
    artifact_root: str | None = None,
) -> dict[str, Any]:
    """Ingest, train, evaluate and register a model in one run."""
    root = str(resolve_root(artifact_root))
    run_id = new_run_id(flow_run.get_id())
    config = train_config(
        architecture=architecture,
        optimizer=optimizer,
        learning_rate=learning_rate,
        batch_size=batch_size,
        epochs=epochs,
        seed=seed,
        device=device,
        cpu_threads=cpu_threads,
    )
    if model_name is not None:
        check_model_name(model_name)

    # 1. Ingest the source as a snapshot (free when it is already stored).
    spec = source_spec(source, data, download, test_fraction, seed)
    snapshot = ingest_snapshot(root, spec, validation_fraction)
    name = check_model_name_for(
        root,
        model_name or default_model_name(snapshot["dataset"], architecture),
        snapshot["snapshot_id"],
    )

    # 2. Train on its train split, watching the validation split.
    checkpoint = train_model(root, run_id, snapshot["snapshot_id"], config)

    # 3. Evaluate on the validation and test splits.
    metrics = evaluate_model(
        root, run_id, checkpoint, snapshot["snapshot_id"], name, None
    )

    # 4. Register the model; it becomes champion when it is the best so far.
    registered = register_model(root, run_id, name)

    # 5. Publish the headline figures and record the run.
    headline = publish_metrics(metrics, name)
    outputs = {**snapshot, **registered, "checkpoint": checkpoint, "metrics": metrics}
    record_run(root, run_id, {"flow": "pipeline", **outputs})
    return {"run_id": run_id, "artifact_root": root, **outputs, "headline": headline}
