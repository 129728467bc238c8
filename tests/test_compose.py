"""docker-compose.yaml validated without a Docker daemon (issue 15, item 5): `docker-compose config` (Debian's
docker-compose v1 package) resolves it with a generated env file; every secret is shared from that file, none
has a default, long-running services have healthchecks and restart policies, Airflow's logs are a volume, and
MLflow runs with allowed hosts and its own authentication."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from apt import apt_install

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
           "airflow-triggerer", "airflow-cli")
SHARED = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")


def _docker_compose() -> str:
    """The docker-compose v1 binary; installed with apt-get where this runs as root, else the test is skipped."""
    found = shutil.which("docker-compose")
    if found:
        return found
    ok, why = apt_install("docker-compose")
    if ok and shutil.which("docker-compose"):
        return shutil.which("docker-compose")
    pytest.skip(f"docker-compose is not installed and could not be installed: {why}")


def _env_values() -> dict[str, str]:
    from cryptography.fernet import Fernet

    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out | {k: os.urandom(16).hex() for k, v in out.items() if not v and "EXTRA" not in k} | {
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode()}


def _config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "docker-compose.yaml", tmp_path / "docker-compose.yaml")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW", "POSTGRES"))}
    return subprocess.run([_docker_compose(), "config"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=clean)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    env = _env_values()
    r = _config(tmp_path_factory.mktemp("compose"), env)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout), env


def test_every_airflow_container_shares_the_keys_of_the_env_file(resolved):
    cfg, env = resolved
    for name in AIRFLOW:
        e = cfg["services"][name]["environment"]
        for k in SHARED:
            assert e[k] == env[k], (name, k)
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert f":{env['POSTGRES_PASSWORD']}@postgres/airflow" in e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert e["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_services_have_healthchecks_restart_policies_and_a_logs_volume(resolved):
    cfg, _ = resolved
    services = cfg["services"]
    assert {"postgres", "redis", "mlflow", *AIRFLOW} == set(services)
    for name, s in services.items():
        if name in ("airflow-init", "airflow-cli"):  # one-shot containers
            continue
        assert s.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert s.get("restart") == "always", f"{name} is not restarted"
    assert services["airflow-init"]["restart"] == "on-failure"
    for name in AIRFLOW:
        assert any(str(v).startswith("logs:/opt/airflow/logs") for v in services[name]["volumes"]), name
    assert "logs" in cfg["volumes"]
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert "pools set sunat_champion 1" in " ".join(services["airflow-init"]["command"])


def test_mlflow_has_allowed_hosts_and_its_own_auth(resolved):
    cfg, env = resolved
    m = cfg["services"]["mlflow"]
    cmd = " ".join(m["command"])
    assert "--allowed-hosts" in cmd and "--app-name basic-auth" in cmd and "--serve-artifacts" in cmd
    assert m["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert m["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    ini = (ROOT / "compose" / "mlflow-auth.ini").read_text()
    assert "admin_password" not in ini and "database_uri = sqlite:////mlflow-auth/" in ini


def test_it_refuses_to_start_without_the_secrets(tmp_path):
    env = {k: "" if k in SHARED or "PASSWORD" in k else v for k, v in _env_values().items()}
    r = _config(tmp_path, env)
    assert r.returncode != 0 and "in .env" in r.stderr


def test_no_default_password_is_committed():
    example = (ROOT / ".env.example").read_text()
    for line in example.splitlines():
        if line and not line.startswith("#") and any(w in line for w in ("PASSWORD", "KEY", "SECRET")):
            assert line.endswith("="), f".env.example ships a value: {line}"
    texts = {p: p.read_text() for p in [ROOT / "docker-compose.yaml", ROOT / "Dockerfile", ROOT / ".env.example",
                                        *(ROOT / "compose").iterdir()]}
    for p, text in texts.items():
        assert not re.search(r"(?i)(password|secret|fernet_key)\s*[:=]\s*['\"]?(airflow|admin|change-?me|"
                             r"password1234|mlflow|secret)\b", text), p
        assert "airflow:airflow@" not in text and "mlflow:mlflow@" not in text, p
    assert ".env" in (ROOT / ".gitignore").read_text().split() and ".env" in (ROOT / ".dockerignore").read_text()


def test_the_image_has_what_the_postgresql_path_needs():
    lock = {ln.split("==")[0].lower() for ln in (ROOT / "requirements.txt").read_text().splitlines() if "==" in ln}
    assert {"asyncpg", "psycopg2-binary", "apache-airflow-providers-celery", "redis", "flask-wtf"} <= lock
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile and "COPY compose" in dockerfile
    import asyncpg  # noqa: F401 - the venv built from the lock has it (Airflow's async PostgreSQL driver)
