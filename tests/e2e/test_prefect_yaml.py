"""prefect.yaml: `prefect deploy --all` onto a process pool, run by a worker."""

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


@pytest.fixture(scope="module")
def deployed(
    start_prefect_server, run_vigil, run_prefect, tmp_path_factory
) -> Iterator[dict]:
    """A server of its own with the prefect.yaml deployments and a champion."""
    home = tmp_path_factory.mktemp("yaml-home")
    root = tmp_path_factory.mktemp("yaml-store")
    with start_prefect_server(home) as server:
        # `{{ $PWD }}` in prefect.yaml is the folder `prefect deploy` runs in.
        env = {**server["env"], "VIGIL_ARTIFACT_ROOT": str(root), "PWD": str(REPO)}
        fast = ["--optimizer", "adam", "--learning-rate", "0.003", "--epochs", "3"]
        assert run_vigil("run", *fast, env=env, cwd=root).returncode == 0
        for command in (
            ["work-pool", "create", "vigil-process", "--type", "process"],
            ["deploy", "--all"],
        ):
            result = run_prefect("--no-prompt", *command, env=env, cwd=REPO)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        yield {"env": env, "root": root, "url": server["url"]}


def test_deploy_all_creates_the_three_deployments_on_the_pool(deployed: dict) -> None:
    with (
        temporary_settings({PREFECT_API_URL: deployed["url"]}),
        get_client(sync_client=True) as client,
    ):
        flows = {flow.id: flow.name for flow in client.read_flows()}
        found = {f"{flows[d.flow_id]}/{d.name}": d for d in client.read_deployments()}
    assert set(found) == {
        "pipeline/on-demand",
        "evaluate/on-demand",
        "reevaluate/nightly",
    }
    assert {d.work_pool_name for d in found.values()} == {"vigil-process"}
    (schedule,) = found["reevaluate/nightly"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert schedule.active


def test_a_process_worker_runs_the_nightly_deployment(
    deployed: dict, tmp_path: Path, run_prefect
) -> None:
    env = {**deployed["env"], "PREFECT_WORKER_QUERY_SECONDS": "2"}
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "vigil-process"],
            env=env,
            cwd=deployed["root"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            result = run_prefect(
                "deployment",
                "run",
                "reevaluate/nightly",
                "--watch",
                env=env,
                cwd=deployed["root"],
            )
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]
    run_id = re.search(r"UUID:\s+([0-9a-f-]{36})", result.stdout).group(1)
    assert (deployed["root"] / "runs" / run_id / "metrics.parquet").is_file()
