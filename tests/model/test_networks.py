"""Tests for the network registry, LeNet and the input module (model/networks.py)."""

import pytest
import torch
from torch import nn

from model.networks import (
    ARCHITECTURES,
    InputNormalizer,
    build_network,
    register_architecture,
)


def _lenet(channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """LeNet for the given shape, normalising with the tutorial's 0.5 / 0.5."""
    return build_network(
        "lenet",
        channels=channels,
        height=height,
        width=width,
        num_classes=num_classes,
        mean=[0.5] * channels,
        std=[0.5] * channels,
    )


def _random_images(count: int, height: int, width: int, channels: int) -> torch.Tensor:
    """Seeded random uint8 images laid out (N, H, W, C)."""
    generator = torch.Generator().manual_seed(0)
    shape = (count, height, width, channels)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize(
    ("height", "width", "channels", "num_classes"),
    [(8, 8, 1, 10), (28, 28, 1, 10), (32, 32, 3, 10), (8, 12, 1, 3)],
)
def test_lenet_gives_one_logit_per_class(
    height: int, width: int, channels: int, num_classes: int
) -> None:
    network = _lenet(channels, height, width, num_classes)
    logits = network(_random_images(5, height, width, channels))
    assert logits.shape == (5, num_classes)
    assert logits.dtype == torch.float32


def test_lenet_on_32x32x3_has_the_tutorial_layer_sizes() -> None:
    # Weights + biases of each layer of the tutorial's unpadded network:
    # 32 -conv5-> 28 -pool-> 14 -conv5-> 10 -pool-> 5, so fc1 sees 16 * 5 * 5.
    conv1 = 3 * 6 * 5 * 5 + 6
    conv2 = 6 * 16 * 5 * 5 + 16
    fc1 = 16 * 5 * 5 * 120 + 120
    fc2 = 120 * 84 + 84
    fc3 = 84 * 10 + 10
    network = _lenet(3, 32, 32, 10)
    assert sum(p.numel() for p in network.parameters()) == (
        conv1 + conv2 + fc1 + fc2 + fc3
    )
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convolutions] == [(0, 0), (0, 0)]


def test_lenet_pads_small_images() -> None:
    # With padding 2: 8 -conv5-> 8 -pool-> 4 -conv5-> 4 -pool-> 2.
    network = _lenet(1, 8, 8, 10)
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convolutions] == [(2, 2), (2, 2)]
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 16 * 2 * 2


def test_lenet_rejects_images_too_small_even_when_padded() -> None:
    with pytest.raises(ValueError, match="images of 3x3 are too small for lenet"):
        _lenet(1, 3, 3, 10)


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown architecture 'resnet'; expected one of: lenet"
    ):
        build_network(
            "resnet", channels=1, height=8, width=8, num_classes=10, mean=[0], std=[1]
        )


def test_registering_a_name_twice_is_refused() -> None:
    assert "lenet" in ARCHITECTURES
    with pytest.raises(ValueError, match="'lenet' is already registered"):
        register_architecture("lenet")(nn.Identity)


def test_build_network_rejects_a_non_positive_size() -> None:
    with pytest.raises(ValueError, match="expected a positive num_classes, got 0"):
        _lenet(1, 8, 8, 0)


def test_input_module_permutes_scales_and_normalises() -> None:
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 0.5]
    images = _random_images(2, 4, 3, 3)
    normalised = InputNormalizer(mean, std)(images)
    assert normalised.shape == (2, 3, 4, 3)
    assert normalised.dtype == torch.float32
    for b in range(2):
        for y in range(4):
            for x in range(3):
                for c in range(3):
                    expected = (int(images[b, y, x, c]) / 255 - mean[c]) / std[c]
                    assert normalised[b, c, y, x].item() == pytest.approx(
                        expected, abs=1e-6
                    )


def test_input_statistics_travel_in_the_state_dict() -> None:
    network = build_network(
        "lenet",
        channels=2,
        height=8,
        width=8,
        num_classes=4,
        mean=[0.3, 0.4],
        std=[0.6, 0.7],
    )
    state = network.state_dict()
    assert torch.equal(state["input.mean"], torch.tensor([0.3, 0.4]))
    assert torch.equal(state["input.std"], torch.tensor([0.6, 0.7]))
    assert state["input.mean"].dtype == torch.float32


def test_a_restored_network_gives_the_same_logits() -> None:
    images = _random_images(3, 8, 8, 1)
    trained = build_network(
        "lenet", channels=1, height=8, width=8, num_classes=10, mean=[0.3], std=[0.4]
    )
    restored = _lenet(1, 8, 8, 10)
    restored.load_state_dict(trained.state_dict())
    assert torch.equal(restored(images), trained(images))


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5, 0.5], [0.5], "one mean and one std per channel, got 2 means and 1"),
        ([0.5], [0.0], "expected positive stds"),
    ],
)
def test_input_module_rejects_bad_statistics(
    mean: list[float], std: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        InputNormalizer(mean, std)


def test_input_module_rejects_images_of_the_wrong_layout() -> None:
    channels_first = _random_images(2, 3, 8, 8)  # (N, C, H, W) by mistake
    with pytest.raises(ValueError, match=r"expected images shaped \(B, H, W, 3\)"):
        InputNormalizer([0.5] * 3, [0.5] * 3)(channels_first)
