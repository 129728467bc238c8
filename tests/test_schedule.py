"""Which day a run of the daily DAG processes, on Airflow's own timetable (the one the scheduler uses):
scheduled, caught up, backfilled, manual with a date, and REST or asset-triggered runs without a logical date."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import date, time, timedelta
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import TimeRestriction

from sunat_pipeline.orchestration import schedule
from sunat_pipeline.settings import OperationsSettings, get_settings

ROOT = Path(__file__).resolve().parent.parent
LIMA = "America/Lima"


def _timetable(ops: OperationsSettings):
    return coerce_to_core_timetable(schedule.daily_timetable(ops))


def _runs(ops: OperationsSettings, n: int, latest=None):
    """The first ``n`` scheduled runs from the start date, as the scheduler makes them with catchup on."""
    tt = _timetable(ops)
    restriction = TimeRestriction(earliest=schedule.start_date(ops), latest=latest, catchup=True)
    runs, last = [], None
    for _ in range(n):
        info = tt.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None:
            break
        runs.append(info)
        last = info.data_interval
    return runs


def _day(info) -> date:
    return schedule.processing_day({"params": {}, "data_interval_end": info.data_interval.end}, LIMA)


def test_a_run_at_6_in_lima_processes_the_previous_day():
    ops = get_settings().operations
    tt = _timetable(ops)
    # The run the scheduler makes after 2026-03-04 fires at 2026-03-05 06:00 Lima (11:00 UTC) for 2026-03-04.
    after = pendulum.datetime(2026, 3, 4, 12, 0, tz="UTC")
    info = tt.next_dagrun_info(last_automated_data_interval=None,
                               restriction=TimeRestriction(earliest=after, latest=None, catchup=True))
    assert info.run_after == pendulum.datetime(2026, 3, 5, 11, 0, tz="UTC")
    assert info.run_after.in_timezone(LIMA).time() == time(6, 0)
    assert _day(info) == date(2026, 3, 4)
    # Late in the evening in Lima it is already the next day in UTC: the day is Lima's, not UTC's.
    late = OperationsSettings(daily_at=time(22, 30), deadline_at=time(23, 30))
    info = _timetable(late).next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(
        earliest=pendulum.datetime(2026, 3, 5, 12, 0, tz="UTC"), latest=None, catchup=True))
    assert info.run_after == pendulum.datetime(2026, 3, 6, 3, 30, tz="UTC")  # 2026-03-05 22:30 in Lima
    assert _day(info) == date(2026, 3, 4)


def test_missed_days_are_caught_up_one_day_each_from_the_start_date():
    ops = OperationsSettings(start_date=date(2026, 2, 25))
    runs = _runs(ops, 10, latest=pendulum.datetime(2026, 3, 3, 12, 0, tz="UTC"))
    # Every day from the start date to the day before "now" (2026-03-03 07:00 Lima), each once, in order.
    assert [_day(r) for r in runs] == [date(2026, 2, 25) + timedelta(days=i) for i in range(6)]


def test_runs_without_a_logical_date_find_their_day():
    run_after = pendulum.datetime(2026, 3, 5, 20, 0, tz="UTC")  # 15:00 in Lima
    # A REST API trigger without a logical date, or an asset-triggered run: no data interval, a run_after.
    ctx = {"params": {"date": None}, "data_interval_end": None, "dag_run": SimpleNamespace(run_after=run_after)}
    assert schedule.processing_day(ctx, LIMA) == date(2026, 3, 4)
    # The date param wins over everything else (a manual re-run of a day).
    assert schedule.processing_day({**ctx, "params": {"date": "2026-01-15"}}, LIMA) == date(2026, 1, 15)
    with pytest.raises(ValueError, match="cannot tell its day"):
        schedule.processing_day({"params": {}, "dag_run": SimpleNamespace(run_after=None)}, LIMA)


def test_a_manual_run_with_a_logical_date_processes_the_day_before_it():
    tt = _timetable(get_settings().operations)
    interval = tt.infer_manual_data_interval(run_after=pendulum.datetime(2026, 3, 5, 14, 0, tz=LIMA))
    assert schedule.processing_day({"params": {}, "data_interval_end": interval.end}, LIMA) == date(2026, 3, 4)


def test_a_drift_request_event_names_the_day_to_retrain_on():
    ev = [SimpleNamespace(extra={"day": "2026-03-02"}), SimpleNamespace(extra={"day": "2026-03-04"})]
    assert schedule.requested_day({"triggering_asset_events": {"a": ev}}) == date(2026, 3, 4)
    assert schedule.requested_day({"triggering_asset_events": {}}) is None


def test_the_deadline_must_follow_the_run():
    assert schedule.deadline_after_run(OperationsSettings()) == timedelta(hours=4)
    with pytest.raises(ValueError):
        schedule.deadline_after_run(OperationsSettings(daily_at=time(6), deadline_at=time(5)))


def test_backfill_creates_one_run_per_day_of_the_window(tmp_path):
    """`airflow backfill create --dry-run` on a real metadata database (no scheduler): the runs it would make
    for the window ``backfill_window`` gives cover exactly the days asked for. (Running them needs the
    scheduler: the topology test of issue 15 item 4.)"""
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path}/airflow.db",
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), SUNAT_LAKE_ROOT=str(tmp_path / "lake"))
    airflow = str(Path(sys.executable).with_name("airflow"))
    for cmd in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([airflow, *cmd], env=env, check=True, capture_output=True, timeout=300)
    first, last = date(2026, 2, 27), date(2026, 3, 2)
    start, end = schedule.backfill_window(get_settings().operations, first, last)
    r = subprocess.run([airflow, "backfill", "create", "--dag-id", "sunat_daily", "--from-date", start,
                        "--to-date", end, "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    logical = re.findall(r"^\| (\d{4}-\d\d-\d\d[ T][\d:]+[+-]\d\d:\d\d) ", r.stdout, flags=re.M)
    # A run's logical date is its data interval's start: the processed day at 06:00 in Lima.
    days = [pendulum.parse(x).in_timezone(LIMA) for x in logical]
    assert [d.date() for d in days] == [first + timedelta(days=i) for i in range(4)]
    assert {d.time() for d in days} == {time(6, 0)}
    # The embedded Airflow's setup creates the champion's one-slot pool (without it the tasks never run).
    from sunat_pipeline.orchestration.runner import ensure_pool

    ensure_pool(get_settings(airflow_home=tmp_path), env)
    pools = subprocess.run([airflow, "pools", "list", "-o", "json"], env=env, capture_output=True, text=True,
                           timeout=300, check=True).stdout
    pool = [p for p in json.loads(pools[pools.index("["):]) if p["pool"] == "sunat_champion"]
    assert [int(p["slots"]) for p in pool] == [1]
