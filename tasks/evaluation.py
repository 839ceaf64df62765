"""Prefect tasks: evaluate a checkpoint on a snapshot and publish the figures."""

import re
import time
from pathlib import Path

import pandas as pd
import torch
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from model.metrics import classification_metrics, confusion_matrix, to_rows
from model.training import predict
from tasks.errors import DatasetError
from tasks.logs import run_logger
from tasks.monitoring import HEADLINE
from tasks.registry import load_checkpoint, network_from_checkpoint
from tasks.runs import run_folder
from tasks.schemas import ConfusionMatrix, Metrics
from tasks.snapshots import Snapshot, find_snapshot, load_split
from tasks.store import read_table, write_table


def evaluate_split(
    network: torch.nn.Module, snapshot: Snapshot, split: str
) -> tuple[list[dict], torch.Tensor, float]:
    """Metric rows and confusion matrix [C, C] of one split, and the seconds."""
    started = time.perf_counter()
    images, labels = load_split(snapshot, split)
    predictions, _ = predict(network, torch.from_numpy(images))
    targets = torch.from_numpy(labels).to(predictions.device)
    confusion = confusion_matrix(predictions, targets, len(snapshot.class_names))
    rows = to_rows(classification_metrics(confusion), snapshot.class_names)
    return rows, confusion.cpu(), time.perf_counter() - started


def confusion_rows(confusion: torch.Tensor, class_names: list[str]) -> list[dict]:
    """Long format: one row per (true class, predicted class) cell."""
    return [
        {
            "true_index": true,
            "true_class": class_names[true],
            "predicted_index": predicted,
            "predicted_class": class_names[predicted],
            "count": int(confusion[true, predicted]),
        }
        for true in range(len(class_names))
        for predicted in range(len(class_names))
    ]


def evaluation_line(split: str, rows: list[dict], seconds: float) -> str:
    """The one fixed-format line logged per evaluated split."""
    values = {(r["metric"], r["average"]): r for r in rows if r["class_index"] is None}
    accuracy = values[("accuracy", None)]
    macro_f1 = values[("f1", "macro")]["value"]
    return (
        f"evaluate {split:<16} | accuracy {accuracy['value']:.4f} "
        f"[{accuracy['lower']:.4f}, {accuracy['upper']:.4f}] | "
        f"macro f1 {macro_f1:.4f} | n {accuracy['count']} | {seconds:.2f} s"
    )


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(
    root: str,
    run_id: str,
    checkpoint_path: str,
    snapshot_id: str,
    model_name: str,
    model_version: int | None = None,
    splits: tuple[str, ...] = ("validation", "test"),
    environment: str = "clean",
) -> str:
    """Evaluate a checkpoint on snapshot splits; write metrics and confusion.

    Tables already in the run's folder keep their rows of other environments,
    so one run can evaluate several data sets (clean, shifted, ...).
    """
    logger = run_logger()
    snapshot = find_snapshot(Path(root), snapshot_id)
    checkpoint = load_checkpoint(Path(checkpoint_path))
    check_compatible(checkpoint, snapshot)
    network = network_from_checkpoint(checkpoint)
    network.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    provenance = {
        "run_id": run_id,
        "model_name": model_name,
        "model_version": model_version,
        "snapshot_id": snapshot.snapshot_id,
        "environment": environment,
    }

    metric_rows, cell_rows = [], []
    for split in splits:
        rows, confusion, seconds = evaluate_split(network, snapshot, split)
        logger.info(evaluation_line(f"{environment}/{split}", rows, seconds))
        metric_rows += [{**provenance, "split": split, **row} for row in rows]
        cells = confusion_rows(confusion, snapshot.class_names)
        cell_rows += [{**provenance, "split": split, **cell} for cell in cells]

    folder = run_folder(Path(root), run_id)
    context = {**provenance, "checkpoint": checkpoint_path}
    for rows, schema, name in (
        (cell_rows, ConfusionMatrix, "confusion"),
        (metric_rows, Metrics, "metrics"),
    ):
        path = folder / f"{name}.parquet"
        frame = pd.DataFrame(rows)
        if path.is_file():
            kept = read_table(path, schema)
            kept = kept[kept["environment"] != environment]
            frame = pd.concat([kept, frame], ignore_index=True)
        write_table(frame, schema, path, context)
    return str(folder / "metrics.parquet")


def check_compatible(checkpoint: dict, snapshot: Snapshot) -> None:
    """Refuse data whose classes or image shape are not the model's."""
    if list(checkpoint["class_names"]) != list(snapshot.class_names):
        raise DatasetError(
            f"snapshot {snapshot.snapshot_id} has classes {snapshot.class_names}; "
            f"expected the model's classes {checkpoint['class_names']}"
        )
    model = checkpoint["input"]
    expected = f"{model['height']}x{model['width']}x{model['channels']}"
    found = f"{snapshot.height}x{snapshot.width}x{snapshot.channels}"
    if found != expected:
        raise DatasetError(
            f"snapshot {snapshot.snapshot_id} has images of {found} (height x width "
            f"x channels); expected the model's {expected}"
        )


def headline_table(metrics: pd.DataFrame) -> list[dict]:
    """The headline figures of a metrics table, one row per split and figure."""
    overall = metrics[metrics["class_index"].isna()].assign(
        average=lambda frame: frame["average"].fillna("")
    )
    rows = []
    for (split, environment), group in overall.groupby(["split", "environment"]):
        indexed = group.set_index(["metric", "average"])
        for metric, average in HEADLINE:
            row = indexed.loc[(metric, average or "")]
            rows.append(
                {
                    "split": split,
                    "environment": environment,
                    "metric": f"{metric} ({average})" if average else metric,
                    "value": None if pd.isna(row["value"]) else round(row["value"], 4),
                    "n": int(row["count"]),
                }
            )
    return rows


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


@task(name="publish-metrics", cache_policy=NO_CACHE)
def publish_metrics(metrics_path: str, model_name: str) -> list[dict]:
    """Publish a run's headline figures as a Prefect table artifact."""
    metrics = read_table(Path(metrics_path), Metrics)
    table = headline_table(metrics)
    version = metrics["model_version"].dropna()
    label = f"version {int(version.iloc[0])}" if len(version) else "unregistered"
    create_table_artifact(
        key=artifact_key(model_name, "metrics"),
        table=table,
        description=f"Headline metrics of {model_name} ({label}): {metrics_path}",
    )
    return table
