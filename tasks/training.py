"""Prefect task: train a network on a snapshot and save the run's checkpoint."""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from rich.progress import Progress

from model.networks import build_network
from model.statistics import channel_statistics
from model.training import (
    EpochStats,
    TrainConfig,
    TrainingDiverged,
    fit,
    seed_everything,
)
from tasks.errors import DatasetError, VigilError
from tasks.logs import run_logger
from tasks.registry import save_checkpoint
from tasks.runs import run_folder
from tasks.schemas import TrainingHistory
from tasks.snapshots import find_snapshot, load_split
from tasks.store import write_table

MEBIBYTE = 1024 * 1024


def epoch_line(stats: EpochStats, epochs: int) -> str:
    """The one fixed-format progress line logged per epoch."""
    return (
        f"epoch {stats.epoch:>3}/{epochs} | "
        f"train loss {stats.train_loss:.4f} acc {stats.train_accuracy:.4f} | "
        f"val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.4f} | "
        f"lr {stats.learning_rate:.2e} | {stats.seconds:.2f} s | "
        f"{stats.samples_per_second:,.0f} samples/s | "
        f"peak {stats.peak_memory_bytes / MEBIBYTE:,.0f} MiB"
    )


@contextmanager
def progress_bar(epochs: int) -> Iterator[Callable[[], None]]:
    """Yield a function that advances a terminal progress bar by one epoch."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(transient=True) as progress:
        bar = progress.add_task("training", total=epochs)
        yield lambda: progress.advance(bar)


@contextmanager
def cpu_threads(config: TrainConfig) -> Iterator[None]:
    """Use ``config.cpu_threads`` intra-op threads on the CPU, then restore."""
    before = torch.get_num_threads()
    if config.torch_device().type == "cpu":
        torch.set_num_threads(config.cpu_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@task(name="train-model", cache_policy=NO_CACHE)
def train_model(root: str, run_id: str, snapshot_id: str, config: TrainConfig) -> str:
    """Train ``config.architecture`` on a snapshot; return the checkpoint path."""
    logger = run_logger()
    snapshot = find_snapshot(Path(root), snapshot_id)
    train_images, train_labels = load_split(snapshot, "train")
    val_images, val_labels = load_split(snapshot, "validation")

    # The network normalises its own input with the training split's statistics.
    statistics = channel_statistics(torch.from_numpy(train_images))
    shape = {
        "channels": snapshot.channels,
        "height": snapshot.height,
        "width": snapshot.width,
        "num_classes": len(snapshot.class_names),
        "mean": (statistics["mean"] / 255).tolist(),
        "std": (statistics["std"].clamp(min=1e-3) / 255).tolist(),
    }
    seed_everything(config.seed)
    try:
        network = build_network(config.architecture, **shape)
    except ValueError as error:
        message = f"snapshot {snapshot.snapshot_id} does not fit {config.architecture}"
        raise DatasetError(f"{message}: {error}") from None
    logger.info(
        "training %s on %s (%d train, %d validation images) on %s",
        config.architecture,
        snapshot.snapshot_id,
        len(train_labels),
        len(val_labels),
        config.torch_device(),
    )

    with progress_bar(config.epochs) as advance, cpu_threads(config):

        def report(stats: EpochStats) -> None:
            logger.info(epoch_line(stats, config.epochs))
            advance()

        try:
            history = fit(
                network,
                torch.from_numpy(train_images),
                torch.from_numpy(train_labels),
                torch.from_numpy(val_images),
                torch.from_numpy(val_labels),
                config,
                on_epoch=report,
            )
        except TrainingDiverged as error:
            raise VigilError(str(error)) from None

    folder = run_folder(Path(root), run_id)
    context = {"run_id": run_id, "snapshot_id": snapshot_id, "config": asdict(config)}
    frame = pd.DataFrame([asdict(row) for row in history]).assign(run_id=run_id)
    write_table(frame, TrainingHistory, folder / "training_history.parquet", context)
    checkpoint = {
        "architecture": config.architecture,
        "input": shape,
        "state_dict": {k: v.cpu() for k, v in network.state_dict().items()},
        "config": asdict(config),
        "class_names": snapshot.class_names,
        "snapshot_id": snapshot.snapshot_id,
        "dataset": snapshot.name,
        "run_id": run_id,
    }
    return str(save_checkpoint(checkpoint, folder / "checkpoint.pt"))
