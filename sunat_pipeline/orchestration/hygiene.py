"""What every task and run of the DAGs gets (docs/operations.md): retries with timeouts, failure alerts, the
one-slot pool of the tasks that can move the champion alias, and no retry for a failure that a retry repeats."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sunat_pipeline.settings import OperationsSettings

OWNER = "risk-targeting"


def default_args(ops: OperationsSettings, retries: int = 2, retry_delay: timedelta = timedelta(seconds=30)) -> dict:
    """Default arguments of every task: retries, an execution timeout and the failure alert."""
    from sunat_pipeline.orchestration.alerts import WebhookNotifier

    return {"owner": OWNER, "retries": retries, "retry_delay": retry_delay,
            "execution_timeout": timedelta(minutes=ops.task_timeout_min),
            "on_failure_callback": WebhookNotifier(ops.alerts_conn_id)}


def champion_task(ops: OperationsSettings) -> dict:
    """Arguments of a task that can move the champion alias: the one-slot pool, the training timeout."""
    return {"pool": ops.champion_pool, "pool_slots": 1, "execution_timeout": timedelta(minutes=ops.train_timeout_min)}


def dag_args(ops: OperationsSettings) -> dict:
    """Arguments of every scheduled DAG: one active run, a run timeout and the failure alert."""
    from sunat_pipeline.orchestration.alerts import WebhookNotifier

    return {"max_active_runs": 1, "dagrun_timeout": timedelta(hours=ops.dagrun_timeout_h),
            "on_failure_callback": WebhookNotifier(ops.alerts_conn_id)}


@contextmanager
def fail_fast(*errors: type[BaseException]) -> Iterator[None]:
    """Turn ``errors`` (failures a retry would repeat: same inputs, same result) into ``AirflowFailException``,
    which fails the task at once instead of retrying it."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except errors as e:
        raise AirflowFailException(f"{type(e).__name__}: {e} (deterministic: not retried)") from e
