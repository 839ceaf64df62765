"""The flows end to end on the digits data, under the Prefect test harness."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sklearn.metrics import accuracy_score, f1_score

from flows.pipeline import evaluate, ingest, pipeline
from model.networks import build_network
from tasks.registry import alias_events, aliases
from tasks.schemas import ConfusionMatrix, Metrics, TrainingHistory
from tasks.store import read_table

# Few epochs with Adam: enough to learn digits well, quick on two cores.
FAST = {"optimizer": "adam", "learning_rate": 0.003, "epochs": 4}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("artifacts")
    return pipeline(artifact_root=str(root), **FAST)


def test_pipeline_registers_the_first_model_as_champion(first_run: dict) -> None:
    root = Path(first_run["artifact_root"])
    assert first_run["model_name"] == "digits-lenet"
    assert first_run["version"] == 1
    assert first_run["champion"] is True
    assert aliases(root, "digits-lenet") == {"champion": 1}
    events = alias_events(root, "digits-lenet")
    assert events["version"].tolist() == [1]
    assert events["previous_version"].isna().all()


def test_pipeline_writes_valid_tables(first_run: dict) -> None:
    folder = Path(first_run["artifact_root"]) / "runs" / first_run["run_id"]
    history = read_table(folder / "training_history.parquet", TrainingHistory)
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    metrics = read_table(folder / "metrics.parquet", Metrics)
    assert set(metrics["split"]) == {"validation", "test"}
    assert (metrics["model_version"] == 1).all()
    confusion = read_table(folder / "confusion.parquet", ConfusionMatrix)
    assert len(confusion) == 2 * 10 * 10


def predictions_on_test(root: Path, result: dict) -> tuple[np.ndarray, np.ndarray]:
    """Predict the test split independently of the evaluation task."""
    snapshot = root / "datasets" / "digits" / result["snapshot_id"]
    table = pq.read_table(snapshot / "test.parquet")
    pixels = np.stack(table.column("image").to_numpy(zero_copy_only=False))
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 8, 8, 1))
    model = root / "models" / "digits-lenet" / str(result["version"]) / "model.pt"
    checkpoint = torch.load(model, weights_only=True)
    network = build_network(checkpoint["architecture"], **checkpoint["input"])
    network.load_state_dict(checkpoint["state_dict"])
    with torch.inference_mode():
        predicted = network.eval()(images).argmax(dim=1).numpy()
    return table.column("label").to_numpy(), predicted


def test_pipeline_metrics_match_scikit_learn(first_run: dict) -> None:
    root = Path(first_run["artifact_root"])
    truth, predicted = predictions_on_test(root, first_run)
    metrics = read_table(Path(first_run["metrics"]), Metrics)
    test = metrics[(metrics["split"] == "test") & metrics["class_index"].isna()]
    value = test.set_index(["metric", test["average"].fillna("")])["value"]
    assert value[("accuracy", "")] == pytest.approx(accuracy_score(truth, predicted))
    macro = f1_score(truth, predicted, average="macro", labels=range(10))
    assert value[("f1", "macro")] == pytest.approx(macro)
    # Four epochs of Adam learn the digits well; a broken pipeline would not.
    assert value[("accuracy", "")] > 0.8


def test_pipeline_publishes_a_table_artifact(first_run: dict) -> None:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["digits-lenet-metrics"])
            )
        )
    assert found, "no artifact with key digits-lenet-metrics"
    assert found[0].type == "table"


def test_ingest_again_gives_the_same_snapshot(first_run: dict) -> None:
    root = first_run["artifact_root"]
    assert ingest(artifact_root=root) == first_run["snapshot_id"]
    assert len(list(Path(root).glob("datasets/digits/*"))) == 1


def test_evaluate_resolves_the_champion(first_run: dict) -> None:
    result = evaluate(
        model_name="digits-lenet", artifact_root=first_run["artifact_root"]
    )
    assert result["model_version"] == 1
    metrics = read_table(Path(result["metrics"]), Metrics)
    assert set(metrics["split"]) == {"test"}
    original = read_table(Path(first_run["metrics"]), Metrics)
    same = ["split", "metric", "average", "class_index"]
    merged = original.merge(metrics, on=same, suffixes=("_first", "_again"))
    np.testing.assert_allclose(merged["value_first"], merged["value_again"])


def test_a_worse_model_does_not_take_the_champion_alias(first_run: dict) -> None:
    root = first_run["artifact_root"]
    # One epoch of plain SGD at the tutorial's rate barely moves from chance.
    worse = pipeline(artifact_root=root, epochs=1)
    assert worse["version"] == 2
    assert worse["champion"] is False
    assert aliases(Path(root), "digits-lenet") == {"champion": 1}


def test_bad_input_fails_the_flow_run_with_the_cause(tmp_path: Path) -> None:
    state = pipeline(source="nope", artifact_root=str(tmp_path), return_state=True)
    assert state.is_failed()
    assert "unknown source 'nope'" in state.message
    assert not any(tmp_path.iterdir())
