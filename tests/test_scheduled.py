"""Days through Airflow's scheduler on the embedded SQLite database, as `make demo` runs them
(sunat_pipeline/orchestration/scheduled.py): a real api-server, scheduler (LocalExecutor) and DAG processor;
each day one backfill run with the scheduled run's logical date and data interval, the inspections between
days. Every run left in the metadata database is a backfill run that started after it was created and took
minutes, not months (what `airflow dags test` records); the DAG is left on with its next run the day after the
last one (as in production, not paused with no next run) and every process is gone."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime, timedelta

import pandas as pd
import pytest
from tinyworld import LEARNABLE_WORLD

from sunat_pipeline.orchestration import schedule
from sunat_pipeline.orchestration.scheduled import ScheduledAirflow
from sunat_sim.inspection import inspect_day

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tiny_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scheduled")
    world = tiny_world(LEARNABLE_WORLD)
    s = world.copy(tmp, airflow_home=tmp / "airflow")
    days = world.cfg.live_dates[:2]
    with ScheduledAirflow(s, "sunat_daily") as af:
        for d in days:
            assert af.run_day(d) == "success"
            inspect_day(s, d)
            # What the DAG processor does every few minutes: with catch-up on, the scheduler would then make runs
            # from the day after this backfill run up to today.
            af._cli("dags", "reserialize")
        procs = list(af.procs.values())
    with contextlib.closing(sqlite3.connect(s.airflow_home_path / "airflow.db")) as c:
        runs = pd.read_sql("select run_id, run_type, state, created_at, queued_at, start_date, end_date, "
                           "data_interval_end from dag_run where dag_id = 'sunat_daily' order by id", c)
        paused, next_run = c.execute("select is_paused, next_dagrun_data_interval_end from dag "
                                     "where dag_id = 'sunat_daily'").fetchone()
        tasks = c.execute("select count(*) from task_instance where dag_id = 'sunat_daily' and hostname != ''"
                          ).fetchone()[0]
    return {"settings": s, "days": days, "runs": runs, "paused": paused, "next_run": next_run, "procs": procs,
            "tasks": tasks}


def test_each_day_is_one_scheduler_run_of_its_data_interval(demo):
    runs, s = demo["runs"], demo["settings"]
    assert list(runs.state) == ["success", "success"] and set(runs.run_type) == {"backfill"}
    ends = [pd.Timestamp(e, tz="UTC") for e in runs.data_interval_end]
    assert ends == [pd.Timestamp(schedule.run_time(s.operations, d)) for d in demo["days"]]
    for d in demo["days"]:
        assert len(pd.read_parquet(s.scored_dir / f"declaration_date={d}" / "part-0.parquet")) > 0
    assert demo["tasks"] == 28  # every task of both runs ran in a worker of the scheduler's executor


def test_every_run_started_after_its_creation_and_took_minutes(demo):
    for r in demo["runs"].itertuples():
        created, start, end = (datetime.fromisoformat(x) for x in (r.created_at, r.start_date, r.end_date))
        assert created < start < end, r
        assert end - start < timedelta(minutes=10), r


def test_the_dag_is_left_on_with_the_next_day_as_its_next_run_and_every_process_stopped(demo):
    # Before: paused, with no next run (the UI after `make demo` showed a switched-off DAG).
    assert demo["paused"] == 0
    # The next run's data interval ends at the run time of the day after the last one run (it processes that day).
    after_last = schedule.run_time(demo["settings"].operations, demo["days"][-1] + timedelta(days=1))
    assert pd.Timestamp(demo["next_run"], tz="UTC") == pd.Timestamp(after_last)
    assert all(p.poll() is not None for p in demo["procs"])
