"""DAG integrity: every DAG imports without errors, parsing touches no database or network, every task has
retries, a timeout and a failure alert, every DAG has tags and a run timeout, and the tasks that can move the
champion alias share one pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"

# Parse the DAG folder in a fresh interpreter whose sockets refuse to connect and whose metadata
# database does not exist: a DAG file that queried either would fail to import.
_PARSE = r"""
import json, socket, sys
def _no_network(*a, **k):
    raise RuntimeError("network access while parsing DAGs")
socket.socket.connect = _no_network
socket.create_connection = _no_network
import sqlalchemy.engine
def _names(x):
    return [type(c).__name__ for c in (x if isinstance(x, list) else [x] if x else [])]
_orig = sqlalchemy.engine.Engine.connect
def _no_db(self, *a, **k):
    raise RuntimeError("database access while parsing DAGs")
from airflow.dag_processing.dagbag import DagBag
sqlalchemy.engine.Engine.connect = _no_db
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(dag.tags),
        "tasks": {t.task_id: {"retries": t.retries, "pool": t.pool,
                              "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                              "on_failure": _names(t.on_failure_callback),
                              "outlets": sorted(a.name for a in t.outlets),
                              "upstream": sorted(t.upstream_task_ids),
                              "mode": getattr(t, "mode", None),
                              "sensor_timeout_s": getattr(t, "timeout", None) if hasattr(t, "poke") else None}
                  for t in dag.tasks},
        "schedule": str(dag.timetable),
        "timetable": {k: str(getattr(dag.timetable, k, None)) for k in ("expression", "timezone", "interval")},
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "deadline": [type(d.reference).__name__ for d in (dag.deadline if isinstance(dag.deadline, list)
                                                           else [dag.deadline] if dag.deadline else [])],
        "on_failure": _names(dag.on_failure_callback),
        "doc": bool(dag.doc_md),
        "params": {k: dag.params.get_param(k).value for k in dag.params.keys()},
    }
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/missing/never.db",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS))
    r = subprocess.run([sys.executable, "-c", _PARSE, str(DAGS)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")][-1]
    return json.loads(line.removeprefix("RESULT"))


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_expected_dags_present(parsed):
    assert {"sunat_daily", "sunat_retrain", "sunat_backtest"} <= set(parsed["dags"])


def test_every_task_retries_and_every_dag_tagged_and_documented(parsed):
    for dag_id, d in parsed["dags"].items():
        assert d["tags"], f"{dag_id} has no tags"
        assert d["doc"], f"{dag_id} has no doc_md"
        for task_id, t in d["tasks"].items():
            assert t["retries"] >= 1, f"{dag_id}.{task_id} has no retries"


def test_daily_chain_order(parsed):
    tasks = set(parsed["dags"]["sunat_daily"]["tasks"])
    assert {"wait_for_customs_extract", "ingest_customs", "ingest_enforcement", "ingest_tax", "ingest_reference_prices",
            "ingest_exchange_rates", "ingest_permits",
            "reconcile", "train_if_due", "score", "feedback", "kpi_report", "drift_request", "report"} == tasks


def test_daily_run_waits_for_its_extract_without_holding_a_worker(parsed):
    # Before: a run whose customs extract had not landed scored an empty day; now every ingest waits on a sensor
    # in reschedule mode that gives up (and alerts) after operations.extract_wait_h.
    from sunat_pipeline.settings import OperationsSettings

    tasks = parsed["dags"]["sunat_daily"]["tasks"]
    sensor = tasks["wait_for_customs_extract"]
    assert sensor["mode"] == "reschedule" and sensor["upstream"] == []
    assert sensor["sensor_timeout_s"] == 3600 * OperationsSettings().extract_wait_h
    assert all("wait_for_customs_extract" in t["upstream"] for k, t in tasks.items() if k.startswith("ingest_"))


def test_daily_dag_ingests_exactly_the_contract_sources(parsed):
    # The DAG file keeps its own tuple (importing the ingest package at parse time costs the scheduler ~0.4 s):
    # the landing contract (ingest/sources.py) is the one definition, and this keeps the two equal.
    from sunat_pipeline.ingest.sources import DAILY_SOURCES

    tasks = {t.removeprefix("ingest_") for t in parsed["dags"]["sunat_daily"]["tasks"] if t.startswith("ingest_")}
    assert tasks == set(DAILY_SOURCES)


def test_dag_files_keep_heavy_imports_inside_tasks():
    # Parsing must stay fast on the scheduler: no pandas / mlflow / xgboost at module level, and from the
    # project only the asset definitions (airflow.sdk objects).
    for f in DAGS.glob("*.py"):
        top = [ln for ln in f.read_text().splitlines() if ln.startswith(("import ", "from "))]
        heavy = [ln for ln in top if any(m in ln for m in ("pandas", "mlflow", "xgboost", "sklearn"))]
        project = [ln for ln in top if "sunat_pipeline" in ln
                   and not ln.startswith(("from sunat_pipeline.orchestration", "from sunat_pipeline.settings "))]
        assert not heavy and not project, f


def test_backtest_dag_is_manual_with_the_backtest_params(parsed):
    d = parsed["dags"]["sunat_backtest"]
    assert d["schedule"].endswith("NullTimetable") or "Null" in d["schedule"] or d["schedule"] == "None"
    assert {"policies", "seeds", "days", "capacity"} <= set(d["params"])
    assert d["params"]["days"] == 60 and d["params"]["capacity"] == 0.10 and d["params"]["seeds"] == [1, 2, 3]


def test_every_task_has_a_timeout_and_a_failure_alert_and_every_dag_a_run_timeout(parsed):
    for dag_id, d in parsed["dags"].items():
        assert d["dagrun_timeout_s"], f"{dag_id} has no dagrun_timeout"
        for task_id, t in d["tasks"].items():
            assert t["timeout_s"], f"{dag_id}.{task_id} has no execution_timeout"
            if dag_id != "sunat_backtest":  # a manual research run: nobody on call for it
                assert t["on_failure"] == ["WebhookNotifier"], f"{dag_id}.{task_id} alerts nobody"
    for dag_id in ("sunat_daily", "sunat_retrain"):
        assert parsed["dags"][dag_id]["on_failure"] == ["WebhookNotifier"]


def test_tasks_that_move_the_champion_share_a_one_slot_pool(parsed):
    from sunat_pipeline.settings import get_settings

    pool = get_settings().operations.champion_pool
    movers = {(dag_id, task_id) for dag_id, d in parsed["dags"].items() for task_id, t in d["tasks"].items()
              if "sunat_risk_model" in t["outlets"]}
    assert movers == {("sunat_daily", "train_if_due"), ("sunat_retrain", "retrain")}
    for dag_id, task_id in movers:
        assert parsed["dags"][dag_id]["tasks"][task_id]["pool"] == pool
    others = {t["pool"] for d in parsed["dags"].values() for t in d["tasks"].values()} - {pool}
    assert others == {"default_pool"}


def test_daily_schedule_is_local_time_with_a_one_day_interval_and_catches_up(parsed):
    d = parsed["dags"]["sunat_daily"]
    assert "CronTriggerTimetable" in d["schedule"]
    assert d["timetable"]["expression"] == "0 6 * * *" and d["timetable"]["timezone"] == "America/Lima"
    assert d["timetable"]["interval"] == "1 day, 0:00:00"
    assert d["catchup"] is True and d["max_active_runs"] == 1
    assert d["start_date"] == "2026-01-02T11:00:00+00:00"  # 06:00 in Lima: the run that processes 2026-01-01
    assert d["deadline"] == ["DagRunQueuedAtDeadline"]


def test_retraining_is_scheduled_on_the_drift_request_asset_or_weekly(parsed):
    d = parsed["dags"]["sunat_retrain"]
    assert "AssetOrTimeSchedule" in d["schedule"]
    assert d["max_active_runs"] == 1
    assert parsed["dags"]["sunat_daily"]["tasks"]["drift_request"]["outlets"] == ["sunat_drift_retrain_request"]


def test_asset_uris_name_the_lake_folders_they_stand_for(tmp_path, monkeypatch):
    from sunat_pipeline.feedback import offences, weights
    from sunat_pipeline.orchestration.assets import lake_assets
    from sunat_pipeline.reporting.retrain import requests_dir
    from sunat_pipeline.settings import get_settings

    monkeypatch.setenv("SUNAT_LAKE_ROOT", str(tmp_path / "lake"))
    s = get_settings()
    a = lake_assets(s)
    assert a["SILVER"].uri == s.silver.as_uri() and a["SCORED"].uri == s.scored_dir.as_uri()
    assert a["OFFENCES"].uri == offences._offences_dir(s).as_uri()
    assert a["RULE_WEIGHTS"].uri == weights.weights_dir(s).as_uri()
    assert a["DRIFT_REQUEST"].uri == requests_dir(s).as_uri()
    assert all(x.uri.startswith((tmp_path / "lake").as_uri()) for k, x in a.items() if k != "MODEL")
    assert a["MODEL"].uri == f"mlflow://models/{s.registered_model}"


def test_tax_monthly_chain_schedule_and_hygiene(parsed):
    from sunat_pipeline.settings import get_settings

    s = get_settings()
    d = parsed["dags"]["sunat_tax_monthly"]
    assert list(d["tasks"]) == ["ingest", "features", "train", "score", "audit_list", "fold_outcomes"]
    assert "CronTriggerTimetable" in d["schedule"]
    assert d["timetable"]["expression"] == "0 7 2 * *" and d["timetable"]["timezone"] == "America/Lima"
    assert "months=+1" in d["timetable"]["interval"]
    assert d["start_date"] == "2026-02-02T12:00:00+00:00"  # 07:00 in Lima (UTC-5)
    assert d["tasks"]["train"]["pool"] == s.operations.champion_pool  # it can move the tax models' aliases
    assert all(t["pool"] == "default_pool" for k, t in d["tasks"].items() if k != "train")
    assert d["tasks"]["train"]["timeout_s"] == s.operations.train_timeout_min * 60
    assert d["on_failure"] == ["WebhookNotifier"] and d["max_active_runs"] == 1 and d["dagrun_timeout_s"]
    assert "month" in d["params"] and "monthly" in d["tags"]
