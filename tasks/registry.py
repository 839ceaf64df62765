"""The local model registry: versioned checkpoints, model cards and aliases.

Layout under the artifact root::

    models/<name>/<version>/model.pt      checkpoint (loaded with weights_only)
    models/<name>/<version>/card.json     model card
    models/<name>/aliases.json            alias -> version
    models/<name>/alias_events.parquet    every change of an alias

Registration and alias changes hold an exclusive lock on the model's folder,
so two pipelines that finish at once get different versions.
"""

import fcntl
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from model.networks import build_network
from tasks.errors import NotFoundError, TableError, VigilError
from tasks.schemas import AliasEvents
from tasks.store import (
    atomic_path,
    ensure_folder,
    read_json,
    read_table,
    staging_folder,
    write_json,
    write_table,
)

CHAMPION = "champion"
# The figure that decides which version is champion, as stored on the card.
CHAMPION_METRIC = "test_accuracy"
# What a checkpoint must hold to be rebuilt and evaluated.
CHECKPOINT_KEYS = (
    "architecture",
    "input",
    "state_dict",
    "config",
    "class_names",
    "snapshot_id",
    "dataset",
)
LIBRARIES = ("torch", "torchvision", "prefect", "pandera", "pyarrow", "numpy")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    path: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def card(self) -> dict[str, Any]:
        return read_json(self.path / "card.json")


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> Path:
    """Write a checkpoint atomically."""
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``, naming a damaged file."""
    if not path.is_file():
        raise NotFoundError(f"no such checkpoint: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        message = f"checkpoint {path} cannot be loaded: {type(error).__name__}"
        raise TableError(message) from None
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if not isinstance(checkpoint, dict) or missing:
        raise TableError(
            f"checkpoint {path} lacks {', '.join(missing) or 'its fields'}; "
            f"expected a vigil checkpoint with {', '.join(CHECKPOINT_KEYS)}"
        )
    return checkpoint


def network_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights."""
    try:
        network = build_network(checkpoint["architecture"], **checkpoint["input"])
        network.load_state_dict(checkpoint["state_dict"])
    except (ValueError, TypeError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0]
        message = f"checkpoint of run {checkpoint.get('run_id')} does not load: {first}"
        raise TableError(message) from None
    return network.eval()


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a model's numbers depend on."""
    versions = {"python": platform.python_version()}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = "not installed"
    return versions


def git_commit() -> str | None:
    """The git commit of vigil's own source, when it runs from a checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def model_folder(root: Path, name: str) -> Path:
    return root / "models" / name


@contextmanager
def locked(root: Path, name: str) -> Iterator[Path]:
    """Hold the model's registry lock for the duration of the block."""
    folder = ensure_folder(model_folder(root, name))
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def versions(root: Path, name: str) -> list[int]:
    """The registered versions of a model, oldest first."""
    folder = model_folder(root, name)
    found = [
        int(p.parent.name)
        for p in folder.glob("*/card.json")
        if p.parent.name.isdigit()
    ]
    return sorted(found) if folder.is_dir() else []


def model_names(root: Path) -> list[str]:
    """Every model with at least one registered version."""
    return sorted(p.name for p in (root / "models").glob("*") if versions(root, p.name))


def aliases(root: Path, name: str) -> dict[str, int]:
    """The model's aliases (alias -> version); empty when none is set."""
    path = model_folder(root, name) / "aliases.json"
    return read_json(path) if path.is_file() else {}


def resolve(root: Path, name: str, reference: str | int = CHAMPION) -> ModelVersion:
    """A version by number or alias ('champion', '3', 3)."""
    check_model_name(name)
    known = versions(root, name)
    if not known:
        names = ", ".join(model_names(root)) or "none registered yet"
        raise NotFoundError(f"no model named {name!r}; known models: {names}")
    reference = str(reference)
    if reference.isdigit():
        version = int(reference)
    elif reference in aliases(root, name):
        version = aliases(root, name)[reference]
    else:
        known_aliases = ", ".join(aliases(root, name)) or "none set"
        raise NotFoundError(
            f"model {name!r} has no alias {reference!r}; expected a version "
            f"({', '.join(map(str, known))}) or an alias ({known_aliases})"
        )
    if version not in known:
        raise NotFoundError(
            f"model {name!r} has no version {version}; "
            f"registered versions: {', '.join(map(str, known))}"
        )
    return ModelVersion(name, version, model_folder(root, name) / str(version))


def register(
    root: Path, name: str, checkpoint_path: Path, card: dict[str, Any]
) -> ModelVersion:
    """Copy a run's checkpoint into the registry as the next version."""
    with locked(root, name) as folder:
        version = max(versions(root, name), default=0) + 1
        staging = staging_folder(folder, f".{version}.")
        try:
            shutil.copyfile(checkpoint_path, staging / "model.pt")
            full_card = {
                **card,
                "name": name,
                "version": version,
                "registered_at": datetime.now(timezone.utc).isoformat(),
                "libraries": library_versions(),
                "git_commit": git_commit(),
            }
            write_json(full_card, staging / "card.json")
            os.rename(staging, folder / str(version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ModelVersion(name, version, folder / str(version))


def alias_events(root: Path, name: str) -> pd.DataFrame:
    """Every alias change of a model, oldest first (empty when none)."""
    path = model_folder(root, name) / "alias_events.parquet"
    if not path.is_file():
        return AliasEvents.validate(
            pd.DataFrame(columns=list(AliasEvents.to_schema().columns))
        )
    return read_table(path, AliasEvents)


def set_alias(root: Path, name: str, alias: str, version: int, reason: str) -> None:
    """Point ``alias`` at ``version`` and record the change."""
    resolve(root, name, version)
    with locked(root, name):
        _move_alias(root, name, alias, version, reason)


def _move_alias(root: Path, name: str, alias: str, version: int, reason: str) -> None:
    # Callers hold the model's lock.
    folder = model_folder(root, name)
    current = aliases(root, name)
    event = {
        "changed_at": pd.Timestamp.now(tz="UTC"),
        "model_name": name,
        "alias": alias,
        "previous_version": current.get(alias),
        "version": version,
        "reason": reason,
    }
    events = pd.concat(
        [alias_events(root, name), pd.DataFrame([event])], ignore_index=True
    )
    write_table(events, AliasEvents, folder / "alias_events.parquet")
    write_json({**current, alias: version}, folder / "aliases.json")


def card_score(version: ModelVersion) -> float:
    """The champion metric as recorded on a version's card."""
    return version.card["metrics"][CHAMPION_METRIC]


def promote_if_better(
    root: Path,
    candidate: ModelVersion,
    incumbent_score: Callable[[ModelVersion], float] = card_score,
) -> bool:
    """Make ``candidate`` champion when it beats the current one; say if it did.

    ``incumbent_score`` gives the champion's figure to beat; it should be
    measured on the candidate's test data when the two were tested apart.
    """
    score = card_score(candidate)
    with locked(root, candidate.name):
        current = aliases(root, candidate.name).get(CHAMPION)
        if current is None:
            reason = f"first champion ({CHAMPION_METRIC} {score:.4f})"
        else:
            best = incumbent_score(resolve(root, candidate.name, current))
            if score <= best:
                return False
            reason = (
                f"{CHAMPION_METRIC} {score:.4f} beats version {current}'s {best:.4f} "
                "on the same test split"
            )
        _move_alias(root, candidate.name, CHAMPION, candidate.version, reason)
    return True


def default_model_name(dataset: str, architecture: str) -> str:
    """``<dataset>-<architecture>``, with characters a name cannot hold as '-'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{dataset}-{architecture}")
    return name.lstrip(".-") or architecture


def check_model_name(name: str) -> str:
    """Model names become folder names: letters, digits, '-', '_' and '.' only."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    if not name or not set(name) <= allowed or name.startswith("."):
        raise VigilError(
            f"invalid model name {name!r}; expected letters, digits, '-', '_' or '.'"
        )
    return name
