"""Where models run, and how much memory they took there."""

import sys

import torch

try:
    import resource
except ImportError:  # Windows has no getrusage.
    resource = None


def default_device() -> torch.device:
    """Return the first CUDA device when one is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_bytes(device: torch.device | str) -> int:
    """Return the peak memory in bytes since the last reset on ``device``.

    On CUDA this is the peak of tensor memory allocated by PyTorch. On any other
    device it is the peak resident set size of the whole process since it
    started (it cannot be reset), so it includes everything else the process
    holds, not only tensors; 0 where the platform cannot tell (Windows).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on CUDA; a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
