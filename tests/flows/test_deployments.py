"""The deployments and the nightly schedule."""

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule

from flows.deployments import build_deployments, nightly_schedule
from tasks.errors import VigilError

UTC = ZoneInfo("UTC")


def next_runs(timezone: str, start: date, count: int) -> list[datetime]:
    """Run times as Prefect's server computes them from vigil's schedule."""
    schedule = nightly_schedule(timezone=timezone)
    server_side = ServerCronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    # Local midnight, so that the first run is 02:00 on ``start`` itself.
    moment = datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(timezone))
    return asyncio.run(server_side.get_dates(count, start=moment))


def two_oclock(day: date, timezone: str) -> datetime:
    """02:00 on ``day`` in ``timezone``, as an instant in UTC (zoneinfo's rules)."""
    local = datetime(day.year, day.month, day.day, 2, tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


@pytest.mark.parametrize(
    "timezone, first_day",
    [
        ("UTC", date(2026, 12, 4)),
        ("Europe/London", date(2027, 3, 26)),  # clocks go forward on 28 March
        ("Europe/London", date(2026, 10, 23)),  # and back on 25 October
        ("America/New_York", date(2027, 3, 12)),  # 02:00 is skipped on 14 March
        ("Australia/Sydney", date(2026, 10, 2)),  # forward on 4 October
    ],
    ids=["utc", "london-spring", "london-autumn", "new-york-spring", "sydney-spring"],
)
def test_nightly_runs_at_two_in_the_configured_zone(
    timezone: str, first_day: date
) -> None:
    runs = next_runs(timezone, first_day, 5)
    expected = [two_oclock(first_day + timedelta(days=n), timezone) for n in range(5)]
    assert [run.astimezone(UTC) for run in runs] == expected
    offsets = {
        two_oclock(first_day + timedelta(days=n), timezone).utcoffset()
        for n in range(5)
    }
    assert offsets  # one offset in UTC; two where the window crosses a change


def test_a_daylight_saving_change_moves_the_utc_time() -> None:
    runs = next_runs("Europe/London", date(2027, 3, 27), 2)
    assert [run.astimezone(UTC).hour for run in runs] == [2, 1]
    london = [run.astimezone(ZoneInfo("Europe/London")).hour for run in runs]
    assert london == [2, 2]


def test_a_skipped_two_oclock_runs_at_three_that_night() -> None:
    # New York has no 02:00 on 14 March 2027: the run comes at 03:00 EDT.
    runs = next_runs("America/New_York", date(2027, 3, 14), 1)
    local = runs[0].astimezone(ZoneInfo("America/New_York"))
    assert (local.day, local.hour) == (14, 3)


@pytest.mark.parametrize(
    "cron, timezone, expected",
    [
        ("0 2 * *", "UTC", "invalid nightly cron"),
        ("0 2 * * *", "Mars/Olympus_Mons", "invalid nightly timezone"),
    ],
    ids=["four-field-cron", "unknown-zone"],
)
def test_bad_schedules_are_refused(cron: str, timezone: str, expected: str) -> None:
    with pytest.raises(VigilError, match=expected):
        nightly_schedule(cron, timezone)


def test_three_deployments_and_only_the_nightly_one_is_scheduled() -> None:
    deployments = build_deployments(timezone="Europe/Berlin")
    names = [f"{d.flow_name}/{d.name}" for d in deployments]
    assert names == ["pipeline/on-demand", "evaluate/on-demand", "reevaluate/nightly"]
    schedules = {f"{d.flow_name}/{d.name}": d.schedules for d in deployments}
    assert not schedules["pipeline/on-demand"]
    assert not schedules["evaluate/on-demand"]
    (nightly,) = schedules["reevaluate/nightly"]
    assert nightly.schedule.cron == "0 2 * * *"
    assert nightly.schedule.timezone == "Europe/Berlin"
    assert nightly.active is not False
