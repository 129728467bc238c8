"""Days run through Airflow's scheduler on the embedded metadata database (SQLite under the Airflow home): the
way `make demo` runs its days, so the UI shows real queued, start and end times and a Gantt view per run.

An api-server (tasks talk to its execution API in Airflow 3), a scheduler with the LocalExecutor and a DAG
processor run in the background, each in its own process group. Each day is one backfill run (`airflow backfill
create` over that day's run time): its logical date and data interval are the scheduled run's, and the caller
decides what happens between days (the demo's inspections). While they run, the DAG's start date is after today
and catch-up is off, so the scheduler makes no run of its own. At the end the DAG is left as in production: on,
with the configured start date and catch-up, its next run the one after the last day run (the processes are
stopped first; a scheduler started later, `make ui`, makes that run, which waits for its day's extract).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sunat_pipeline.orchestration import schedule
from sunat_pipeline.orchestration.runner import _airflow, airflow_env, ensure_db
from sunat_pipeline.settings import Settings

PASSWORDS = "simple_auth_manager_passwords.json.generated"
# The LocalExecutor forks each task from the scheduler's process: a scheduler that has imported the libraries the
# tasks use saves every task of the day their import (seconds each on two cores, against one process for all of
# them under `airflow dags test`).
# Not XGBoost / scikit-learn: a training forked from a process that had loaded them ran ~4x slower here
# (their OpenMP runtime), and only a few days of a demo train.
PRELOADED = ("pandas", "pyarrow.parquet", "great_expectations", "mlflow", "sunat_pipeline.daily",
             "sunat_pipeline.ingest", "sunat_pipeline.selection.score", "sunat_pipeline.reporting.kpi")
_SCHEDULER = ("import importlib, sys\n"
              "for m in sys.argv[1].split(','):\n"
              "    importlib.import_module(m)\n"
              "from airflow.__main__ import main\n"
              "sys.argv = ['airflow', *sys.argv[2:]]\n"
              "sys.exit(main())\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScheduledAirflow:
    """``with ScheduledAirflow(settings, "sunat_daily") as af: af.run_day(day)``."""

    def __init__(self, settings: Settings, dag_id: str, parallelism: int = 4, env: dict[str, str] | None = None):
        """``env``: more variables for every process (e.g. a monthly DAG's start after today). ``parallelism``:
        tasks at once; the six ingest tasks are short and mostly wait on files, so four at once on two cores
        shorten a day (with two, a demo day spent a third of its time queueing them)."""
        self.settings, self.dag_id = settings, dag_id
        port = _free_port()
        env_extra, env = env or {}, airflow_env(settings)
        # A start date after today: no scheduled catch-up run while the DAG is unpaused for the backfills.
        tomorrow = datetime.now(ZoneInfo(settings.operations.timezone)).date() + timedelta(days=1)
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),  # shared: tasks' tokens come from the scheduler
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "SUNAT_OPERATIONS__START_DATE": tomorrow.isoformat(),
            # With catch-up, the scheduler takes the latest backfill run as the last automated one and catches up
            # from it to today (runs without tasks: they start before the start date). Without, the next run is
            # the later of today's and the start date's.
            "SUNAT_OPERATIONS__CATCHUP": "false",
            "GX_ANALYTICS_ENABLED": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        })
        env.update(env_extra)
        self.env, self.port = env, port
        self.db = Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
        self.logs = settings.airflow_home_path / "logs" / "services"
        self.procs: dict[str, subprocess.Popen] = {}
        self.token: str | None = None

    def __enter__(self) -> ScheduledAirflow:
        # A SIGTERM'd caller still stops the processes below (SystemExit runs __exit__).
        self._sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        ensure_db(self.settings)
        self.logs.mkdir(parents=True, exist_ok=True)
        af = _airflow()
        for name, argv in {"api-server": [af, "api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
                           "scheduler": [sys.executable, "-c", _SCHEDULER, ",".join(PRELOADED), "scheduler",
                                         "--skip-serve-logs"],
                           "dag-processor": [af, "dag-processor"]}.items():
            with open(self.logs / f"{name}.log", "ab") as out:
                self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                    start_new_session=True)
        try:
            self._until(self._ready, 300, "the api-server, scheduler and DAG processor are up")
            self._cli("dags", "unpause", self.dag_id)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
            # Serialized again with the configured start date and catch-up (not this session's overrides), so the
            # DAG page shows the next run a production scheduler would make: the day after the last one run.
            with contextlib.suppress(Exception):
                subprocess.run([_airflow(), "dags", "reserialize"], env=airflow_env(self.settings),
                               capture_output=True, timeout=300, check=True)
        finally:
            signal.signal(signal.SIGTERM, self._sigterm)

    def run_day(self, day: date, timeout_s: float = 1800) -> str:
        """One backfill run of the daily DAG for ``day`` (through the REST API); waits until it ends. Returns
        'success', raises otherwise."""
        return self.run_at(schedule.run_time(self.settings.operations, day), str(day), timeout_s)

    def run_at(self, run_time: datetime, what: str, timeout_s: float = 1800) -> str:
        """One backfill run of the DAG's scheduled run at ``run_time`` (``what`` names it in messages)."""
        day, when = what, run_time.isoformat()
        status, b = self._api("POST", "/api/v2/backfills", {
            "dag_id": self.dag_id, "from_date": when, "to_date": when, "reprocess_behavior": "completed",
            "max_active_runs": 1}, retry=True)
        if status != 200:
            raise RuntimeError(f"creating the backfill of {day} failed: {status} {b}")
        self._until(lambda: self._run_state(when) in ("success", "failed"), timeout_s, f"the run of {day} ends")
        # The scheduler closes a finished backfill within 30 s, and a DAG has one open backfill at a time: close it
        # now (its one run is over) so the next day need not wait.
        self._api("PUT", f"/api/v2/backfills/{b['id']}/cancel", retry=True)
        state = self._run_state(when)
        if state != "success":
            raise RuntimeError(f"{self.dag_id} run for {day} ended {state} (task logs under "
                               f"{self.settings.airflow_home_path / 'logs'})")
        return state

    def _api(self, method: str, path: str, body: dict | None = None, retry: bool = False) -> tuple[int, dict | str]:
        """A REST call as the admin; ``retry``: again while SQLite is locked by the scheduler (503), up to a minute."""
        for _ in range(30 if retry else 1):
            status, out = self._call(method, path, body)
            if status != 503:
                break
            time.sleep(2)
        return status, out

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
        if self.token is None:  # the simple auth manager's admin, its password generated by the api-server
            pw = json.loads((self.settings.airflow_home_path / PASSWORDS).read_text())
            self.token = ""
            _, tok = self._call("POST", "/auth/token", {"username": "admin", "password": pw["admin"]})
            self.token = tok["access_token"]
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _run_state(self, logical: str) -> str | None:
        ts = datetime.fromisoformat(logical).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S")
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as c:
                row = c.execute("select state from dag_run where dag_id = ? and run_type = 'backfill' "
                                "and data_interval_end like ? "
                                "order by id desc limit 1", (self.dag_id, ts + "%")).fetchone()
        except sqlite3.OperationalError:  # locked by a writer: ask again
            return None
        return row[0] if row else None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=5) as r:
                h = json.loads(r.read())
        except (OSError, ValueError):
            return False
        if not all((h.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")):
            return False
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as c:
            return c.execute("select 1 from dag where dag_id = ?", (self.dag_id,)).fetchone() is not None

    def _until(self, cond, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"Airflow process(es) exited waiting until {what}: {dead} (logs: {self.logs})")
            if cond():
                return
            time.sleep(2)
        raise TimeoutError(f"timed out after {timeout} s waiting until {what} (logs: {self.logs})")

    def _cli(self, *args: str) -> str:
        r = subprocess.run([_airflow(), *args], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {r.stderr[-3000:]}")
        return r.stdout

    def stop(self, grace: float = 30) -> None:
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, end - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            if p.poll() is None:
                p.wait(timeout=10)
