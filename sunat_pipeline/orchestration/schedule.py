"""When the DAGs run and which day a run processes (docs/operations.md).

The daily DAG fires at ``operations.daily_at`` local time (default 06:00 America/Lima) and processes the
previous local day: its data interval is the day before the run (a ``CronTriggerTimetable`` with a one-day
interval), so a run at D 06:00 Lima has the interval (D-1 06:00, D 06:00] and processes D-1. Days the
scheduler missed are caught up in order (``catchup`` with one active run), and ``airflow backfill create``
makes the same runs for a range.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sunat_pipeline.settings import OperationsSettings

DAY = timedelta(days=1)


def daily_timetable(ops: OperationsSettings):
    """The daily DAG's timetable: at ``daily_at`` local time, with the day before as its data interval."""
    from airflow.sdk import CronTriggerTimetable

    return CronTriggerTimetable(f"{ops.daily_at.minute} {ops.daily_at.hour} * * *", timezone=ops.timezone,
                                interval=DAY)


def retrain_schedule(ops: OperationsSettings, drift_request):
    """The retraining DAG's schedule: weekly at ``retrain_cron`` local time, or as soon as a drift request
    (the ``drift_request`` asset) is published."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(ops.retrain_cron, timezone=ops.timezone),
                               assets=drift_request)


def run_time(ops: OperationsSettings, day: date) -> datetime:
    """When the scheduled run that processes ``day`` fires: the next day at ``daily_at`` local time."""
    import pendulum

    nxt = day + DAY
    return pendulum.datetime(nxt.year, nxt.month, nxt.day, ops.daily_at.hour, ops.daily_at.minute, tz=ops.timezone)


def start_date(ops: OperationsSettings) -> datetime:
    """The DAG's start date, timezone aware: the run that processes ``ops.start_date``."""
    return run_time(ops, ops.start_date)


def deadline_after_run(ops: OperationsSettings) -> timedelta:
    """How long after the scheduled run time its day must be done (``deadline_at`` - ``daily_at``)."""
    run = timedelta(hours=ops.daily_at.hour, minutes=ops.daily_at.minute)
    due = timedelta(hours=ops.deadline_at.hour, minutes=ops.deadline_at.minute)
    if due <= run:
        raise ValueError(f"operations.deadline_at {ops.deadline_at} must be after daily_at {ops.daily_at}")
    return due - run


def processing_day(context: Any, tz: str) -> date:
    """The day a run processes: the ``date`` param if given; else the local day before its data interval's end
    (scheduled, backfill and manual runs with a logical date); else, for a run without a data interval (a REST
    API trigger without a logical date), the local day before the run was due (``run_after``)."""
    import pendulum

    param = (context.get("params") or {}).get("date")
    if param:
        return date.fromisoformat(str(param))
    end = context.get("data_interval_end")
    if end is None:
        run = context.get("dag_run")
        end = getattr(run, "run_after", None)
    if end is None:
        raise ValueError("the run has no date param, data interval or run_after: cannot tell its day")
    return pendulum.instance(end).in_timezone(tz).date() - DAY


def requested_day(context: Any) -> date | None:
    """The day of the drift request that triggered a run (the latest triggering asset event's ``day``), if any."""
    events = context.get("triggering_asset_events") or {}
    days = [e.extra.get("day") for evs in events.values() for e in evs if getattr(e, "extra", None)]
    days = [d for d in days if d]
    return date.fromisoformat(max(days)) if days else None


def backfill_window(ops: OperationsSettings, first: date, last: date) -> tuple[str, str]:
    """``--from-date`` and ``--to-date`` of ``airflow backfill create`` (both inclusive, on the runs' times) for
    the runs that process the days ``first`` to ``last``."""
    return run_time(ops, first).isoformat(), run_time(ops, last).isoformat()


# The monthly tax run (sunat_tax_monthly): at ``tax_audit.run_at`` local time on day ``tax_audit.run_day`` of
# each month, for the previous month (its data interval: the month before the run, as a one-month interval).
def monthly_timetable(ops: OperationsSettings, run_day: int, run_at):
    """The monthly DAG's timetable: ``run_at`` local time on ``run_day`` of each month, one month's interval."""
    from airflow.sdk import CronTriggerTimetable
    from dateutil.relativedelta import relativedelta

    return CronTriggerTimetable(f"{run_at.minute} {run_at.hour} {run_day} * *", timezone=ops.timezone,
                                interval=relativedelta(months=1))


def monthly_start(ops: OperationsSettings, start_month: str, run_day: int, run_at) -> datetime:
    """The monthly DAG's start date, timezone aware: the run that processes ``start_month`` (``YYYY-MM``)."""
    import pendulum

    y, m = (int(x) for x in start_month.split("-"))
    y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return pendulum.datetime(y, m, run_day, run_at.hour, run_at.minute, tz=ops.timezone)


def processing_month(context: Any, tz: str) -> str:
    """The month (``YYYY-MM``) a monthly run processes: the ``month`` param if given; else the local month
    before the one its data interval ends in (or, without one, the one it was due in)."""
    import pendulum

    param = (context.get("params") or {}).get("month")
    if param:
        return str(param)
    end = context.get("data_interval_end")
    if end is None:
        end = getattr(context.get("dag_run"), "run_after", None)
    if end is None:
        raise ValueError("the run has no month param, data interval or run_after: cannot tell its month")
    first = pendulum.instance(end).in_timezone(tz).date().replace(day=1)
    return (first - DAY).strftime("%Y-%m")
