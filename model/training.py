"""Seeded training and prediction on tensors held in memory on one device.

Training is bitwise repeatable on the CPU when the caller seeds before building
the network (``seed_everything(config.seed)`` then ``build_network``): ``fit``
itself draws its shuffles from its own generator seeded with ``config.seed``.
On CUDA, cuDNN may choose non-deterministic kernels, so runs are close but not
guaranteed identical.
"""

import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from model.device import default_device, peak_memory_bytes, reset_peak_memory
from model.networks import ARCHITECTURES

# Batch size for validation and prediction: no gradients, so memory allows more.
EVAL_BATCH_SIZE = 1024
DEVICE_TYPES = ("cpu", "cuda")
# torch.Generator.manual_seed takes a signed 64-bit integer.
MAX_SEED = 2**63 - 1


def _build_sgd(
    parameters: Iterator[nn.Parameter], config: "TrainConfig"
) -> torch.optim.Optimizer:
    """Build SGD with momentum, as in the PyTorch CIFAR-10 tutorial."""
    return torch.optim.SGD(
        parameters,
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _build_adam(
    parameters: Iterator[nn.Parameter], config: "TrainConfig"
) -> torch.optim.Optimizer:
    """Build Adam; ``config.momentum`` does not apply."""
    return torch.optim.Adam(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )


def _build_adamw(
    parameters: Iterator[nn.Parameter], config: "TrainConfig"
) -> torch.optim.Optimizer:
    """Build AdamW; ``config.momentum`` does not apply."""
    return torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )


OPTIMIZERS: dict[
    str, Callable[[Iterator[nn.Parameter], "TrainConfig"], torch.optim.Optimizer]
] = {"sgd": _build_sgd, "adam": _build_adam, "adamw": _build_adamw}


@dataclass
class TrainConfig:
    """How to train one network; the defaults suit LeNet on sklearn's digits."""

    architecture: str = "lenet"
    optimizer: str = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Measured on sklearn's digits: LeNet reaches 0.98-0.99 test accuracy over
    # seeds 0-9 with SGD 0.001 / 0.9, in about 7 s on one CPU thread.
    batch_size: int = 8
    epochs: int = 40
    seed: int = 0
    device: str | None = None
    # Intra-op threads on the CPU. LeNet-sized batches gain nothing from more,
    # and on a busy 2-core machine two threads contend and stall: see
    # benchmarks/train_threads.py for the measurement.
    cpu_threads: int = 1

    def __post_init__(self) -> None:
        """Reject unknown names and out-of-range numbers with a clear message."""
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_positive("learning_rate", self.learning_rate)
        _check_positive("batch_size", self.batch_size)
        _check_positive("epochs", self.epochs)
        _check_positive("cpu_threads", self.cpu_threads)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"expected momentum in [0, 1), got {self.momentum}")
        if self.weight_decay < 0.0:
            raise ValueError(
                f"expected a non-negative weight_decay, got {self.weight_decay}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"expected a seed in [0, 2**63 - 1], got {self.seed}")
        cores = os.cpu_count() or 1
        if self.cpu_threads > cores:
            raise ValueError(
                f"expected cpu_threads from 1 to {cores} (this machine's cores), "
                f"got {self.cpu_threads}"
            )
        if self.device is not None:
            _check_device(self.device)

    def torch_device(self) -> torch.device:
        """Return the configured device, or the default one when none is set."""
        return default_device() if self.device is None else torch.device(self.device)


def _check_device(name: str) -> None:
    """Raise ValueError unless ``name`` is a CPU or an available CUDA device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(
            f"unknown device {name!r}; expected one of: {', '.join(DEVICE_TYPES)} "
            "(or cuda:N)"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} is not available here; expected cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"device {name!r} does not exist; this machine has {count}")


def _check_choice(field: str, value: str, choices: Mapping[str, object]) -> None:
    """Raise ValueError when ``value`` is not one of the keys of ``choices``."""
    if value not in choices:
        expected = ", ".join(sorted(choices))
        raise ValueError(f"unknown {field} {value!r}; expected one of: {expected}")


def _check_positive(field: str, value: float) -> None:
    """Raise ValueError when ``value`` is not strictly positive and finite."""
    if not 0 < value < math.inf:
        raise ValueError(f"expected a positive {field}, got {value}")


class TrainingDiverged(ArithmeticError):
    """The loss stopped being a finite number."""


@dataclass
class EpochStats:
    """What one epoch of ``fit`` measured, as plain Python numbers.

    ``seconds`` covers training and validation; ``samples_per_second`` is the
    training throughput alone. ``train_loss`` and ``train_accuracy`` are averaged
    over the epoch's batches as the weights changed. ``peak_memory_bytes`` is as
    ``model.device.peak_memory_bytes`` reports it (the whole process on the CPU).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    seconds: float
    samples_per_second: float
    peak_memory_bytes: int


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and Python's ``random`` before building a network."""
    random.seed(seed)
    torch.manual_seed(seed)


def fit(
    network: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``network`` in place with cross-entropy; return one row per epoch.

    Images are uint8 [N, H, W, C] and labels integer class indices [N]. Both sets
    move to the training device once and batches are slices of them. The network
    does not get re-initialised: seed before building it for repeatable runs.
    It is left on the training device, in eval mode.
    """
    _check_samples("train", train_images, train_labels)
    _check_samples("validation", val_images, val_labels)
    device = config.torch_device()
    network.to(device)
    train_images, train_labels = _to_device(train_images, train_labels, device)
    val_images, val_labels = _to_device(val_images, val_labels, device)
    optimizer = OPTIMIZERS[config.optimizer](network.parameters(), config)
    # A generator of its own keeps the shuffles independent of any other torch use.
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(1, config.epochs + 1):
        stats = _run_epoch(
            epoch,
            network,
            optimizer,
            (train_images, train_labels),
            (val_images, val_labels),
            config.batch_size,
            generator,
        )
        if not math.isfinite(stats.train_loss):
            raise TrainingDiverged(
                f"training diverged: the train loss is {stats.train_loss} at epoch "
                f"{epoch}; expected a finite loss (try a lower learning rate)"
            )
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    network.eval()
    return history


def _check_samples(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError unless images are uint8 [N, H, W, C] with N >= 1 labels [N]."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected {name} images as uint8 (N, H, W, C), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"expected one {name} label per image, got {tuple(labels.shape)} labels "
            f"for {len(images)} images"
        )
    if len(images) == 0:
        raise ValueError(f"expected at least one {name} sample, got none")


def _to_device(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move images (kept uint8) and labels (as int64) to ``device``."""
    return images.to(device), labels.to(device=device, dtype=torch.int64)


def _run_epoch(
    epoch: int,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
) -> EpochStats:
    """Train for one epoch on (images, labels), validate, and time both."""
    train_images, train_labels = train
    device = train_images.device
    reset_peak_memory(device)
    start_seconds = time.perf_counter()
    train_loss, train_accuracy = _train_epoch(
        network, optimizer, train_images, train_labels, batch_size, generator
    )
    train_seconds = time.perf_counter() - start_seconds
    val_loss, val_accuracy = _evaluate(network, *val)
    seconds = time.perf_counter() - start_seconds
    return EpochStats(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        learning_rate=float(optimizer.param_groups[0]["lr"]),
        seconds=seconds,
        samples_per_second=len(train_images) / train_seconds,
        peak_memory_bytes=peak_memory_bytes(device),
    )


def _train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """Take one pass of shuffled batches; return mean loss and accuracy."""
    network.train()
    # Shuffle on the CPU generator so the order is the same on every device.
    order = torch.randperm(len(images), generator=generator).to(images.device)  # [N]
    # Running sums stay on the device: reading them each step would sync CUDA.
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for batch in order.split(batch_size):  # [b] indices
        batch_labels = labels[batch]  # [b]
        logits = network(images[batch])  # [b, H, W, C] -> [b, K]
        loss = functional.cross_entropy(logits, batch_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(batch)
        correct += (logits.argmax(dim=1) == batch_labels).sum()
    return loss_sum.item() / len(images), correct.item() / len(images)


def _evaluate(
    network: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """Return mean cross-entropy and accuracy of ``network`` on a labelled set."""
    network.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    with torch.inference_mode():
        for batch_images, batch_labels in zip(
            images.split(EVAL_BATCH_SIZE), labels.split(EVAL_BATCH_SIZE), strict=True
        ):
            logits = network(batch_images)  # [b, H, W, C] -> [b, K]
            loss_sum += functional.cross_entropy(logits, batch_labels, reduction="sum")
            correct += (logits.argmax(dim=1) == batch_labels).sum()
    return loss_sum.item() / len(images), correct.item() / len(images)


def network_device(network: nn.Module) -> torch.device:
    """Return the device of the network's first parameter or buffer (else CPU)."""
    for tensor in network.parameters():
        return tensor.device
    for tensor in network.buffers():
        return tensor.device
    return torch.device("cpu")


def predict(
    network: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify uint8 images [N, H, W, C] in eval and inference mode.

    Returns predicted classes int64 [N] and softmax probabilities float32 [N, K],
    both on the network's device. The network is left in eval mode.
    """
    _check_positive("batch_size", batch_size)
    device = network_device(network)
    network.eval()
    with torch.inference_mode():
        # split() of an empty tensor still yields one empty batch, so N = 0 works.
        logits = torch.cat(
            [network(batch.to(device)) for batch in images.split(batch_size)]
        )  # [N, K]
        probabilities = torch.softmax(logits.float(), dim=1)  # [N, K]
    # Clones outside inference mode are ordinary tensors that callers may edit.
    return probabilities.argmax(dim=1), probabilities.clone()
