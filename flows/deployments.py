"""The deployments vigil serves, and the nightly schedule."""

from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from pydantic import ValidationError

from flows.pipeline import evaluate, pipeline
from flows.reevaluate import reevaluate
from tasks.errors import VigilError

NIGHTLY_CRON = "0 2 * * *"
NIGHTLY_TIMEZONE = "UTC"
CRON_ENV = "VIGIL_NIGHTLY_CRON"
TIMEZONE_ENV = "VIGIL_NIGHTLY_TIMEZONE"


def nightly_schedule(
    cron: str = NIGHTLY_CRON, timezone: str = NIGHTLY_TIMEZONE
) -> CronSchedule:
    """The re-evaluation's schedule: 02:00 every day in an explicit time zone."""
    if not timezone.strip():
        raise VigilError("invalid nightly timezone: empty; expected e.g. 'UTC'")
    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as error:
        # Prefect's own check, in one line: which field, and what it expects.
        problem = error.errors()[0]
        raise VigilError(
            f"invalid nightly {problem['loc'][0]}: {problem['msg']}; "
            f"expected e.g. cron '{NIGHTLY_CRON}' and time zone 'UTC' "
            "or 'Europe/Berlin'"
        ) from None


def build_deployments(
    cron: str = NIGHTLY_CRON, timezone: str = NIGHTLY_TIMEZONE
) -> list[RunnerDeployment]:
    """``pipeline/on-demand``, ``evaluate/on-demand`` and ``reevaluate/nightly``."""
    return [
        pipeline.to_deployment(
            name="on-demand",
            description="Ingest, train, evaluate and register, when asked.",
        ),
        evaluate.to_deployment(
            name="on-demand",
            description="Evaluate a registered model, when asked.",
        ),
        reevaluate.to_deployment(
            name="nightly",
            schedules=[nightly_schedule(cron, timezone)],
            description="Re-evaluate the champion every night; fail on degradation.",
        ),
    ]
