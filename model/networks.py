"""Image classifiers by name, each taking uint8 images as the data layer stores them.

Every network starts with an ``InputNormalizer`` that holds the per-channel mean
and standard deviation as buffers, so a saved ``state_dict`` carries everything
needed to turn raw images into logits.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}

# Keeps the decorated class or function its own type for type checkers.
Factory = TypeVar("Factory", bound=Callable[..., nn.Module])


def register_architecture(name: str) -> Callable[[Factory], Factory]:
    """Register a network factory under ``name`` for ``build_network``."""

    def register(factory: Factory) -> Factory:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is already registered")
        ARCHITECTURES[name] = factory
        return factory

    return register


def build_network(
    name: str,
    *,
    channels: int,
    height: int,
    width: int,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    """Build ``name`` for (H, W, C) images; ``mean``/``std`` on the 0-1 scale."""
    if name not in ARCHITECTURES:
        expected = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; expected one of: {expected}")
    for field, value in [
        ("channels", channels),
        ("height", height),
        ("width", width),
        ("num_classes", num_classes),
    ]:
        if value < 1:
            raise ValueError(f"expected a positive {field}, got {value}")
    return ARCHITECTURES[name](
        channels=channels,
        height=height,
        width=width,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )


class InputNormalizer(nn.Module):
    """Turn uint8 (B, H, W, C) images into normalised float32 (B, C, H, W)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Keep the per-channel mean and std of pixel values scaled to [0, 1]."""
        super().__init__()
        mean_tensor = torch.tensor(list(mean), dtype=torch.float32)  # [C]
        std_tensor = torch.tensor(list(std), dtype=torch.float32)  # [C]
        if mean_tensor.ndim != 1 or mean_tensor.shape != std_tensor.shape:
            raise ValueError(
                f"expected one mean and one std per channel, got {len(mean_tensor)} "
                f"means and {len(std_tensor)} stds"
            )
        if not bool((std_tensor > 0).all()):
            raise ValueError(f"expected positive stds, got {std_tensor.tolist()}")
        self.register_buffer("mean", mean_tensor)
        self.register_buffer("std", std_tensor)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Permute, scale to [0, 1] and normalise a batch of images."""
        channels = self.mean.shape[0]
        if images.ndim != 4 or images.shape[-1] != channels:
            raise ValueError(
                f"expected images shaped (B, H, W, {channels}), "
                f"got {tuple(images.shape)}"
            )
        x = images.permute(0, 3, 1, 2).float() / 255.0  # [B, H, W, C] -> [B, C, H, W]
        # Buffers are [C]; view them as [1, C, 1, 1] to broadcast over B, H, W.
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)


# Both LeNet convolutions use 5x5 kernels followed by 2x2 max pooling.
LENET_KERNEL = 5
# Images with a side below this get padded convolutions (see ``LeNet``).
LENET_PAD_BELOW = 16


def lenet_feature_side(side: int, padding: int) -> int:
    """Return one side of the feature map after both conv + pool stages."""
    for _ in range(2):
        side = (side + 2 * padding - LENET_KERNEL + 1) // 2
    return side


@register_architecture("lenet")
class LeNet(nn.Module):
    """The CNN of the PyTorch CIFAR-10 tutorial, sized for any image shape.

    conv(C, 6, 5) -> ReLU -> maxpool 2 -> conv(6, 16, 5) -> ReLU -> maxpool 2
    -> flatten -> fc 120 -> ReLU -> fc 84 -> ReLU -> fc num_classes.
    When either image side is below 16 both convolutions use padding=2, so that
    small images such as 8x8 digits keep a usable feature map (8->8->4->4->2);
    otherwise they are unpadded, exactly the tutorial's network for 32x32.
    """

    def __init__(
        self,
        *,
        channels: int,
        height: int,
        width: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        """Build the layers for (height, width, channels) images and the classes."""
        super().__init__()
        padding = 2 if min(height, width) < LENET_PAD_BELOW else 0
        feature_height = lenet_feature_side(height, padding)
        feature_width = lenet_feature_side(width, padding)
        if feature_height < 1 or feature_width < 1:
            raise ValueError(
                f"images of {height}x{width} are too small for lenet: they leave a "
                f"{feature_height}x{feature_width} feature map"
            )
        self.input = InputNormalizer(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, LENET_KERNEL, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, LENET_KERNEL, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * feature_height * feature_width, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map uint8 images [B, H, W, C] to class logits [B, num_classes]."""
        x = self.input(images)  # [B, H, W, C] uint8 -> [B, C, H, W] float32
        x = self.features(x)  # -> [B, 16, H', W']
        return self.classifier(x)  # -> [B, 16 * H' * W'] -> [B, num_classes]
