"""The Prefect tasks as plain functions (``.fn()``), chained on tiny data."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import accuracy_score
from sklearn.metrics import confusion_matrix as sklearn_confusion

from model.training import EpochStats, TrainConfig
from tasks.errors import DatasetError
from tasks.evaluation import evaluate_model
from tasks.ingest import ingest_snapshot
from tasks.registration import check_model_name_for, register_model, resolve_model
from tasks.registry import (
    alias_events,
    aliases,
    load_checkpoint,
    network_from_checkpoint,
)
from tasks.schemas import ConfusionMatrix, Metrics, TrainingHistory
from tasks.snapshots import find_snapshot, load_split
from tasks.sources import SourceSpec
from tasks.store import read_table
from tasks.training import epoch_line, train_model

CONFIG = TrainConfig(optimizer="adam", learning_rate=0.003, epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = str(tmp_path_factory.mktemp("store"))
    snapshot = ingest_snapshot.fn(root, SourceSpec("digits"))
    checkpoint = train_model.fn(root, "run-1", snapshot["snapshot_id"], CONFIG)
    metrics = evaluate_model.fn(
        root, "run-1", checkpoint, snapshot["snapshot_id"], "digits-lenet"
    )
    registered = register_model.fn(root, "run-1", "digits-lenet")
    return {
        "root": root,
        "snapshot": snapshot,
        "checkpoint": checkpoint,
        "metrics": metrics,
        "registered": registered,
    }


def test_ingest_returns_the_snapshot_and_its_dataset(chain: dict) -> None:
    assert chain["snapshot"]["dataset"] == "digits"
    again = ingest_snapshot.fn(chain["root"], SourceSpec("digits"))
    assert again == chain["snapshot"]


def test_train_writes_history_and_a_self_contained_checkpoint(chain: dict) -> None:
    folder = Path(chain["root"]) / "runs" / "run-1"
    history = read_table(folder / "training_history.parquet", TrainingHistory)
    assert history["epoch"].tolist() == [1, 2]
    checkpoint = load_checkpoint(Path(chain["checkpoint"]))
    assert checkpoint["config"]["epochs"] == 2
    assert checkpoint["snapshot_id"] == chain["snapshot"]["snapshot_id"]
    assert checkpoint["class_names"] == [str(digit) for digit in range(10)]


def test_confusion_table_agrees_with_scikit_learn(chain: dict) -> None:
    folder = Path(chain["root"]) / "runs" / "run-1"
    cells = read_table(folder / "confusion.parquet", ConfusionMatrix)
    test = cells[cells["split"] == "test"]
    matrix = np.zeros((10, 10), dtype=np.int64)
    matrix[test["true_index"], test["predicted_index"]] = test["count"]
    # Rebuild (truth, prediction) pairs from the matrix and count them again.
    truth = np.repeat(test["true_index"].to_numpy(), test["count"].to_numpy())
    predicted = np.repeat(test["predicted_index"].to_numpy(), test["count"].to_numpy())
    np.testing.assert_array_equal(
        sklearn_confusion(truth, predicted, labels=range(10)), matrix
    )
    metrics = read_table(Path(chain["metrics"]), Metrics)
    accuracy = metrics[
        (metrics["split"] == "test")
        & (metrics["metric"] == "accuracy")
        & metrics["average"].isna()
    ]["value"].item()
    assert accuracy == pytest.approx(np.trace(matrix) / matrix.sum())


def test_register_stamps_the_version_and_names_a_champion(chain: dict) -> None:
    assert chain["registered"] == {
        "model_name": "digits-lenet",
        "version": 1,
        "champion": True,
    }
    metrics = read_table(Path(chain["metrics"]), Metrics)
    assert (metrics["model_version"] == 1).all()
    assert aliases(Path(chain["root"]), "digits-lenet") == {"champion": 1}


def test_resolve_model_gives_the_card_baseline(chain: dict) -> None:
    found = resolve_model.fn(chain["root"], "digits-lenet", "champion", None)
    metrics = read_table(Path(chain["metrics"]), Metrics)
    test = metrics[(metrics["split"] == "test") & metrics["class_index"].isna()]
    accuracy = test[test["metric"] == "accuracy"]["value"].item()
    assert found["model_version"] == 1
    assert found["baseline"]["accuracy"] == pytest.approx(accuracy, abs=5e-5)


def test_a_second_environment_keeps_the_first_one_s_rows(chain: dict) -> None:
    evaluate_model.fn(
        chain["root"],
        "run-1",
        chain["checkpoint"],
        chain["snapshot"]["snapshot_id"],
        "digits-lenet",
        1,
        ("test",),
        "again",
    )
    metrics = read_table(Path(chain["metrics"]), Metrics)
    counts = metrics.groupby(["environment", "split"]).size()
    assert counts[("again", "test")] == counts[("clean", "test")]
    assert ("clean", "validation") in counts.index


def test_the_epoch_line_has_a_fixed_format() -> None:
    row = EpochStats(
        epoch=3,
        train_loss=0.5,
        train_accuracy=0.8,
        val_loss=0.25,
        val_accuracy=0.9,
        learning_rate=0.001,
        seconds=1.5,
        samples_per_second=1234.0,
        peak_memory_bytes=3 * 1024 * 1024,
    )
    assert epoch_line(row, 40) == (
        "epoch   3/40 | train loss 0.5000 acc 0.8000 | val loss 0.2500 acc 0.9000 "
        "| lr 1.00e-03 | 1.50 s | 1,234 samples/s | peak 3 MiB"
    )


def image_tree(folder: Path, size: int, mode: str = "RGB") -> Path:
    """Ten class folders '0'..'9' of small solid images."""
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
        for index in range(5):
            pixels = np.full(shape, 20 * index, np.uint8)
            Image.fromarray(pixels, mode).save(folder / str(label) / f"{index}.png")
    return folder


def test_evaluating_on_images_of_another_shape_is_refused(
    chain: dict, tmp_path: Path
) -> None:
    tree = image_tree(tmp_path / "rgb", size=4)
    other = ingest_snapshot.fn(chain["root"], SourceSpec("imagefolder", tree))
    with pytest.raises(
        DatasetError, match="has images of 4x4x3 .* expected the model's 8x8x1"
    ):
        evaluate_model.fn(
            chain["root"], "run-2", chain["checkpoint"], other["snapshot_id"], "m"
        )
    assert not (Path(chain["root"]) / "runs" / "run-2").exists()


def test_training_on_images_too_small_for_the_network_is_refused(
    chain: dict, tmp_path: Path
) -> None:
    tree = image_tree(tmp_path / "dots", size=1, mode="L")
    tiny = ingest_snapshot.fn(chain["root"], SourceSpec("imagefolder", tree))
    with pytest.raises(
        DatasetError, match="does not fit lenet: images of 1x1 are too small"
    ):
        train_model.fn(chain["root"], "run-3", tiny["snapshot_id"], CONFIG)
    assert not (Path(chain["root"]) / "runs" / "run-3").exists()


def test_a_name_holds_models_of_one_kind_only(chain: dict, tmp_path: Path) -> None:
    tree = image_tree(tmp_path / "rgb", size=4)
    other = ingest_snapshot.fn(chain["root"], SourceSpec("imagefolder", tree))
    with pytest.raises(
        DatasetError, match="model 'digits-lenet' cannot take this data"
    ):
        check_model_name_for.fn(chain["root"], "digits-lenet", other["snapshot_id"])
    assert check_model_name_for.fn(chain["root"], "rgb-lenet", other["snapshot_id"])


def test_champions_are_compared_on_the_same_test_split(chain: dict) -> None:
    root = chain["root"]
    # Another seed splits the digits differently: a new snapshot, new test set.
    reshuffled = ingest_snapshot.fn(root, SourceSpec("digits", seed=1))
    assert reshuffled["snapshot_id"] != chain["snapshot"]["snapshot_id"]
    config = TrainConfig(optimizer="adam", learning_rate=0.003, epochs=3, seed=1)
    checkpoint = train_model.fn(root, "run-4", reshuffled["snapshot_id"], config)
    evaluate_model.fn(root, "run-4", checkpoint, reshuffled["snapshot_id"], "d")
    registered = register_model.fn(root, "run-4", "digits-lenet")

    # The champion's accuracy on the new test split, computed here directly.
    snapshot = find_snapshot(Path(root), reshuffled["snapshot_id"])
    images, labels = load_split(snapshot, "test")
    champion = network_from_checkpoint(load_checkpoint(Path(chain["checkpoint"])))
    predicted = champion(torch.from_numpy(images)).argmax(dim=1).numpy()
    champion_accuracy = round(accuracy_score(labels, predicted), 4)
    candidate = read_table(Path(root) / "runs" / "run-4" / "metrics.parquet", Metrics)
    candidate_accuracy = candidate[
        (candidate["split"] == "test") & (candidate["metric"] == "accuracy")
    ]["value"].item()
    assert registered["champion"] is (round(candidate_accuracy, 4) > champion_accuracy)
    if registered["champion"]:
        reason = alias_events(Path(root), "digits-lenet")["reason"].iloc[-1]
        assert f"{champion_accuracy:.4f} on the same test split" in reason
