"""Tests for the model registry: versions, cards, aliases, checkpoints."""

import multiprocessing
import os
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch

from model.networks import build_network
from tasks.errors import NotFoundError, TableError, VigilError
from tasks.registry import (
    alias_events,
    aliases,
    check_model_name,
    load_checkpoint,
    model_names,
    network_from_checkpoint,
    promote_if_better,
    register,
    resolve,
    save_checkpoint,
    set_alias,
    versions,
)
from tasks.store import read_table

NAME = "digits-lenet"
INPUT = {
    "channels": 1,
    "height": 8,
    "width": 8,
    "num_classes": 3,
    "mean": [0.4],
    "std": [0.3],
}


@pytest.fixture
def checkpoint_file(tmp_path):
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir()
    torch.save({"state_dict": {"weight": torch.arange(6.0)}}, path)
    return path


def _card(accuracy: float, **extra) -> dict:
    return {"metrics": {"test_accuracy": accuracy}, **extra}


def _registered(root: Path, checkpoint: Path, *accuracies: float) -> list:
    return [register(root, NAME, checkpoint, _card(a)) for a in accuracies]


# --- registration ---------------------------------------------------------------------


def test_each_registration_gets_the_next_version(tmp_path, checkpoint_file):
    root = tmp_path / "store"
    first, second = _registered(root, checkpoint_file, 0.8, 0.9)
    assert (first.version, second.version) == (1, 2)
    assert versions(root, NAME) == [1, 2]
    assert model_names(root) == [NAME]
    for entry in (first, second):
        assert entry.path == root / "models" / NAME / str(entry.version)
        assert entry.checkpoint_path.read_bytes() == checkpoint_file.read_bytes()


def test_model_card_fields(tmp_path, checkpoint_file):
    before = datetime.now(timezone.utc)
    entry = register(
        tmp_path, NAME, checkpoint_file, _card(0.8, version=99, architecture="lenet")
    )
    after = datetime.now(timezone.utc)
    card = entry.card
    assert card["name"] == NAME
    assert card["version"] == 1
    assert card["architecture"] == "lenet"
    assert card["metrics"] == {"test_accuracy": 0.8}
    assert card["libraries"]["torch"] == metadata.version("torch")
    assert card["libraries"]["python"] == platform.python_version()
    registered_at = datetime.fromisoformat(card["registered_at"])
    assert registered_at.utcoffset().total_seconds() == 0
    assert before <= registered_at <= after


def test_registration_leaves_no_staging_folder(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.5)
    entries = sorted(os.listdir(tmp_path / "models" / NAME))
    assert [e for e in entries if e.startswith(".") and e != ".lock"] == []
    assert sorted(os.listdir(tmp_path / "models" / NAME / "1")) == [
        "card.json",
        "model.pt",
    ]


def _register_in_process(root: str, checkpoint: str, worker: int, barrier) -> None:
    barrier.wait()
    register(Path(root), NAME, Path(checkpoint), {"worker": worker})


def test_concurrent_registrations_get_distinct_versions(tmp_path, checkpoint_file):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    processes = [
        context.Process(
            target=_register_in_process,
            args=(str(tmp_path), str(checkpoint_file), worker, barrier),
        )
        for worker in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    assert versions(tmp_path, NAME) == [1, 2, 3, 4]
    workers = [resolve(tmp_path, NAME, v).card["worker"] for v in range(1, 5)]
    assert sorted(workers) == [0, 1, 2, 3]


# --- resolving ------------------------------------------------------------------------


@pytest.mark.parametrize("reference", [2, "2"], ids=["int", "str"])
def test_resolve_by_number(tmp_path, checkpoint_file, reference):
    _registered(tmp_path, checkpoint_file, 0.8, 0.7)
    found = resolve(tmp_path, NAME, reference)
    assert (found.name, found.version) == (NAME, 2)
    assert found.card["metrics"]["test_accuracy"] == 0.7


def test_resolve_champion_alias(tmp_path, checkpoint_file):
    first, second = _registered(tmp_path, checkpoint_file, 0.8, 0.7)
    promote_if_better(tmp_path, first)
    promote_if_better(tmp_path, second)
    assert resolve(tmp_path, NAME).version == 1
    assert resolve(tmp_path, NAME, "champion").version == 1


def test_resolve_unknown_version_lists_known_ones(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8, 0.7)
    expected = f"model '{NAME}' has no version 5; registered versions: 1, 2"
    with pytest.raises(NotFoundError, match=re.escape(expected)):
        resolve(tmp_path, NAME, 5)


def test_resolve_unknown_alias(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8)
    with pytest.raises(NotFoundError, match="has no alias 'best'.*none set"):
        resolve(tmp_path, NAME, "best")


def test_resolve_champion_before_any_promotion(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8)
    with pytest.raises(NotFoundError, match="has no alias 'champion'"):
        resolve(tmp_path, NAME)


def test_resolve_unknown_model_names_known_models(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8)
    expected = f"no model named 'ghost'; known models: {NAME}"
    with pytest.raises(NotFoundError, match=re.escape(expected)):
        resolve(tmp_path, "ghost")


def test_resolve_in_empty_store(tmp_path):
    with pytest.raises(NotFoundError, match="known models: none registered yet"):
        resolve(tmp_path, NAME)


# --- champion -------------------------------------------------------------------------


def test_first_version_becomes_champion(tmp_path, checkpoint_file):
    (first,) = _registered(tmp_path, checkpoint_file, 0.5)
    assert promote_if_better(tmp_path, first) is True
    assert aliases(tmp_path, NAME) == {"champion": 1}


PROMOTIONS = {
    "better_takes_over": (0.9, True, 2),
    "equal_does_not": (0.8, False, 1),
    "worse_does_not": (0.7, False, 1),
}


@pytest.mark.parametrize(
    ("score", "promoted", "champion"), list(PROMOTIONS.values()), ids=list(PROMOTIONS)
)
def test_second_version_takes_over_only_when_better(
    tmp_path, checkpoint_file, score, promoted, champion
):
    first, second = _registered(tmp_path, checkpoint_file, 0.8, score)
    promote_if_better(tmp_path, first)
    assert promote_if_better(tmp_path, second) is promoted
    assert aliases(tmp_path, NAME) == {"champion": champion}
    assert len(alias_events(tmp_path, NAME)) == (2 if promoted else 1)


def test_alias_events_are_stored_under_their_schema(tmp_path, checkpoint_file):
    first, second = _registered(tmp_path, checkpoint_file, 0.8, 0.9)
    promote_if_better(tmp_path, first)
    promote_if_better(tmp_path, second)
    events = read_table(tmp_path / "models" / NAME / "alias_events.parquet")
    assert events["model_name"].tolist() == [NAME, NAME]
    assert events["alias"].tolist() == ["champion", "champion"]
    assert events["previous_version"].tolist() == [pd.NA, 1]
    assert events["version"].tolist() == [1, 2]
    assert events["reason"].tolist() == [
        "first champion (test_accuracy 0.8000)",
        "test_accuracy 0.9000 beats version 1's 0.8000 on the same test split",
    ]
    assert str(events["changed_at"].dt.tz) == "UTC"
    assert events["changed_at"].is_monotonic_increasing


def test_set_alias_moves_champion_back_and_records_it(tmp_path, checkpoint_file):
    first, second = _registered(tmp_path, checkpoint_file, 0.8, 0.9)
    promote_if_better(tmp_path, first)
    promote_if_better(tmp_path, second)
    set_alias(tmp_path, NAME, "champion", 1, "rollback")
    assert resolve(tmp_path, NAME).version == 1
    last = alias_events(tmp_path, NAME).iloc[-1]
    assert (last["previous_version"], last["version"], last["reason"]) == (
        2,
        1,
        "rollback",
    )


def test_set_alias_to_unknown_version_is_refused(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8)
    with pytest.raises(NotFoundError, match="has no version 3"):
        set_alias(tmp_path, NAME, "champion", 3, "typo")
    assert aliases(tmp_path, NAME) == {}


def test_alias_events_empty_before_any_change(tmp_path, checkpoint_file):
    _registered(tmp_path, checkpoint_file, 0.8)
    events = alias_events(tmp_path, NAME)
    assert len(events) == 0
    assert list(events.columns) == [
        "changed_at",
        "model_name",
        "alias",
        "previous_version",
        "version",
        "reason",
    ]


# --- checkpoints ----------------------------------------------------------------------


def test_checkpoint_round_trip_rebuilds_an_identical_network(tmp_path):
    torch.manual_seed(0)
    network = build_network("lenet", **INPUT).eval()
    checkpoint = {
        "architecture": "lenet",
        "input": INPUT,
        "state_dict": network.state_dict(),
        "config": {},
        "class_names": ["a", "b", "c"],
        "snapshot_id": "s",
        "dataset": "d",
    }
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    assert os.listdir(tmp_path) == ["model.pt"]
    rebuilt = network_from_checkpoint(load_checkpoint(path))
    assert not rebuilt.training
    batch = torch.randint(0, 256, (5, 8, 8, 1), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), network(batch))


def test_a_checkpoint_without_vigil_fields_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint({"x": torch.ones(1)}, tmp_path / "model.pt")
    with pytest.raises(TableError, match="lacks architecture, input, state_dict"):
        load_checkpoint(path)


def test_a_checkpoint_with_missing_weights_does_not_load(tmp_path: Path) -> None:
    state = build_network("lenet", **INPUT).state_dict()
    del state[next(iter(state))]  # drop one weight
    checkpoint = {"architecture": "lenet", "input": INPUT, "state_dict": state}
    with pytest.raises(TableError, match="does not load: Error"):
        network_from_checkpoint(checkpoint)


def _truncated(path: Path) -> None:
    torch.save({"weight": torch.ones(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "garbage_bytes": lambda path: path.write_bytes(b"this is not a checkpoint"),
    "empty_file": lambda path: path.write_bytes(b""),
    "truncated": _truncated,
}


@pytest.mark.parametrize("damage", list(DAMAGES.values()), ids=list(DAMAGES))
def test_damaged_checkpoint_gives_one_line_error(tmp_path, damage):
    path = tmp_path / "model.pt"
    damage(path)
    expected = f"checkpoint {re.escape(str(path))} cannot be loaded: "
    with pytest.raises(TableError, match=expected) as raised:
        load_checkpoint(path)
    assert "\n" not in str(raised.value)


UNPICKLED = []


class Payload:
    """A plain Python object: weights_only loading must never rebuild it."""

    def __setstate__(self, state):
        UNPICKLED.append(state)


def test_checkpoint_with_arbitrary_python_object_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    payload = Payload()
    payload.note = "not a tensor"
    torch.save({"state_dict": {}, "extra": payload}, path)
    with pytest.raises(TableError, match="cannot be loaded: UnpicklingError"):
        load_checkpoint(path)
    assert UNPICKLED == []


def test_missing_checkpoint_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "model.pt")


# --- model names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "", "a/b", ".hidden", "..", "with space", "tab\tname"],
    ids=["parent", "empty", "slash", "hidden", "dotdot", "space", "tab"],
)
def test_invalid_model_names_are_refused(name):
    with pytest.raises(VigilError, match=re.escape(f"invalid model name {name!r}")):
        check_model_name(name)


@pytest.mark.parametrize("name", ["lenet", "Digits-LeNet_v1.2", "7"])
def test_valid_model_names_pass(name):
    assert check_model_name(name) == name
