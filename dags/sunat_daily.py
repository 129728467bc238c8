"""
### SUNAT daily risk targeting

One run per day of declarations, at 06:00 America/Lima (`operations.daily_at`, `operations.timezone`) for the
previous day (the day before the end of its data interval; the `date` param re-runs a given day). Missed days are
caught up in order, one run at a time; `airflow backfill create` runs a range. A run not done by
`operations.deadline_at` alerts, and every failure posts to the `sunat_alerts` webhook (docs/operations.md).

0. **wait_for_customs_extract**: waits (rescheduled every `operations.extract_poke_min`, not holding a worker)
   until the day's customs extract has landed; a run whose extract has not landed after
   `operations.extract_wait_h` fails and alerts instead of scoring an empty day.
1. **ingest_&lt;source&gt;**: every extract landed up to the day is kept in bronze (byte-for-byte, with a
   manifest) or quarantined with a report after its Great Expectations suite; accepted rows upsert silver.
2. **reconcile**: proves every landed file is in bronze or quarantine, and checks across sources (an inspection
   result for an unknown declaration, or dated before it, is held out of silver with a report until it agrees).
3. **train_if_due**: retrains (XGBoost, MLflow run, registry) when there is no champion, the last
   training is a week old, enough new outcomes arrived or drift monitoring asked for it; promotes only if
   it beats the champion.
4. **score**: the champion and the rules (latest weights version before the day) score the day's items;
   channels under each office's capacity; scored Parquet with reasons.
5. **feedback**: outcomes not yet folded in go to the offence database and make the next
   rule-weights version, used by the next day's scoring (docs/feedback.md).
6. **kpi_report**: the day's KPIs (gold/kpi/), drift against the training data (a retraining request past
   the threshold) and an HTML report with plots at gold/reports/report_DATE.html (docs/kpi.md).
7. **drift_request**: publishes the drift-request asset when the day asked for a retraining (it starts
   `sunat_retrain`); skipped otherwise.
8. **report**: one line per stage with counts, and the path of the HTML report.

Tasks pass only small summaries through XCom; the data stays in the lake (`SUNAT_LAKE_ROOT`).
Re-running a day is safe: every write replaces a partition atomically and the outputs are reproduced.
"""

from __future__ import annotations

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, Param, dag, task

from sunat_pipeline.orchestration import alerts, hygiene, schedule
from sunat_pipeline.orchestration.assets import DRIFT_REQUEST, MODEL, OFFENCES, RULE_WEIGHTS, SCORED, SILVER
from sunat_pipeline.settings import get_settings

# The landing contract's sources (sunat_pipeline/ingest/sources.py; tests/test_dags.py keeps them equal).
SOURCES = ("customs", "tax", "enforcement", "reference_prices", "exchange_rates", "permits")
OPS = get_settings().operations


def _date(context):
    return schedule.processing_day(context, OPS.timezone)


def _day(context) -> str:
    return _date(context).isoformat()


@dag(
    dag_id="sunat_daily",
    schedule=schedule.daily_timetable(OPS),
    start_date=schedule.start_date(OPS),
    catchup=OPS.catchup,
    **hygiene.dag_args(OPS),
    # A scheduled run is queued at daily_at: still going at deadline_at local time, it alerts. (Not from the
    # logical date: a REST or asset-triggered run has none, and Airflow then fails to create the run.)
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                           interval=schedule.deadline_after_run(OPS),
                           callback=AsyncCallback(alerts.deadline_missed,
                                                  kwargs={"conn_id": OPS.alerts_conn_id,
                                                          "deadline": OPS.deadline_at.isoformat()}))
    if OPS.deadline_alert else None,
    default_args=hygiene.default_args(OPS),
    params={"date": Param(None, type=["null", "string"], format="date",
                          description="Day to process (YYYY-MM-DD); default: the day before the run's data "
                                      "interval ends (local time)")},
    tags=["sunat", "daily", "risk-targeting"],
    doc_md=__doc__,
)
def sunat_daily():
    @task.sensor(poke_interval=60 * OPS.extract_poke_min, timeout=3600 * OPS.extract_wait_h, mode="reschedule")
    def wait_for_customs_extract(**context) -> bool:
        """The day's declarations have landed (the customs extract of the day or a later one)."""
        import logging

        from sunat_pipeline.ingest.landing import landed_through

        through = landed_through(get_settings(), "customs")
        ok = through is not None and through >= _date(context)
        logging.getLogger("sunat.ingest").info("customs extracts landed through %s; day %s %s", through,
                                               _day(context), "ready" if ok else "not landed yet: waiting")
        return ok

    # Each task runs one step of the daily pipeline defined once in sunat_pipeline/daily.py (the backtest and
    # the tests run the same steps in one process with daily.run_day).
    @task(outlets=[SILVER])
    def ingest(source: str, **context) -> dict:
        import logging

        from sunat_pipeline import daily
        from sunat_pipeline.ingest import data_docs_index
        from sunat_pipeline.logs import setup

        setup()
        settings = get_settings()
        out = daily.ingest(settings, source, _date(context))
        logging.getLogger("sunat.ingest").info("validation reports (static GX Data Docs): %s",
                                               data_docs_index(settings))
        return out

    @task
    def reconcile(ingested: list[dict], **context) -> dict:
        from sunat_pipeline import daily
        from sunat_pipeline.logs import setup

        setup()
        # A file in neither bronze nor quarantine stays so on a retry (reconcile only reads): fail at once.
        with hygiene.fail_fast(RuntimeError):
            return daily.reconcile(get_settings(), _date(context), ingested)

    @task(outlets=[MODEL], retries=1, **hygiene.champion_task(OPS))
    def train_if_due(recon: dict, **context) -> dict:
        from sunat_pipeline import daily
        from sunat_pipeline.logs import setup
        from sunat_pipeline.modeling.train import NotEnoughLabels

        setup()
        with hygiene.fail_fast(NotEnoughLabels):
            r = daily.train_if_due(get_settings(), _date(context), drift_requests=False)
        return {k: v for k, v in r.items() if k in ("trained", "version", "promoted", "reason", "run_id")}

    @task(outlets=[SCORED], inlets=[MODEL, RULE_WEIGHTS])
    def score(trained: dict, **context) -> dict:
        from sunat_pipeline import daily
        from sunat_pipeline.logs import setup

        setup()
        return daily.score(get_settings(), _date(context))

    @task(outlets=[OFFENCES, RULE_WEIGHTS])
    def feedback(scored: dict, **context) -> dict:
        from sunat_pipeline import daily
        from sunat_pipeline.logs import setup

        setup()
        return daily.feedback(get_settings(), _date(context))

    @task(inlets=[SCORED, OFFENCES, RULE_WEIGHTS])
    def kpi_report(fed: dict, **context) -> dict:
        from sunat_pipeline import daily
        from sunat_pipeline.logs import setup

        setup()
        return daily.kpi_report(get_settings(), _date(context))

    @task(outlets=[DRIFT_REQUEST])
    def drift_request(kpis: dict, **context) -> None:
        """Publish the drift-request asset (it schedules sunat_retrain) when the day asked for a retraining."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not kpis["retrain_requested"]:
            raise AirflowSkipException("no retraining requested")
        context["outlet_events"][DRIFT_REQUEST].extra = {"day": _day(context)}

    @task
    def report(recon: dict, trained: dict, scored: dict, fed: dict, kpis: dict, **context) -> None:
        import logging

        log = logging.getLogger("sunat.report")
        for r in recon["rejected"]:
            log.warning("day %s: landed file REJECTED and quarantined: %s", _day(context), r)
        log.info("day %s | landed files %d (rejected: %s) | training: %s | scored %d items, channels %s, "
                 "model v%s, weights %s | feedback: %d outcomes, %d frauds -> %s | output %s",
                 _day(context), recon["landed"], recon["rejected"] or "none", trained, scored["items"],
                 scored["channels"], scored["model_version"], scored["rule_weights_version"], fed["outcomes"],
                 fed["frauds"], fed["version"], scored["path"])
        log.info("day %s | KPIs: efficiency index %s, hit rate RED %s / YELLOW %s, drift max PSI %s%s | report %s",
                 _day(context), kpis["efficiency_index"], kpis["hit_rate_red"], kpis["hit_rate_yellow"],
                 kpis["drift_max_psi"], " (retraining requested)" if kpis["retrain_requested"] else "",
                 kpis["report_path"])

    landed = wait_for_customs_extract()
    ingested = [ingest.override(task_id=f"ingest_{s}")(s) for s in SOURCES]
    landed >> ingested
    recon = reconcile(ingested)
    trained = train_if_due(recon)
    scored = score(trained)
    fed = feedback(scored)
    kpis = kpi_report(fed)
    drift_request(kpis)
    report(recon, trained, scored, fed, kpis)


sunat_daily()
