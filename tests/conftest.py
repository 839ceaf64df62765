"""Fixtures shared by the whole suite."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

VENV_BIN = Path(sys.executable).parent
# Generous: the first start of a server migrates a fresh SQLite database.
SERVER_START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited early with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"prefect server at {url} not healthy after {seconds} s")


def stop(process: subprocess.Popen) -> None:
    """Stop a process we started, by its id, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def running_prefect_server(home: Path) -> Iterator[dict]:
    """A real `prefect server start` on a free loopback port, own PREFECT_HOME."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": url,
    }
    command = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-ui", "--analytics-off"]
    with open(home / "server.log", "w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_healthy(url, process, SERVER_START_SECONDS)
            yield {"url": url, "env": env, "home": home, "log": home / "server.log"}
        finally:
            stop(process)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real Prefect server for the end-to-end tests of the session."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as server:
        yield server


def installed(program: str):
    """A function that runs an installed command as a user would."""

    def run(
        *arguments: str, env: dict, cwd: Path, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(VENV_BIN / program), *arguments],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def run_vigil():
    """Run the installed ``vigil`` command."""
    return installed("vigil")


@pytest.fixture(scope="session")
def run_prefect():
    """Run the installed ``prefect`` command."""
    return installed("prefect")


@pytest.fixture(scope="session")
def start_prefect_server():
    """Start another server of one's own: ``with start_prefect_server(home):``."""
    return running_prefect_server


@pytest.fixture(scope="session")
def inverted_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with black and white swapped: the digits' classes, data a model misreads.

    An ImageFolder tree of 20 PNG images per class, folders '0'..'9'.
    """
    tree = tmp_path_factory.mktemp("inverted")
    digits = load_digits()
    for label in range(10):
        (tree / str(label)).mkdir()
        for index in np.flatnonzero(digits.target == label)[:20]:
            pixels = np.round(digits.images[index] * 255 / 16).astype(np.uint8)
            Image.fromarray(255 - pixels).save(tree / str(label) / f"{index}.png")
    return tree
