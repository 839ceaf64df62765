"""The nightly re-evaluation as users run it: served, triggered, watched."""

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.history import read_history
from tasks.schemas import Metrics
from tasks.store import read_table

VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"
SERVE_READY_SECONDS = 120


@pytest.fixture(scope="module")
def store(prefect_server: dict, run_vigil, tmp_path_factory) -> dict:
    """An artifact root with a registered champion, digits-lenet version 1."""
    root = tmp_path_factory.mktemp("nightly")
    env = {
        **prefect_server["env"],
        "VIGIL_ARTIFACT_ROOT": str(root),
        # The served runner looks for new runs every 2 s instead of 10 s.
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    arguments = ["--optimizer", "adam", "--learning-rate", "0.003", "--epochs", "4"]
    trained = run_vigil("run", *arguments, env=env, cwd=root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return {"env": env, "root": root, "url": prefect_server["url"]}


@pytest.fixture(scope="module")
def served(store: dict) -> Iterator[subprocess.Popen]:
    """`vigil serve` in its own process, stopped by its id afterwards."""
    log = open(store["root"] / "serve.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(VENV_BIN / "vigil"), "serve", "--timezone", "Europe/Berlin"],
        env=store["env"],
        cwd=store["root"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_deployments(store["url"], process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for_deployments(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVE_READY_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "vigil serve exited early"
        if len(deployments(url)) == 3:
            return
        time.sleep(1)
    raise AssertionError("vigil serve did not register its deployments")


def deployments(url: str) -> dict:
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as c:
        flows = {flow.id: flow.name for flow in c.read_flows()}
        return {
            f"{flows[d.flow_id]}/{d.name}": {
                "paused": d.paused,
                "schedules": c.read_deployment_schedules(d.id),
            }
            for d in c.read_deployments()
        }


def flow_run(url: str, run_id: str):
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as c:
        return c.read_flow_run(run_id)


def created_run_id(output: str) -> str:
    match = re.search(r"UUID:\s+([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def history_runs(root: Path) -> dict[str, int]:
    history, problems = read_history(root)
    assert problems == []
    return history.groupby("run_id").size().to_dict()


def test_serve_registers_three_deployments_with_the_nightly_schedule(
    store: dict, served: subprocess.Popen
) -> None:
    found = deployments(store["url"])
    assert set(found) == {
        "pipeline/on-demand",
        "evaluate/on-demand",
        "reevaluate/nightly",
    }
    (schedule,) = found["reevaluate/nightly"]["schedules"]
    assert schedule.active
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"


def test_a_triggered_nightly_run_completes_and_appends_its_rows(
    store: dict, served: subprocess.Popen, run_prefect
) -> None:
    before = history_runs(store["root"])
    # As the README shows it: a version number and a threshold as parameters.
    result = run_prefect(
        "deployment",
        "run",
        "reevaluate/nightly",
        "--watch",
        "--param",
        "model_name=digits-lenet",
        "--param",
        "version=1",
        "--param",
        'thresholds={"accuracy": 0.05}',
        env=store["env"],
        cwd=store["root"],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_id = created_run_id(result.stdout)
    assert flow_run(store["url"], run_id).state.is_completed()

    after = history_runs(store["root"])
    assert set(after) - set(before) == {run_id}
    metrics = read_table(store["root"] / "runs" / run_id / "metrics.parquet", Metrics)
    assert after[run_id] == len(metrics)


def test_a_run_on_data_the_model_misreads_ends_failed_with_the_cause(
    store: dict, served: subprocess.Popen, inverted_digits: Path, run_prefect
) -> None:
    data = inverted_digits
    result = run_prefect(
        "deployment",
        "run",
        "reevaluate/nightly",
        "--watch",
        "--param",
        "source=imagefolder",
        "--param",
        f"data={data}",
        env=store["env"],
        cwd=store["root"],
    )
    assert result.returncode == 1
    run_id = created_run_id(result.stdout)
    state = flow_run(store["url"], run_id).state
    assert state.is_failed()
    assert re.search(
        r"model digits-lenet version 1 degraded: accuracy 0\.\d{4} < baseline "
        r"0\.\d{4} - threshold 0\.0200",
        state.message,
    ), state.message
    inspected = run_prefect(
        "flow-run", "inspect", run_id, env=store["env"], cwd=store["root"]
    )
    assert "degraded: accuracy" in inspected.stdout


def test_vigil_status_reports_deployments_and_runs(
    store: dict, served: subprocess.Popen, run_vigil
) -> None:
    result = run_vigil("status", env=store["env"], cwd=store["root"])
    assert result.returncode == 0, result.stderr
    assert "reevaluate/nightly" in result.stdout
    assert "0 2 * * * Europe/Berlin" in result.stdout
    assert "Completed" in result.stdout and "Failed" in result.stdout
    # The next nightly run: 02:00 in Berlin, 01:00 or 00:00 UTC by the season.
    assert re.search(r"\d{4}-\d\d-\d\d 0[01]:00:00 UTC", result.stdout)
    assert "degraded: accuracy" in result.stdout


def test_stopping_serve_leaves_the_schedule_active(
    store: dict, served: subprocess.Popen
) -> None:
    served.terminate()
    served.wait(timeout=30)
    nightly = deployments(store["url"])["reevaluate/nightly"]
    assert nightly["paused"] is False
    assert all(schedule.active for schedule in nightly["schedules"])


def test_vigil_history_prints_the_runs_of_the_nightly(store: dict, run_vigil) -> None:
    shown = run_vigil(
        "history",
        "--metric",
        "accuracy",
        "--split",
        "test",
        env=store["env"],
        cwd=store["root"],
    )
    assert shown.returncode == 0, shown.stderr
    history, _ = read_history(store["root"], metric="accuracy", split="test")
    overall = history[history["class_index"].isna()]
    assert len(overall) >= 2  # the healthy and the degraded run
    for value in overall["value"].round(4):
        assert f"{value}" in shown.stdout
    refused = run_vigil(
        "history", "--metric", "bogus", env=store["env"], cwd=store["root"]
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("error: unknown metric 'bogus'")
