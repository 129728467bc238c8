"""
### SUNAT monthly tax audit selection

One run per month, on day `tax_audit.run_day` at `tax_audit.run_at` local time (default the 2nd at 07:00
America/Lima, `operations.timezone`), for the previous month (the `month` param, `YYYY-MM`, re-runs a given
month). Its cutoff is the first day of the month after the processed one: only what is dated before it is read
(docs/tax.md, "The monthly audit list").

1. **ingest**: every tax extract (register, IGV and income returns, e-invoices, audits) landed by the cutoff
   goes to bronze or to quarantine after its Great Expectations suite; reconciliation proves it.
2. **features**: point-in-time taxpayer-month features (`gold/tax_features`).
3. **train**: the anomaly model (Isolation Forest) and, where enough audit outcomes exist, the supervised model
   (XGBoost, inverse-propensity weighted), each logged to MLflow and promoted to `champion` only if it beats its
   champion on the recent audits (one-slot `sunat_champion` pool).
4. **score**: the month's eligible taxpayers (`gold/tax_scores`).
5. **audit_list**: per regional office up to its capacity, with a random share and plain-language reasons
   (`gold/tax_audit_list`).
6. **fold_outcomes**: closed audits become the next training's labels; which listed taxpayers were audited
   (`gold/tax_audit_outcomes`).

Tasks pass small summaries through XCom; the data stays in the lake. Re-running a month replaces its
partitions with the same rows (its models are trained once: the re-run reuses them).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from sunat_pipeline.orchestration import hygiene, schedule
from sunat_pipeline.settings import get_settings

_S = get_settings()
OPS, TAX = _S.operations, _S.tax_audit


def _month(context) -> str:
    return schedule.processing_month(context, OPS.timezone)


@dag(
    dag_id="sunat_tax_monthly",
    schedule=schedule.monthly_timetable(OPS, TAX.run_day, TAX.run_at),
    start_date=schedule.monthly_start(OPS, TAX.start_month, TAX.run_day, TAX.run_at),
    catchup=OPS.catchup,
    **hygiene.dag_args(OPS),
    default_args=hygiene.default_args(OPS),
    params={"month": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}$",
                           description="Month to process (YYYY-MM); default: the month before the run's")},
    tags=["sunat", "monthly", "tax"],
    doc_md=__doc__,
)
def sunat_tax_monthly():
    # Each task runs one step of the monthly run defined once in sunat_pipeline/tax/monthly.py (run_month runs
    # the same steps in one process).
    @task
    def ingest(**context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly

        setup()
        settings, month = get_settings(), _month(context)
        out = monthly.ingest_sources(settings, month)
        # A file in neither bronze nor quarantine stays so on a retry (reconcile only reads): fail at once.
        with hygiene.fail_fast(RuntimeError):
            out["landed"] = monthly.reconcile(settings, month)["landed"]
        return out

    @task
    def features(ingested: dict, **context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly

        setup()
        return monthly.features(get_settings(), _month(context))

    @task(retries=1, **hygiene.champion_task(OPS))
    def train(feats: dict, **context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly
        from sunat_pipeline.tax.train import NoTaxpayers

        setup()
        with hygiene.fail_fast(NoTaxpayers):
            return monthly.train(get_settings(), _month(context))

    @task
    def score(trained: dict, **context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly
        from sunat_pipeline.tax.train import NoTaxpayers

        setup()
        with hygiene.fail_fast(NoTaxpayers):
            return monthly.score(get_settings(), _month(context))

    @task
    def audit_list(scored: dict, **context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly

        setup()
        return monthly.audit_list(get_settings(), _month(context))

    @task
    def fold_outcomes(listed: dict, **context) -> dict:
        from sunat_pipeline.logs import setup
        from sunat_pipeline.tax import monthly

        setup()
        return monthly.fold_outcomes(get_settings(), _month(context))

    fold_outcomes(audit_list(score(train(features(ingest())))))


sunat_tax_monthly()
