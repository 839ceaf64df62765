"""What `vigil status` reports: the server, deployments, schedules, runs."""

from datetime import datetime, timezone
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL

from tasks.errors import VigilError

FLOWS = ["ingest", "train", "evaluate", "pipeline", "reevaluate"]
# Enough for a degradation message naming two metrics.
MESSAGE_CHARACTERS = 160


def now() -> datetime:
    return datetime.now(timezone.utc)


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
        # Runs that are due or done; the nightly's future runs show as "next run".
        recent = client.read_flow_runs(
            flow_filter=_vigil_flows(),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(before_=now())
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=runs,
        )
        upcoming = client.read_flow_runs(
            flow_filter=_vigil_flows(),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=["SCHEDULED"])
                ),
                expected_start_time=FlowRunFilterExpectedStartTime(after_=now()),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )
        next_runs: dict[Any, Any] = {}
        for run in upcoming:
            next_runs.setdefault(run.deployment_id, run.expected_start_time)
        names = {d.id: f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments}
        return {
            "server": url,
            "health": "healthy",
            "deployments": [_describe(d, flows, next_runs) for d in deployments],
            "runs": [_describe_run(r, flows, names) for r in recent],
        }


def _vigil_flows() -> FlowFilter:
    return FlowFilter(name=FlowFilterName(any_=FLOWS))


def _describe(deployment: Any, flows: dict, next_runs: dict) -> dict[str, Any]:
    schedules = deployment.schedules or []
    return {
        "deployment": f"{flows.get(deployment.flow_id, '?')}/{deployment.name}",
        "paused": deployment.paused,
        "schedule": ", ".join(
            f"{s.schedule.cron} {s.schedule.timezone}" for s in schedules
        )
        or "on demand",
        "schedule active": ", ".join(str(s.active) for s in schedules) or "-",
        "next run": _time(next_runs.get(deployment.id)),
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
        "message": (run.state.message or "")[:MESSAGE_CHARACTERS] if run.state else "",
    }


def _time(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"
