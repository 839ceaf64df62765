"""Summary statistics of image tensors."""

import torch

# Images per chunk, so that a float64 copy of a large split never exists whole.
CHUNK_IMAGES = 4096


def channel_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel mean, std, min and max of uint8 images (N, H, W, C).

    Values stay on the 0-255 scale; the standard deviation is the population
    one over all pixels of the split. Sums are exact in float64 for any
    realistic split (integers well below 2**53).
    """
    if images.ndim != 4:
        shape = tuple(images.shape)
        raise ValueError(f"expected images of shape (N, H, W, C) but got {shape}")
    if images.shape[0] == 0:
        raise ValueError("expected at least one image but got an empty tensor")
    channels = images.shape[-1]
    total = torch.zeros(channels, dtype=torch.float64, device=images.device)
    total_squares = torch.zeros_like(total)
    for chunk in images.split(CHUNK_IMAGES):
        pixels = chunk.reshape(-1, channels).to(torch.float64)  # (n*H*W, C)
        total += pixels.sum(dim=0)
        total_squares += pixels.square().sum(dim=0)
    count = images.numel() // channels
    mean = total / count
    variance = (total_squares / count - mean.square()).clamp(min=0)
    flat = images.reshape(-1, channels)
    return {
        "mean": mean,
        "std": variance.sqrt(),
        "min": flat.amin(dim=0).to(torch.float64),
        "max": flat.amax(dim=0).to(torch.float64),
    }
