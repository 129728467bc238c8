"""Operational hygiene (issue 15, item 2): only finished MLflow runs count as trainings, an MLflow outage is an
error and not "no champion", promotion is idempotent, deterministic failures are not retried, and failure alerts
reach a webhook (a real HTTP receiver started here) through an Airflow connection."""

from __future__ import annotations

import json
import socket
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from sunat_pipeline.modeling import registry
from sunat_pipeline.orchestration import alerts, hygiene
from sunat_pipeline.settings import get_settings

DAY = date(2026, 3, 4)


@pytest.fixture
def store(tmp_path):
    """Settings on a throw-away SQLite MLflow store."""
    return get_settings(root=tmp_path, lake_root=tmp_path / "lake",
                        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _training_run(s, day: date, status: str) -> str:
    registry.experiment(s)
    run = mlflow.start_run(run_name=f"train-{day}")
    mlflow.set_tags({"kind": "training", "training_date": day.isoformat()})
    mlflow.end_run(status=status)
    return run.info.run_id


def test_only_finished_training_runs_count(store):
    _training_run(store, DAY, "FAILED")
    _training_run(store, date(2026, 3, 5), "KILLED")
    # A failed or killed training leaves its day untrained: the retry trains again.
    assert registry.runs_for(store, DAY) == []
    assert registry.last_training_date(store) is None
    done = _training_run(store, DAY, "FINISHED")
    assert [r.info.run_id for r in registry.runs_for(store, DAY)] == [done]
    assert registry.last_training_date(store) == DAY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_mlflow_outage_is_an_error_not_no_champion(store, monkeypatch):
    c = registry.client(store)
    assert registry.champion(store) == (None, None)  # no registered model: truly no champion
    c.create_registered_model(store.registered_model)
    assert registry.champion(store) == (None, None)  # a model without the alias: no champion either
    mv = c.create_model_version(store.registered_model, source=(store.root / "m").as_uri())
    c.set_registered_model_alias(store.registered_model, registry.CHAMPION, mv.version)
    assert str(registry.champion(store, load=False)[0].version) == str(mv.version)
    # A tracking server that does not answer: an error, never "no champion" (which would train and promote).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = get_settings(root=store.root, mlflow_tracking_uri=f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(MlflowException):
        registry.champion(down, load=False)


def test_promotion_is_idempotent(store):
    c = registry.client(store)
    c.create_registered_model(store.registered_model)
    v1 = c.create_model_version(store.registered_model, source=(store.root / "a").as_uri()).version
    v2 = c.create_model_version(store.registered_model, source=(store.root / "b").as_uri()).version
    assert registry.promote_version(store, v1)
    assert not registry.promote_version(store, v1)  # a retried promotion changes nothing
    assert registry.promote_version(store, v2)
    assert str(registry.champion(store, load=False)[0].version) == str(v2)


def test_deterministic_failures_fail_without_retry():
    from airflow.sdk.exceptions import AirflowFailException

    from sunat_pipeline.modeling.train import NotEnoughLabels

    with pytest.raises(AirflowFailException, match="not retried"), hygiene.fail_fast(NotEnoughLabels):
        raise NotEnoughLabels("only 3 labelled frauds")
    with pytest.raises(OSError), hygiene.fail_fast(NotEnoughLabels):  # anything else keeps its retries
        raise OSError("disk")


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}", _Receiver.received
    server.shutdown()
    server.server_close()


def _context():
    ti = SimpleNamespace(task_id="reconcile", try_number=1)
    run = SimpleNamespace(run_id="scheduled__2026-03-04", dag_id="sunat_daily")
    return {"task_instance": ti, "dag_run": run, "dag": SimpleNamespace(dag_id="sunat_daily"),
            "params": {"date": "2026-03-04"}, "exception": RuntimeError("reconciliation failed: 1 file")}


def test_a_failure_alert_reaches_the_webhook_of_the_connection(receiver, monkeypatch):
    url, received = receiver
    conn = {"conn_type": "http", "host": f"{url}/hooks/sunat", "password": "s3cr3t-token"}
    monkeypatch.setenv("AIRFLOW_CONN_SUNAT_ALERTS", json.dumps(conn))
    alerts.WebhookNotifier("sunat_alerts").notify(_context())
    assert len(received) == 1
    path, auth, body = received[0]
    assert path == "/hooks/sunat" and auth == "Bearer s3cr3t-token"
    assert body["event"] == "failure" and body["dag_id"] == "sunat_daily" and body["task_id"] == "reconcile"
    assert "reconciliation failed" in body["error"] and body["date"] == "2026-03-04"


def test_the_deadline_alert_reaches_the_webhook(receiver, monkeypatch):
    import asyncio

    url, received = receiver
    monkeypatch.setenv("AIRFLOW_CONN_SUNAT_ALERTS", json.dumps({"conn_type": "http", "extra": {"url": url}}))
    ctx = {"dag_run": {"dag_id": "sunat_daily", "run_id": "r1", "data_interval_end": "2026-03-05T11:00:00Z"}}
    asyncio.run(alerts.deadline_missed(context=ctx, conn_id="sunat_alerts", deadline="10:00"))
    assert [b["event"] for _, _, b in received] == ["deadline_missed"]
    assert received[0][2]["deadline"] == "10:00" and received[0][2]["run_id"] == "r1"


def test_without_the_connection_an_alert_is_only_logged(caplog, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SUNAT_ALERTS", raising=False)
    alerts.WebhookNotifier("sunat_alerts_missing").notify(_context())  # must not raise
    assert "ALERT" in caplog.text


def test_through_airflow_a_deterministic_failure_fails_at_once_and_alerts(receiver, tmp_path):
    """A real run (`airflow dags test`) of the daily DAG on a lake with only an empty extract: training has no
    frauds to learn from, a failure a retry would repeat, so the task fails on its first try
    (AirflowFailException), and the task's and the run's failure alerts reach the webhook of the `sunat_alerts`
    connection."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url, received = receiver
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path}/airflow.db",
               AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"), SUNAT_LAKE_ROOT=str(tmp_path / "lake"),
               SUNAT_MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
               AIRFLOW_CONN_SUNAT_ALERTS=json.dumps({"conn_type": "http", "host": f"{url}/alerts"}))
    # The day's customs extract has landed (header only: no declarations), so the run gets past its sensor.
    from sunat_pipeline.ingest.sources import SOURCES

    landing = tmp_path / "lake" / "landing" / "customs"
    landing.mkdir(parents=True)
    (landing / f"customs__{DAY.isoformat()}.csv").write_text(",".join(SOURCES["customs"].columns) + "\n")
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    r = subprocess.run([airflow, "dags", "test", "sunat_daily", "--conf", json.dumps({"date": DAY.isoformat()})],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    bodies = [b for _, _, b in received]
    assert len(bodies) == 2, r.stdout[-3000:]  # the task's alert, then the run's
    for b in bodies:
        assert b["dag_id"] == "sunat_daily" and b["date"] == DAY.isoformat()
    task = bodies[0]
    assert task["task_id"] == "train_if_due" and task["try_number"] == 1
    assert "NotEnoughLabels" in task["error"] and "not retried" in task["error"]


def test_a_daily_run_knows_how_far_its_extracts_have_landed(store):
    """The daily DAG's sensor waits until the customs extracts cover its day: a bulk history file covers every
    day up to its own, a later daily file covers its day; misnamed, in-progress and other sources' files do not."""
    from sunat_pipeline.ingest.landing import landed_through

    folder = store.landing / "customs"
    folder.mkdir(parents=True)
    assert landed_through(store, "customs") is None
    (folder / "customs__2026-03-01__history.csv").write_text("x\n")
    (folder / "customs_2026-03-09.csv").write_text("x\n")            # one underscore: rejected, covers nothing
    (folder / ".customs__2026-03-08.csv.tmp").write_text("x\n")       # still being written
    (store.landing / "enforcement").mkdir()
    (store.landing / "enforcement" / "enforcement__2026-03-07.csv").write_text("x\n")
    assert landed_through(store, "customs") == date(2026, 3, 1)
    (folder / "customs__2026-03-03.csv").write_text("x\n")
    assert landed_through(store, "customs") == date(2026, 3, 3)
