"""
### SUNAT weekly retraining

Trains a challenger on every outcome known by the run's day (or the `date` param), after a seeded,
time-budgeted hyperparameter search (`training.search_budget_s`, `training.search_max_trials`), logs it to MLflow,
registers it, and moves the `champion` alias only if it beats the champion on the same recent holdout
(see `sunat_pipeline/modeling/train.py`). The daily DAG also retrains when enough new outcomes arrive; this DAG is
the weekly guarantee and the button a modeler presses to retrain now.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from sunat_pipeline.orchestration.assets import MODEL


@dag(
    dag_id="sunat_retrain",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "risk-targeting", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={"date": Param(None, type=["null", "string"], format="date",
                          description="Train on outcomes known by this day (YYYY-MM-DD); default: logical date")},
    tags=["sunat", "weekly", "training"],
    doc_md=__doc__,
)
def sunat_retrain():
    @task(outlets=[MODEL])
    def retrain(**context) -> dict:
        from datetime import date

        from sunat_pipeline.logs import setup
        from sunat_pipeline.modeling import train
        from sunat_pipeline.settings import get_settings

        setup()
        day = date.fromisoformat(context["params"].get("date") or context["ds"])
        r = train.train_if_due(get_settings(), day, force=True, search=True)
        return {k: v for k, v in r.items() if k in ("trained", "version", "promoted", "reason", "run_id")}

    retrain()


sunat_retrain()
