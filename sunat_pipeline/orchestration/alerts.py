"""Alerts to the operators through a webhook named by an Airflow connection (``operations.alerts_conn_id``).

A failed task or run (``WebhookNotifier``, the DAGs' ``on_failure_callback``) and a day not done by its deadline
(``deadline_missed``, the daily DAG's ``DeadlineAlert``, run by the triggerer) POST one JSON message to the
connection's URL: its ``host`` when that is a full URL (``http://...``), else ``extra.url``; a password, when set,
goes as a bearer token. Without the connection the alert is only logged: a missing webhook must never fail a run.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)
TIMEOUT_S = 10


def webhook_url(conn) -> str:
    """The URL of a webhook connection (see the module docstring)."""
    host = conn.host or ""
    if "://" in host:
        return host
    url = (conn.extra_dejson or {}).get("url")
    if not url:
        raise ValueError(f"connection {conn.conn_id}: no URL (host 'http://...' or extra {{'url': ...}})")
    return url


def post(conn, message: dict[str, Any]) -> int:
    """POST ``message`` as JSON to the connection's webhook; returns the HTTP status (raises on an error one)."""
    req = urllib.request.Request(webhook_url(conn), data=json.dumps(message, default=str).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    if conn.password:
        req.add_header("Authorization", f"Bearer {conn.password}")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:  # noqa: S310 (the URL is the operator's connection)
        return r.status


def _connection(conn_id: str):
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as e:  # the connection is optional: say so and go on
        log.warning("alert connection %r unavailable (%s): alert only logged", conn_id, e)
        return None


def failure_message(context: Any) -> dict[str, Any]:
    """What a failure alert says: the DAG, run, task, try, day and error."""
    ti = context.get("task_instance") or context.get("ti")
    run = context.get("dag_run")
    dag = context.get("dag")
    return {"event": "failure", "dag_id": getattr(dag, "dag_id", None) or getattr(run, "dag_id", None),
            "run_id": getattr(run, "run_id", None), "task_id": getattr(ti, "task_id", None),
            "try_number": getattr(ti, "try_number", None), "date": (context.get("params") or {}).get("date"),
            "data_interval_end": context.get("data_interval_end"), "error": str(context.get("exception") or
                                                                             context.get("reason") or "")}


class WebhookNotifier(BaseNotifier):
    """``on_failure_callback`` of tasks and DAG runs: one JSON message to the alert webhook."""

    def __init__(self, conn_id: str):
        super().__init__()
        self.conn_id = conn_id

    def render_template_fields(self, context, jinja_env=None) -> None:
        """Nothing to render (no template fields); BaseNotifier's would ask the DAG for a Jinja environment,
        which a DAG-level callback's serialized DAG lacks in Airflow 3.3 (`airflow dags test`)."""

    def notify(self, context) -> None:
        message = failure_message(context)
        log.error("ALERT %s", message)
        conn = _connection(self.conn_id)
        if conn is not None:
            try:
                post(conn, message)
            except Exception as e:  # an alert that cannot be sent must not hide the failure it reports
                log.error("alert to %r not delivered: %s", self.conn_id, e)


async def deadline_missed(context: dict | None = None, *, conn_id: str, deadline: str, **kwargs) -> None:
    """The daily DAG's deadline callback (the triggerer runs it): the day is not done by ``deadline``."""
    from airflow.sdk import BaseHook

    run = (context or {}).get("dag_run") or {}
    message = {"event": "deadline_missed", "deadline": deadline, "dag_id": _get(run, "dag_id"),
               "run_id": _get(run, "run_id"), "data_interval_end": _get(run, "data_interval_end")}
    log.error("ALERT %s", message)
    try:
        conn = await BaseHook.aget_connection(conn_id)
    except Exception as e:
        log.warning("alert connection %r unavailable (%s): alert only logged", conn_id, e)
        return
    import asyncio

    await asyncio.to_thread(post, conn, message)


def _get(obj, key: str):
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
