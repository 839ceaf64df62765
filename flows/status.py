"""What `vigil status` reports: the server, deployments, schedules, runs."""

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

from tasks.errors import VigilError

FLOWS = ["ingest", "train", "evaluate", "pipeline", "reevaluate"]


def read_status(runs: int = 10) -> dict[str, Any]:
    """Ask the configured Prefect server about vigil's deployments and runs."""
    url = PREFECT_API_URL.value()
    if not url:
        raise VigilError(
            "no Prefect server configured; set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api) to the server that runs vigil"
        )
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise VigilError(f"Prefect server at {url} is not reachable: {problem}")
        flows = {
            flow.id: flow.name for flow in client.read_flows(flow_filter=_vigil_flows())
        }
        deployments = client.read_deployments(flow_filter=_vigil_flows())
        recent = client.read_flow_runs(
            flow_filter=_vigil_flows(), sort=FlowRunSort.START_TIME_DESC, limit=runs
        )
        names = {d.id: f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments}
        return {
            "server": url,
            "health": "healthy",
            "deployments": [_describe(d, flows) for d in deployments],
            "runs": [_describe_run(r, flows, names) for r in recent],
        }


def _vigil_flows() -> FlowFilter:
    return FlowFilter(name=FlowFilterName(any_=FLOWS))


def _describe(deployment: Any, flows: dict) -> dict[str, Any]:
    schedules = deployment.schedules or []
    return {
        "deployment": f"{flows.get(deployment.flow_id, '?')}/{deployment.name}",
        "paused": deployment.paused,
        "schedule": ", ".join(
            f"{s.schedule.cron} {s.schedule.timezone}" for s in schedules
        )
        or "on demand",
        "schedule active": ", ".join(str(s.active) for s in schedules) or "-",
        "last polled": _time(deployment.last_polled),
        # READY while something polls for its runs, NOT_READY once nothing has.
        "status": getattr(deployment.status, "value", deployment.status),
    }


def _describe_run(run: Any, flows: dict, deployments: dict) -> dict[str, Any]:
    return {
        "run": run.name,
        "flow": flows.get(run.flow_id, "?"),
        "deployment": deployments.get(run.deployment_id, "-"),
        "state": run.state.name if run.state else "-",
        "start": _time(run.start_time)
        if run.start_time
        else f"{_time(run.expected_start_time)} (expected)",
        "message": (run.state.message or "")[:80] if run.state else "",
    }


def _time(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"
