"""The nightly re-evaluation flow, under the Prefect test harness."""

import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.events.filters import EventFilter, EventNameFilter

from flows.pipeline import pipeline
from flows.reevaluate import reevaluate
from tasks.history import read_history
from tasks.schemas import Metrics
from tasks.store import read_table

FAST = {"optimizer": "adam", "learning_rate": 0.003, "epochs": 4}


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("store")
    return pipeline(artifact_root=str(root), model_name="watched", **FAST)


def test_an_unchanged_model_completes_and_appends_its_rows(registered: dict) -> None:
    root = registered["artifact_root"]
    result = reevaluate(model_name="watched", artifact_root=root)
    assert result["degraded"] is False
    assert result["snapshot_id"] == registered["snapshot_id"]
    metrics = read_table(
        Path(root) / "runs" / result["run_id"] / "metrics.parquet", Metrics
    )
    history, problems = read_history(Path(root), model_name="watched")
    assert problems == []
    mine = history[history["run_id"] == result["run_id"]]
    assert len(mine) == len(metrics)
    assert set(mine["model_version"]) == {1}


def test_a_degraded_model_fails_the_run_with_the_cause(
    registered: dict, inverted_digits: Path
) -> None:
    root = registered["artifact_root"]
    state = reevaluate(
        model_name="watched",
        source="imagefolder",
        data=str(inverted_digits),
        artifact_root=root,
        return_state=True,
    )
    assert state.is_failed()
    card_accuracy = registered["headline"][0]
    assert card_accuracy["split"] == "test" and card_accuracy["metric"] == "accuracy"
    message = state.message
    assert message.startswith("model watched version 1 degraded: accuracy ")
    assert f"baseline {card_accuracy['value']:.4f}" in message
    assert "threshold 0.0200" in message

    # The comparison is published, and the alarm is an event.
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["watched-reevaluation"])
            )
        )
        run_id = state.state_details.flow_run_id
        (mine,) = [artifact for artifact in found if artifact.flow_run_id == run_id]
        assert mine.type == "markdown"
        assert "degraded" in mine.data
        events = wait_for_events(client, "vigil.model.degraded")
    assert events[0].resource.id == "vigil.model.watched.1"
    assert "accuracy" in events[0].payload["metrics"]


def wait_for_events(client, name: str, seconds: float = 30) -> list:
    """Events reach the server asynchronously; poll until one arrives."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page = client.read_events(
            EventFilter(event=EventNameFilter(name=[name])), limit=50
        )
        if page.events:
            return page.events
        time.sleep(0.5)
    raise AssertionError(f"no {name} event within {seconds} s")


def test_extra_sets_are_evaluated_and_recorded_without_alarm(
    registered: dict, inverted_digits: Path
) -> None:
    root = registered["artifact_root"]
    extra = {"inverted": {"source": "imagefolder", "data": str(inverted_digits)}}
    result = reevaluate(model_name="watched", extra_sets=extra, artifact_root=root)
    assert result["degraded"] is False
    history, _ = read_history(Path(root), model_name="watched")
    mine = history[history["run_id"] == result["run_id"]]
    assert set(mine["environment"]) == {"clean", "inverted"}
    inverted = mine[
        (mine["environment"] == "inverted") & (mine["metric"] == "accuracy")
    ]
    clean = mine[(mine["environment"] == "clean") & (mine["metric"] == "accuracy")]
    assert inverted["value"].item() < clean["value"].item()


def test_the_history_keeps_every_run(registered: dict) -> None:
    history, _ = read_history(Path(registered["artifact_root"]), model_name="watched")
    environments = history.groupby("run_id")["environment"].unique()
    assert len(environments) >= 2


def test_unknown_thresholds_are_refused(registered: dict) -> None:
    state = reevaluate(
        model_name="watched",
        thresholds={"accurracy": 0.1},
        artifact_root=registered["artifact_root"],
        return_state=True,
    )
    assert state.is_failed()
    assert "accurracy" in state.message
