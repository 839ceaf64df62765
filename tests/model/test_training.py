"""Tests for seeded training and prediction (model/training.py, model/device.py)."""

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from torch import nn

from model.device import default_device, peak_memory_bytes, reset_peak_memory
from model.networks import build_network
from model.splits import stratified_split
from model.training import (
    EpochStats,
    TrainConfig,
    fit,
    predict,
    seed_everything,
)

Samples = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Train on one thread: these networks are tiny, and spare threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _halves(count: int, seed: int) -> Samples:
    """8x8 images bright in the top half (class 0) or the bottom half (class 1)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2  # [N]
    noise = torch.randint(0, 60, (count, 8, 8, 1), generator=generator)
    images = noise.clone()  # [N, 8, 8, 1]
    images[labels == 0, :4] += 180
    images[labels == 1, 4:] += 180
    return images.to(torch.uint8), labels


def _network(seed: int, num_classes: int = 2) -> nn.Module:
    """A seeded LeNet for 8x8 single-channel images."""
    seed_everything(seed)
    return build_network(
        "lenet",
        channels=1,
        height=8,
        width=8,
        num_classes=num_classes,
        mean=[0.4],
        std=[0.35],
    )


def _train(seed: int, **overrides: object) -> tuple[nn.Module, list[EpochStats]]:
    """Train a seeded LeNet on the halves problem for a few epochs."""
    config = TrainConfig(
        **{"batch_size": 8, "epochs": 3, "seed": seed, "device": "cpu", **overrides}
    )
    network = _network(seed)
    history = fit(network, *_halves(64, 0), *_halves(16, 1), config)
    return network, history


def test_same_seed_gives_bitwise_identical_weights() -> None:
    first, first_history = _train(seed=3)
    second, second_history = _train(seed=3)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [row.train_loss for row in first_history] == [
        row.train_loss for row in second_history
    ]


def test_a_different_seed_gives_different_weights() -> None:
    first, _ = _train(seed=0)
    second, _ = _train(seed=1)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )


def test_the_shuffle_seed_alone_changes_the_weights() -> None:
    # Same initial weights, different batch order.
    networks = [_network(seed=0), _network(seed=0)]
    for network, seed in zip(networks, [0, 1], strict=True):
        config = TrainConfig(batch_size=8, epochs=1, seed=seed, device="cpu")
        fit(network, *_halves(64, 0), *_halves(16, 1), config)
    first, second = (network.classifier[-1].weight for network in networks)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_learns_a_separable_problem(optimizer: str) -> None:
    learning_rate = 0.01 if optimizer == "sgd" else 0.001
    network, history = _train(
        seed=0, optimizer=optimizer, learning_rate=learning_rate, epochs=5
    )
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy == 1.0
    assert all(math.isfinite(p.sum().item()) for p in network.parameters())


def test_history_has_one_row_per_epoch_in_plain_numbers() -> None:
    seen: list[EpochStats] = []
    config = TrainConfig(batch_size=16, epochs=4, learning_rate=0.01, device="cpu")
    history = fit(
        _network(0), *_halves(64, 0), *_halves(16, 1), config, on_epoch=seen.append
    )
    assert seen == history
    assert [row.epoch for row in history] == [1, 2, 3, 4]
    for row in history:
        assert row.seconds > 0
        assert row.samples_per_second > 0
        assert row.peak_memory_bytes > 0
        assert row.learning_rate == 0.01
        assert 0.0 <= row.train_accuracy <= 1.0
        assert 0.0 <= row.val_accuracy <= 1.0
        for field in dataclasses.fields(row):
            assert type(getattr(row, field.name)) in (int, float), field.name


def test_fit_leaves_the_network_in_eval_mode() -> None:
    network, _ = _train(seed=0, epochs=1)
    assert not network.training


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; expected one of: "),
        ({"architecture": "vgg"}, "unknown architecture 'vgg'; expected one of: lenet"),
        ({"epochs": 0}, "expected a positive epochs, got 0"),
        ({"batch_size": -1}, "expected a positive batch_size, got -1"),
        ({"learning_rate": 0.0}, "expected a positive learning_rate, got 0.0"),
        ({"momentum": 1.0}, r"expected momentum in \[0, 1\), got 1.0"),
        ({"weight_decay": -0.1}, "expected a non-negative weight_decay, got -0.1"),
        ({"device": "gpu0"}, "unknown device 'gpu0'"),
        ({"device": "meta"}, "unknown device 'meta'; expected one of: cpu, cuda"),
        ({"seed": -1}, r"expected a seed in \[0, 2\*\*63 - 1\], got -1"),
        ({"seed": 2**64}, r"expected a seed in \[0, 2\*\*63 - 1\]"),
        ({"cpu_threads": 0}, "expected a positive cpu_threads, got 0"),
        ({"cpu_threads": 10**6}, "expected cpu_threads from 1 to"),
    ],
)
def test_config_rejects_bad_values(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_is_refused_where_there_is_none() -> None:
    with pytest.raises(ValueError, match="device 'cuda' is not available here"):
        TrainConfig(device="cuda")


def test_unknown_optimizer_lists_every_choice() -> None:
    with pytest.raises(
        ValueError, match="unknown optimizer 'x'; expected one of: adam, adamw, sgd$"
    ):
        TrainConfig(optimizer="x")


def test_config_defaults_to_the_default_device() -> None:
    assert TrainConfig().torch_device() == default_device()
    assert TrainConfig(device="cpu").torch_device() == torch.device("cpu")


def test_fit_rejects_float_images() -> None:
    images, labels = _halves(8, 0)
    with pytest.raises(ValueError, match="expected train images as uint8"):
        fit(_network(0), images.float(), labels, images, labels, TrainConfig())


def test_fit_rejects_mismatched_labels() -> None:
    images, labels = _halves(8, 0)
    with pytest.raises(ValueError, match="one validation label per image"):
        fit(_network(0), images, labels, images, labels[:4], TrainConfig())


def test_predict_returns_classes_and_probabilities() -> None:
    images, _ = _halves(10, 2)
    network = _network(0, num_classes=3)
    network.train()
    predictions, probabilities = predict(network, images, batch_size=4)
    assert predictions.shape == (10,) and predictions.dtype == torch.int64
    assert probabilities.shape == (10, 3) and probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(10))
    assert torch.equal(predictions, probabilities.argmax(dim=1))
    assert not network.training
    assert not probabilities.is_inference()  # callers may edit them in place
    with torch.no_grad():
        logits = network(images)
    assert torch.allclose(probabilities, torch.softmax(logits, dim=1))


def test_predict_handles_no_images() -> None:
    predictions, probabilities = predict(
        _network(0), torch.zeros((0, 8, 8, 1), dtype=torch.uint8)
    )
    assert predictions.shape == (0,)
    assert probabilities.shape == (0, 2)


def test_peak_memory_is_reported_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)  # a no-op on the CPU, but must not fail
    assert peak_memory_bytes(cpu) > 1024 * 1024  # a Python process with torch


def _digits_splits() -> tuple[Samples, Samples, Samples]:
    """sklearn's digits as uint8 (N, 8, 8, 1): train, validation and test."""
    digits = load_digits()
    images = torch.round(torch.tensor(digits.images) * 255 / 16).to(torch.uint8)
    images = images.unsqueeze(-1)  # [N, 8, 8] -> [N, 8, 8, 1]
    labels = torch.tensor(digits.target)
    rest, test = stratified_split(labels, 0.2, seed=0)
    train, val = stratified_split(labels[rest], 0.1, seed=0)
    train, val = rest[train], rest[val]
    return (
        (images[train], labels[train]),
        (images[val], labels[val]),
        (images[test], labels[test]),
    )


def test_the_defaults_train_lenet_to_95_percent_on_digits() -> None:
    (train_images, train_labels), val, (test_images, test_labels) = _digits_splits()
    pixels = train_images.float() / 255
    config = TrainConfig(device="cpu")
    seed_everything(config.seed)
    network = build_network(
        config.architecture,
        channels=1,
        height=8,
        width=8,
        num_classes=10,
        mean=[pixels.mean().item()],
        std=[pixels.std().item()],
    )
    fit(network, train_images, train_labels, *val, config)
    predictions, _ = predict(network, test_images)
    assert accuracy_score(test_labels.numpy(), predictions.numpy()) >= 0.95
