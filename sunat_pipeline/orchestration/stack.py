"""The production topology, started from the venv (docs/operations.md, `make stack`, tests/test_topology.py).

Airflow 3 (api-server, scheduler, dag-processor, triggerer) on PostgreSQL with the CeleryExecutor, Redis as
broker and Celery workers, and an MLflow tracking server on PostgreSQL that serves its artifact store: the
processes of docker-compose.yaml, on the PostgreSQL and Redis of 127.0.0.1. Every process gets one
environment (the keys, the URLs, the lake) and its own process group, so ``stop`` ends it with its children.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

WORKER_NAME_ENV = "SUNAT_STACK_WORKER"


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` in the stack: each Celery worker's own name (two workers on one machine
    would otherwise record the same host on their task instances), else the machine's."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and what it talks to. ``home``: Airflow home, logs, keys and artifacts."""

    home: Path
    airflow_db: str = "sunat_airflow"
    mlflow_db: str = "sunat_mlflow"
    postgres: str = "postgres@127.0.0.1:5432"  # user@host:port; trust or a ~/.pgpass entry
    redis: str = "127.0.0.1:6379"
    redis_db: int = 1  # a database of its own: nothing else's keys beside the broker's
    queue: str = "sunat"  # the Celery queue of the tasks (Airflow's operators.default_queue)
    host: str = "127.0.0.1"
    api_port: int = 8080
    mlflow_port: int = 5000
    workers: int = 2
    concurrency: int = 1  # task slots of each worker
    parse_interval_s: int = 300  # a DAG file is parsed again at most this often (the folder is listed as often)
    users: str = "admin:admin"  # simple auth manager, user:role[,...]
    passwords: dict[str, str] | None = None  # None: Airflow generates them (printed by `make stack`)
    env: dict[str, str] = field(default_factory=dict)  # added to every process (e.g. SUNAT_* settings)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def broker_url(self) -> str:
        return f"redis://{self.redis}/{self.redis_db}"

    def pg_url(self, db: str) -> str:
        # SQLAlchemy 2.1's default PostgreSQL driver is psycopg 3; the lock has psycopg2 (and asyncpg).
        return f"postgresql+psycopg2://{self.postgres}/{db}"


def _keys(home: Path) -> dict[str, str]:
    """The Fernet key and the JWT / API secrets every process shares (a process with its own would refuse the
    others' tokens and connections): made once, kept in ``home``/stack-keys.json (owner only)."""
    from cryptography.fernet import Fernet

    path = home / "stack-keys.json"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        keys = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_urlsafe(48),
                "api": secrets.token_urlsafe(48)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    return json.loads(path.read_text())


def environment(cfg: StackConfig) -> dict[str, str]:
    """The environment of every process of the stack."""
    from sunat_pipeline.settings import get_settings

    root = get_settings().root
    keys = _keys(cfg.home)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(cfg.home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cfg.pg_url(cfg.airflow_db),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": cfg.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + cfg.pg_url(cfg.airflow_db),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": cfg.queue,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.api_url}/execution/",
        "AIRFLOW__API__BASE_URL": cfg.api_url,
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
        "AIRFLOW__API__SECRET_KEY": keys["api"],
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "sunat_pipeline.orchestration.stack.worker_hostname",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(cfg.parse_interval_s),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(cfg.parse_interval_s),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": cfg.users,
        # Tasks write the lake and log to the tracking server; the artifacts go through it.
        "SUNAT_ROOT": str(root),
        "SUNAT_MLFLOW_TRACKING_URI": cfg.mlflow_url,
        "MLFLOW_TRACKING_URI": cfg.mlflow_url,
    })
    if cfg.passwords is not None:
        pw = cfg.home / "passwords.json"
        pw.write_text(json.dumps(cfg.passwords))
        pw.chmod(0o600)
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(pw)
    env.update(cfg.env)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _admin(cfg: StackConfig):
    import psycopg2

    user, hostport = cfg.postgres.split("@")
    host, port = hostport.split(":")
    conn = psycopg2.connect(host=host, port=int(port), user=user, dbname="postgres")
    conn.autocommit = True  # CREATE / DROP DATABASE refuse to run in a transaction
    return conn


def create_databases(cfg: StackConfig) -> None:
    """Create the Airflow and MLflow databases if missing."""
    with contextlib.closing(_admin(cfg)) as conn, conn.cursor() as cur:
        for db in (cfg.airflow_db, cfg.mlflow_db):
            cur.execute("select 1 from pg_database where datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{db}"')


def drop_databases(cfg: StackConfig) -> None:
    with contextlib.closing(_admin(cfg)) as conn, conn.cursor() as cur:
        for db in (cfg.airflow_db, cfg.mlflow_db):
            cur.execute(f'drop database if exists "{db}" with (force)')


def init(cfg: StackConfig, env: dict[str, str]) -> None:
    """Databases, Airflow's schema and the champion pool (a task in a missing pool is never scheduled)."""
    from sunat_pipeline.settings import get_settings

    create_databases(cfg)
    (cfg.home / "logs").mkdir(parents=True, exist_ok=True)
    with open(cfg.home / "logs" / "init.log", "a") as log:
        subprocess.run([_bin("airflow"), "db", "migrate"], env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
        pool = get_settings().operations.champion_pool
        subprocess.run([_bin("airflow"), "pools", "set", pool, "1", "tasks that can move the champion alias"],
                       env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def commands(cfg: StackConfig) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each process: its command line and what its environment adds. Task logs stay on the shared disk (as
    the compose file's logs volume), so no process serves logs over HTTP."""
    af = _bin("airflow")
    procs = {
        "mlflow": ([_bin("mlflow"), "server", "--backend-store-uri", cfg.pg_url(cfg.mlflow_db), "--serve-artifacts",
                    "--artifacts-destination", str(cfg.home / "mlflow-artifacts"), "--host", cfg.host,
                    "--port", str(cfg.mlflow_port), "--workers", "1"], {}),
        "api-server": ([af, "api-server", "-H", cfg.host, "-p", str(cfg.api_port), "-w", "1"], {}),
        "scheduler": ([af, "scheduler", "--skip-serve-logs"], {}),
        "dag-processor": ([af, "dag-processor"], {}),
        "triggerer": ([af, "triggerer", "--skip-serve-logs"], {}),
    }
    for i in range(1, cfg.workers + 1):
        name = f"worker-{i}"
        procs[name] = ([af, "celery", "worker", "-q", cfg.queue, "-c", str(cfg.concurrency), "-H", f"{name}@%h",
                        "--skip-serve-logs", "--without-mingle", "--without-gossip"], {WORKER_NAME_ENV: name})
    return procs


class Stack:
    """The running processes. ``start`` launches them, ``wait_ready`` waits for the servers, ``stop`` ends every
    process group it started (SIGTERM, then SIGKILL after ``grace`` seconds)."""

    def __init__(self, cfg: StackConfig):
        self.cfg = cfg
        self.procs: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    def start(self, initialise: bool = True) -> Stack:
        self.env = environment(self.cfg)
        if initialise:
            init(self.cfg, self.env)
        logs = self.cfg.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, (argv, extra) in commands(self.cfg).items():
            with open(logs / f"{name}.log", "ab") as out:
                self.procs[name] = subprocess.Popen(argv, env={**self.env, **extra}, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def wait_ready(self, timeout: float = 300) -> None:
        """Until MLflow answers and Airflow reports a healthy scheduler, triggerer and DAG processor."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead():
                raise RuntimeError(f"stack process(es) exited: {self.dead()} (logs: {self.cfg.home / 'logs'})")
            if _healthy(self.cfg):
                return
            time.sleep(2)
        raise TimeoutError(f"stack not ready after {timeout} s (logs: {self.cfg.home / 'logs'})")

    def stop(self, grace: float = 30) -> None:
        for p in self.procs.values():
            _signal(p, signal.SIGTERM)
        end = time.monotonic() + grace
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, end - time.monotonic()))
            _signal(p, signal.SIGKILL)  # the group: children left by a parent that exited
            if p.poll() is None:
                p.wait(timeout=10)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(p: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _healthy(cfg: StackConfig) -> bool:
    try:
        with urllib.request.urlopen(f"{cfg.mlflow_url}/health", timeout=5) as r:
            if r.status != 200:
                return False
    except OSError:
        return False
    h = _get_json(f"{cfg.api_url}/api/v2/monitor/health") or {}
    return all((h.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "triggerer",
                                                                     "dag_processor"))


def main(argv: list[str] | None = None) -> int:
    """`make stack`: start the topology in the foreground until Ctrl-C."""
    d = StackConfig(home=Path(".local/stack"))
    ap = argparse.ArgumentParser(prog="python -m sunat_pipeline.orchestration.stack", description=__doc__)
    ap.add_argument("--home", type=Path, default=d.home, help="Airflow home, logs, keys, MLflow artifacts")
    ap.add_argument("--postgres", default=d.postgres, help="user@host:port of PostgreSQL (trust or ~/.pgpass)")
    ap.add_argument("--redis", default=d.redis, help="host:port of Redis")
    ap.add_argument("--redis-db", type=int, default=d.redis_db)
    ap.add_argument("--airflow-db", default=d.airflow_db)
    ap.add_argument("--mlflow-db", default=d.mlflow_db)
    ap.add_argument("--api-port", type=int, default=d.api_port)
    ap.add_argument("--mlflow-port", type=int, default=d.mlflow_port)
    ap.add_argument("--workers", type=int, default=d.workers)
    a = ap.parse_args(argv)
    cfg = StackConfig(home=a.home.resolve(), postgres=a.postgres, redis=a.redis, redis_db=a.redis_db,
                      airflow_db=a.airflow_db, mlflow_db=a.mlflow_db, api_port=a.api_port,
                      mlflow_port=a.mlflow_port, workers=a.workers)
    stack = Stack(cfg)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"[stack] starting in {cfg.home} (logs: {cfg.home / 'logs'})", flush=True)
        stack.start()
        stack.wait_ready()
        pw = cfg.home / "airflow" / "simple_auth_manager_passwords.json.generated"
        print(f"[stack] Airflow {cfg.api_url} (users and passwords: {pw}), MLflow {cfg.mlflow_url}; "
              f"processes: {', '.join(f'{n} {p.pid}' for n, p in stack.procs.items())}. Ctrl-C stops them.",
              flush=True)
        while not stack.dead():
            time.sleep(2)
        print(f"[stack] a process exited: {stack.dead()}; stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
