"""The daily pipeline, defined once: the steps the ``sunat_daily`` DAG wires as tasks, and ``run_day``, which
runs the same steps in order in one process (the backtest, the tests).

Each step takes the settings and the day and returns a small summary (what a task passes through XCom);
the data stays in the lake. Steps in order: ingest every source, reconcile, train if due, score and
select, fold the outcomes back (feedback), KPIs and report.
"""

from __future__ import annotations

import logging
import time
from datetime import date

from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
STEPS = ("ingest", "reconcile", "train_if_due", "score", "feedback", "kpi_report")


def ingest(settings: Settings, source: str, day: date) -> dict:
    """Every extract of ``source`` landed up to ``day``: bronze or quarantine, accepted rows into silver."""
    from sunat_pipeline import ingest as ing

    out = ing.ingest_source(settings, source, day)
    new = [o for o in out if o.status not in ("duplicate", "pending")]
    # Each rejection is also logged as a WARNING with its report by ingest_source.
    rejected = [f"{source}/{o.name} (report: {o.report})" for o in new if o.status == "rejected"]
    return {"source": source, "files_new": len(new), "rows": sum(o.rows for o in new if o.status != "rejected"),
            "rejected": rejected, "pending": [o.name for o in out if o.status == "pending"]}


def reconcile(settings: Settings, day: date, ingested: list[dict]) -> dict:
    from sunat_pipeline import ingest as ing
    from sunat_pipeline.ingest.sources import DAILY_SOURCES

    # The tax side's monthly extracts are ingested and reconciled by the monthly tax run, not here.
    return {**ing.reconcile(settings, day, DAILY_SOURCES), "rejected": [f for i in ingested for f in i["rejected"]]}


def train_if_due(settings: Settings, day: date, drift_requests: bool = True) -> dict:
    """``drift_requests``: honour drift monitoring's retraining requests here (off under Airflow: a request
    starts the ``sunat_retrain`` DAG through its asset)."""
    from sunat_pipeline.modeling import train

    r = train.train_if_due(settings, day, drift_requests=drift_requests)
    return {k: v for k, v in r.items() if k in ("trained", "version", "promoted", "reason", "run_id", "decision",
                                                 "metrics")}


def score(settings: Settings, day: date) -> dict:
    from sunat_pipeline.selection import score as sc

    return sc.score_day(settings, day)


def feedback(settings: Settings, day: date) -> dict:
    from sunat_pipeline.feedback import offences

    return offences.update(settings, day)


def kpi_report(settings: Settings, day: date) -> dict:
    from sunat_pipeline.reporting import report

    return report.publish(settings, day)


def run_day(settings: Settings, day: date, *, kpi: bool = True) -> dict[str, dict]:
    """Every step for ``day`` in order, in this process (what one DAG run does). ``kpi`` off skips the KPI
    report (nothing downstream of the day reads it except drift monitoring's retraining requests)."""
    from sunat_pipeline.ingest.sources import DAILY_SOURCES

    out: dict[str, dict] = {}
    t0 = time.time()
    ingested = [ingest(settings, s, day) for s in DAILY_SOURCES]
    out["ingest"] = {"files_new": sum(i["files_new"] for i in ingested), "rows": sum(i["rows"] for i in ingested),
                     "sources": ingested}
    out["reconcile"] = reconcile(settings, day, ingested)
    out["train_if_due"] = train_if_due(settings, day)
    out["score"] = score(settings, day)
    out["feedback"] = feedback(settings, day)
    if kpi:
        out["kpi_report"] = kpi_report(settings, day)
    log.info("day %s: %d new files, trained=%s, scored %d items %s, %d outcomes folded (%.1f s)", day,
             out["ingest"]["files_new"], out["train_if_due"].get("trained"), out["score"]["items"],
             out["score"]["channels"], out["feedback"].get("outcomes", 0), time.time() - t0)
    return out
