"""Training time with one CPU thread against torch's default thread count.

Baseline: torch's default intra-op threads (one per core). Candidate: one
thread, vigil's default (``TrainConfig.cpu_threads``). Both train LeNet on the
digits snapshot for the same epochs, alternating, in this one process; the
script prints the median seconds of each and their ratio. ``--busy`` keeps
one core busy with another process meanwhile, as on a shared machine or
beside a Prefect server.

    .venv/bin/python benchmarks/train_threads.py [--repeats 5] [--epochs 3] [--busy]
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from model.networks import build_network
from model.training import TrainConfig, fit, seed_everything


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)[..., None]
    return torch.from_numpy(images), torch.from_numpy(data.target)


def train_seconds(threads: int, epochs: int) -> float:
    images, labels = digits()
    torch.set_num_threads(threads)
    seed_everything(0)
    network = build_network(
        "lenet", channels=1, height=8, width=8, num_classes=10, mean=[0.3], std=[0.4]
    )
    config = TrainConfig(epochs=epochs, cpu_threads=threads, device="cpu")
    started = time.perf_counter()
    fit(network, images[:1500], labels[:1500], images[1500:], labels[1500:], config)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", action="store_true", help="keep one core busy")
    arguments = parser.parse_args()
    default_threads = torch.get_num_threads()
    if default_threads == 1:
        parser.exit(1, "torch uses one thread here already: nothing to compare\n")
    seconds: dict[int, list[float]] = {default_threads: [], 1: []}
    burner = (
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if arguments.busy
        else None
    )
    try:
        for _ in range(arguments.repeats):
            for threads in seconds:
                seconds[threads].append(train_seconds(threads, arguments.epochs))
    finally:
        if burner is not None:
            burner.kill()
    baseline = statistics.median(seconds[default_threads])
    candidate = statistics.median(seconds[1])
    runs = f"{arguments.repeats} repeats x {arguments.epochs} epochs"
    busy = ", one core kept busy" if arguments.busy else ""
    print(f"torch {torch.__version__}, {runs}{busy}")
    print(f"baseline  {default_threads} threads: median {baseline:.2f} s")
    print(f"candidate 1 thread : median {candidate:.2f} s")
    print(f"ratio baseline/candidate: {baseline / candidate:.2f}x")


if __name__ == "__main__":
    main()
