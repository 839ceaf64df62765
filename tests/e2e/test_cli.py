"""The ``vigil`` command line as a user runs it, against a real Prefect server."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model.training import TrainConfig
from tasks.schemas import Metrics
from tasks.store import read_table


@pytest.fixture
def env(prefect_server: dict, tmp_path: Path) -> dict:
    """The server's environment with a fresh artifact root."""
    return {**prefect_server["env"], "VIGIL_ARTIFACT_ROOT": str(tmp_path / "store")}


@pytest.fixture(scope="module")
def trained(prefect_server: dict, run_vigil, tmp_path_factory) -> dict:
    """`vigil run` with its defaults, once for the module."""
    root = tmp_path_factory.mktemp("trained")
    env = {**prefect_server["env"], "VIGIL_ARTIFACT_ROOT": str(root)}
    result = run_vigil("run", env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"env": env, "root": root, "result": result}


def test_vigil_run_passes_95_percent_on_digits(trained: dict) -> None:
    root = trained["root"]
    (metrics_path,) = root.glob("runs/*/metrics.parquet")
    metrics = read_table(metrics_path, Metrics)
    accuracy = metrics[
        (metrics["split"] == "test")
        & (metrics["metric"] == "accuracy")
        & metrics["average"].isna()
    ]["value"].item()
    assert accuracy >= 0.95
    assert f"{accuracy:.4f}" in trained["result"].stdout
    assert "digits-lenet version 1 (champion)" in trained["result"].stdout
    assert (root / "models" / "digits-lenet" / "1" / "model.pt").is_file()
    card = json.loads((root / "models/digits-lenet/1/card.json").read_text())
    assert card["metrics"]["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_progress_lines_reach_the_run_logs(trained: dict) -> None:
    epochs = TrainConfig().epochs
    pattern = re.compile(rf"epoch +\d+/{epochs} \| train loss \d\.\d{{4}} acc ")
    lines = [
        line for line in trained["result"].stderr.splitlines() if pattern.search(line)
    ]
    assert len(lines) == epochs
    assert "samples/s" in lines[0] and "peak" in lines[0]


def test_artifacts_list_names_dataset_run_and_model(trained: dict, run_vigil) -> None:
    listed = run_vigil("artifacts", "list", env=trained["env"], cwd=trained["root"])
    assert listed.returncode == 0, listed.stderr
    assert "digits" in listed.stdout and "champion" in listed.stdout
    assert "pipeline" in listed.stdout


def test_artifacts_show_validates_and_names_the_schema(
    trained: dict, run_vigil
) -> None:
    (run,) = (trained["root"] / "runs").iterdir()
    shown = run_vigil(
        "artifacts",
        "show",
        f"runs/{run.name[:8]}/metrics",
        env=trained["env"],
        cwd=trained["root"],
    )
    assert shown.returncode == 0, shown.stderr
    assert "valid against schema Metrics" in shown.stdout


def write_png(path: Path, size: tuple[int, int], value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def image_tree(root: Path, per_class: int = 5) -> Path:
    for label in ("a", "b"):
        for index in range(per_class):
            write_png(root / label / f"{index}.png", (8, 8), 40 * index)
    return root


def corrupt_image(tmp: Path) -> list[str]:
    tree = image_tree(tmp / "tree")
    (tree / "a" / "broken.png").write_bytes(b"not a png at all")
    return ["run", "--source", "imagefolder", "--data", str(tree)]


def mixed_sizes(tmp: Path) -> list[str]:
    tree = image_tree(tmp / "tree")
    write_png(tree / "b" / "big.png", (9, 9))
    return ["run", "--source", "imagefolder", "--data", str(tree)]


def empty_split(tmp: Path) -> list[str]:
    # One image per class: a 20% test split of each class is empty.
    tree = image_tree(tmp / "tree", per_class=1)
    return ["run", "--source", "imagefolder", "--data", str(tree)]


def labels_out_of_range(tmp: Path) -> list[str]:
    buffer = Path(tmp / "one.png")
    write_png(buffer, (8, 8))
    encoded = buffer.read_bytes()
    table = pa.table(
        {
            "img": [{"bytes": encoded, "path": f"{i}.png"} for i in range(10)],
            "label": [0, 1, 0, 1, 0, 1, 0, 1, 0, 7],
        }
    )
    names = {"info": {"features": {"label": {"names": ["zero", "one"]}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(names)})
    pq.write_table(table, tmp / "images.parquet")
    return ["run", "--source", "parquet", "--data", str(tmp / "images.parquet")]


def schema_breaking_table(tmp: Path) -> list[str]:
    # A metrics table edited by another tool: a negative count in row 1.
    frame = pd.DataFrame(
        {
            "run_id": ["r", "r"],
            "model_name": ["m", "m"],
            "model_version": [1, 1],
            "snapshot_id": ["s", "s"],
            "split": ["test", "test"],
            "environment": ["clean", "clean"],
            "metric": ["accuracy", "support"],
            "average": [None, None],
            "class_index": [None, 0],
            "class_name": [None, "a"],
            "value": [0.9, 3.0],
            "lower": [0.8, None],
            "upper": [0.95, None],
            "count": [10, -3],
        }
    )
    frame.to_parquet(tmp / "metrics.parquet")
    return ["artifacts", "show", str(tmp / "metrics.parquet")]


BAD_INPUTS = {
    "missing-dataset-path": (
        lambda tmp: ["run", "--source", "imagefolder", "--data", str(tmp / "nowhere")],
        "does not exist",
    ),
    "unknown-source": (
        lambda tmp: ["run", "--source", "nope"],
        "unknown source 'nope'",
    ),
    "unknown-architecture": (
        lambda tmp: ["run", "--architecture", "resnet9000"],
        "unknown architecture 'resnet9000'; expected one of: lenet",
    ),
    "unknown-optimizer": (
        lambda tmp: ["run", "--optimizer", "rmsprop"],
        "unknown optimizer 'rmsprop'",
    ),
    "validation-fraction-out-of-range": (
        lambda tmp: ["run", "--validation-fraction", "1.5"],
        "validation_fraction 1.5 is out of range",
    ),
    "unknown-device": (
        lambda tmp: ["run", "--device", "tpu"],
        "unknown device 'tpu'",
    ),
    "corrupt-image": (corrupt_image, "broken.png"),
    "labels-out-of-range": (labels_out_of_range, "7"),
    "mixed-image-sizes": (mixed_sizes, "big.png"),
    "empty-split": (empty_split, "empty"),
    "table-breaking-its-schema": (
        schema_breaking_table,
        r"breaks schema Metrics: column 'count' fails greater_than_or_equal_to\(0\) "
        r"at rows \[1\]",
    ),
    "unknown-model": (
        lambda tmp: ["evaluate", "--model", "nobody"],
        "no model named 'nobody'",
    ),
    "unknown-run-id": (
        lambda tmp: ["evaluate", "--run", "0000dead"],
        "no run '0000dead'",
    ),
    "unknown-snapshot": (
        lambda tmp: ["train", "--snapshot", "feedfacefeedface"],
        "no snapshot 'feedfacefeedface'",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_ends_in_one_line_and_writes_nothing(
    case: str, env: dict, tmp_path: Path, run_vigil
) -> None:
    make_arguments, expected = BAD_INPUTS[case]
    arguments = make_arguments(tmp_path)
    result = run_vigil(*arguments, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(expected, errors[0]), errors[0]
    store = Path(env["VIGIL_ARTIFACT_ROOT"])
    written = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    assert written == []


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["evaluate", "--model", "digits-lenet", "--version", "99"], "no version 99"),
        (
            ["evaluate", "--model", "digits-lenet", "--version", "best"],
            "no alias 'best'",
        ),
        (["artifacts", "show", "runs/0000dead/metrics"], "no table"),
    ],
    ids=["unknown-model-version", "unknown-alias", "unknown-run-table"],
)
def test_unknown_references_in_a_real_store(
    trained: dict, arguments: list[str], expected: str, run_vigil
) -> None:
    before = sorted(p for p in trained["root"].rglob("*") if p.is_file())
    result = run_vigil(*arguments, env=trained["env"], cwd=trained["root"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    assert expected in result.stderr
    after = sorted(p for p in trained["root"].rglob("*") if p.is_file())
    assert after == before


def test_without_an_api_url_vigil_uses_a_temporary_server(
    tmp_path: Path, run_vigil
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "home"), VIGIL_ARTIFACT_ROOT=str(tmp_path))
    result = run_vigil("ingest", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Starting temporary server" in result.stderr
    assert list(tmp_path.glob("datasets/digits/*/snapshot.json"))


def test_sigterm_stops_the_temporary_server_and_leaves_no_half_artifact(
    tmp_path: Path,
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "home"), VIGIL_ARTIFACT_ROOT=str(tmp_path))
    vigil = Path(sys.executable).parent / "vigil"
    process = subprocess.Popen(
        [str(vigil), "run"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    port = None
    for line in process.stderr:
        started = re.search(
            r"Starting temporary server on http://127\.0\.0\.1:(\d+)", line
        )
        port = int(started.group(1)) if started else port
        if re.search(r"epoch +2/", line):
            break
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert port is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "temporary server still up"
    leftovers = [p for p in tmp_path.rglob(".*") if "home" not in p.parts]
    assert leftovers == []
