"""Environment for running this project's DAGs with the embedded Airflow (SQLite under .local/)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def airflow_env(settings: Settings) -> dict[str, str]:
    home = settings.airflow_home_path
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # The embedded Airflow always lives in the settings' Airflow home, whatever the caller's shell exports.
    env["AIRFLOW_HOME"] = str(home)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.airflow_db_url or f"sqlite:///{home / 'airflow.db'}"
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(settings.root / "dags")
    env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(settings.root / "plugins")
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "True")
    env.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
    # Tasks find the same lake, settings and MLflow store as the caller.
    env["SUNAT_ROOT"] = str(settings.root)
    env["SUNAT_LAKE_ROOT"] = str(settings.lake)
    env["SUNAT_MLFLOW_TRACKING_URI"] = settings.tracking_uri
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return env


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def ensure_db(settings: Settings) -> None:
    """Create or upgrade the Airflow metadata database (once per Airflow version)."""
    from importlib.metadata import version

    env = airflow_env(settings)
    marker = Path(env["AIRFLOW_HOME"]) / f".migrated-{version('apache-airflow')}"
    if not marker.exists():
        log.info("initialising the Airflow database in %s", env["AIRFLOW_HOME"])
        subprocess.run([_airflow(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        marker.touch()
    ensure_pool(settings, env)


def ensure_pool(settings: Settings, env: dict[str, str]) -> None:
    """Create the one-slot pool of the tasks that can move the champion alias (a task in a pool that does not
    exist is never scheduled)."""
    pool = settings.operations.champion_pool
    marker = Path(env["AIRFLOW_HOME"]) / f".pool-{pool}"
    if marker.exists():
        return
    subprocess.run([_airflow(), "pools", "set", pool, "1", "tasks that can move the champion alias, one at a time"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    marker.touch()


def run_dag(settings: Settings, dag_id: str, day: date, quiet: bool = True, conf: dict | None = None) -> None:
    """Run one DAG run for ``day`` through Airflow (``airflow dags test``: the real task code, in-process).
    ``conf``: the run's Params (default: the day as ``date``)."""
    import json

    ensure_db(settings)
    env = airflow_env(settings)
    # `airflow dags test` (Airflow 3.3) fails a run that succeeds when its DAG has a deadline alert: it reads the
    # DAG's alert definitions as database ids. The scheduler does not; only these embedded runs go without it.
    env["SUNAT_OPERATIONS__DEADLINE_ALERT"] = "false"
    # In-process, a waiting sensor would sleep in the caller's terminal: a day whose extract has not landed fails
    # at once with the sensor's log line instead.
    env["SUNAT_OPERATIONS__EXTRACT_WAIT_H"] = "0"
    conf = {"date": day.isoformat()} if conf is None else conf
    cmd = [_airflow(), "dags", "test", dag_id, day.isoformat(), "--conf", json.dumps(conf)]
    logf = settings.airflow_home_path / "runs" / f"{dag_id}__{day.isoformat()}.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    with open(logf, "w") as f:
        r = subprocess.run(cmd, env=env, stdout=f if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if r.returncode != 0:
        tail = logf.read_text()[-4000:] if quiet else ""
        raise RuntimeError(f"Airflow run of {dag_id} for {day} failed (log: {logf}):\n{tail}")
