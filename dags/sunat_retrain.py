"""
### SUNAT weekly retraining

Trains a challenger on every outcome known by its day, after a seeded, time-budgeted hyperparameter search
(`training.search_budget_s`, `training.search_max_trials`), logs it to MLflow, registers it, and moves the
`champion` alias only if it beats the champion on the same recent holdout (see
`sunat_pipeline/modeling/train.py`).

Runs weekly at `operations.retrain_cron` (local time, default Sunday 03:00 America/Lima), and as soon as the daily
DAG publishes a drift request (the `sunat_drift_retrain_request` asset): then it trains as of the request's day.
Its day: the `date` param, else the drift request's day, else the local day before the run. It shares the
one-slot `sunat_champion` pool with the daily `train_if_due`, so the two never move the alias at once. The daily
DAG also retrains when enough new outcomes arrive; this DAG is the weekly guarantee, the answer to drift and the
button a modeler presses to retrain now.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

from sunat_pipeline.orchestration import hygiene, schedule
from sunat_pipeline.orchestration.assets import DRIFT_REQUEST, MODEL
from sunat_pipeline.settings import get_settings

OPS = get_settings().operations


@dag(
    dag_id="sunat_retrain",
    schedule=schedule.retrain_schedule(OPS, DRIFT_REQUEST),
    start_date=schedule.start_date(OPS),
    catchup=False,
    **hygiene.dag_args(OPS),
    default_args=hygiene.default_args(OPS, retries=1, retry_delay=timedelta(minutes=1)),
    params={"date": Param(None, type=["null", "string"], format="date",
                          description="Train on outcomes known by this day (YYYY-MM-DD); default: the drift "
                                      "request's day, else the day before the run")},
    tags=["sunat", "weekly", "training"],
    doc_md=__doc__,
)
def sunat_retrain():
    @task(outlets=[MODEL], **hygiene.champion_task(OPS))
    def retrain(**context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.modeling import train

        setup()
        day = ((None if context["params"].get("date") else schedule.requested_day(context))
               or schedule.processing_day(context, OPS.timezone))
        with hygiene.fail_fast(train.NotEnoughLabels):
            r = train.train_if_due(get_settings(), day, force=True, search=True)
        return {k: v for k, v in r.items() if k in ("trained", "version", "promoted", "reason", "run_id")}

    retrain()


sunat_retrain()
