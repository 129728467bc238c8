"""The production topology (sunat_pipeline/orchestration/stack.py, `make stack`): Airflow's api-server, scheduler,
dag-processor and triggerer on PostgreSQL with the CeleryExecutor, Redis as broker, two Celery workers and an
MLflow tracking server on PostgreSQL with a served artifact store, all real processes on databases of their
own. The daily DAG is triggered through the authenticated REST API for a tiny world's first live day; the run
succeeds, the day's scored Parquet is written, the registry has a champion (its artifacts in the served store),
and the tasks ran on both workers. Every process and database is removed at the end, also on failure."""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

import pandas as pd
import pytest
from tinyworld import LEARNABLE_WORLD

from sunat_pipeline.orchestration.stack import Stack, StackConfig, drop_databases
from sunat_pipeline.settings import get_settings

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 420
USER, PASSWORD = "admin", secrets.token_urlsafe(12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """The REST API v2 with a bearer token; every call is recorded (method, path, status)."""

    def __init__(self, base: str):
        self.base, self.token, self.calls = base, None, []

    def __call__(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, out = r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            status, out = e.code, e.read().decode(errors="replace")
        self.calls.append((method, path.split("?")[0], status))
        return status, out


@pytest.fixture(scope="module")
def stack(tiny_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topology")
    world = tiny_world(LEARNABLE_WORLD)
    lake = world.copy(tmp).lake
    tag = f"{int(time.time())}_{secrets.token_hex(3)}"
    # The DAG's first scheduled run is after the test: the scheduler creates no run of its own meanwhile.
    start = (datetime.now() + timedelta(days=2)).date().isoformat()
    cfg = StackConfig(home=tmp / "stack", airflow_db=f"sunat_test_af_{tag}", mlflow_db=f"sunat_test_ml_{tag}",
                      redis_db=14, queue=f"sunat_test_{tag}", api_port=_free_port(), mlflow_port=_free_port(),
                      workers=2, concurrency=1, parse_interval_s=600, users=f"{USER}:admin",
                      passwords={USER: PASSWORD},
                      env={"SUNAT_LAKE_ROOT": str(lake), "SUNAT_OPERATIONS__START_DATE": start,
                           "SUNAT_TRAINING__LOG_PLOTS": "false"})
    st = Stack(cfg)
    t0 = time.monotonic()
    try:
        st.start()
        st.wait_ready(timeout=300)
        print(f"\n[topology] stack ready in {time.monotonic() - t0:.0f} s")
        yield st, world
    finally:
        st.stop()
        left = {n: p.poll() for n, p in st.procs.items() if p.poll() is None}
        drop_databases(cfg)
        _forget_queue(cfg)
        assert not left, f"processes still running: {left}"


def _forget_queue(cfg: StackConfig) -> None:
    import redis

    host, port = cfg.redis.split(":")
    r = redis.Redis(host=host, port=int(port), db=cfg.redis_db)
    for key in r.scan_iter(match=f"*{cfg.queue}*"):  # the queue and kombu's bindings of it
        r.delete(key)


@pytest.fixture(scope="module")
def run(stack):
    st, world = stack
    cfg = st.cfg
    api = Api(cfg.api_url)
    status, tok = api("POST", "/auth/token", {"username": USER, "password": PASSWORD})
    assert status == 201, tok
    api.token = tok["access_token"]
    assert api("GET", "/api/v2/monitor/health")[0] == 200
    _until(lambda: api("GET", "/api/v2/dags/sunat_daily")[0] == 200, 180, st, "the DAG is parsed")
    assert api("PATCH", "/api/v2/dags/sunat_daily", {"is_paused": False})[0] == 200
    day = world.cfg.live_dates[0]
    # A manual run without a logical date (tasks whose start date is after a run's logical date are not created,
    # and the DAG starts after today here), for the day in its `date` param: the operator's re-run of a day.
    t0 = time.monotonic()
    status, dr = api("POST", "/api/v2/dags/sunat_daily/dagRuns", {"logical_date": None,
                                                                  "conf": {"date": day.isoformat()}})
    assert status == 200, dr
    run_id = dr["dag_run_id"]

    def finished():
        s, r = api("GET", f"/api/v2/dags/sunat_daily/dagRuns/{run_id}")
        return s == 200 and r["state"] in ("success", "failed")

    _until(finished, RUN_TIMEOUT_S, st, f"run {run_id} finishes")
    took = time.monotonic() - t0
    _, dr = api("GET", f"/api/v2/dags/sunat_daily/dagRuns/{run_id}")
    _, tis = api("GET", f"/api/v2/dags/sunat_daily/dagRuns/{run_id}/taskInstances")
    print(f"[topology] run {run_id} {dr['state']} in {took:.0f} s")
    return {"api": api, "day": day, "dag_run": dr, "tis": tis["task_instances"], "cfg": cfg,
            "lake": st.env.get("SUNAT_LAKE_ROOT") or cfg.env["SUNAT_LAKE_ROOT"]}


def _until(cond, timeout: float, st: Stack, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert not st.dead(), f"stack process exited while waiting until {what}: {st.dead()}"
        if cond():
            return
        time.sleep(3)
    pytest.fail(f"timed out after {timeout} s waiting until {what} (logs: {st.cfg.home / 'logs'})")


def test_the_daily_run_succeeds_through_celery(run):
    states = {t["task_id"]: t["state"] for t in run["tis"]}
    assert run["dag_run"]["state"] == "success", states
    assert states.pop("drift_request") in ("success", "skipped")
    assert set(states.values()) == {"success"} and len(states) == 13  # with the extract sensor
    assert all(t["executor"] in (None, "CeleryExecutor") and t["queue"] == run["cfg"].queue for t in run["tis"])


def test_the_run_scored_its_day(run):
    dr, day = run["dag_run"], run["day"]
    assert dr["logical_date"] is None and dr["conf"] == {"date": day.isoformat()}
    path = get_settings(lake_root=run["lake"]).scored_dir / f"declaration_date={day}" / "part-0.parquet"
    scored = pd.read_parquet(path)
    assert len(scored) > 0 and set(scored.channel) <= {"RED", "YELLOW", "GREEN"}


def test_tasks_ran_on_both_workers(run):
    per_worker: dict[str, int] = {}
    for t in run["tis"]:
        if t["state"] == "success":
            per_worker[t["hostname"]] = per_worker.get(t["hostname"], 0) + 1
    print(f"[topology] tasks per worker: {per_worker}")
    assert set(per_worker) == {"worker-1", "worker-2"}, per_worker


def test_the_registry_has_a_champion_with_served_artifacts(run):
    from mlflow import MlflowClient

    cfg = run["cfg"]
    c = MlflowClient(cfg.mlflow_url)
    mv = c.get_model_version_by_alias(get_settings().registered_model, "champion")
    assert c.get_run(mv.run_id).info.status == "FINISHED"
    assert c.get_run(mv.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert any((cfg.home / "mlflow-artifacts").rglob("*")), "no artifact in the served store"


def test_rest_calls_made(run):
    calls = sorted({(m, p.replace(run["dag_run"]["dag_run_id"], "{run_id}"), s) for m, p, s in run["api"].calls})
    print("[topology] REST calls: " + "; ".join(f"{m} {p} -> {s}" for m, p, s in calls))
    assert ("POST", "/auth/token", 201) in calls
