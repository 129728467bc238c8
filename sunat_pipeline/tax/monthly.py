"""The monthly tax run, defined once: the steps the ``sunat_tax_monthly`` DAG wires as tasks, and ``run_month``,
which runs them in order in one process (the tests, the measurement, ``sunat-pipeline tax-month``).

Each step takes the settings and the processed month (``YYYY-MM``) and returns a small summary; the data stays
in the lake. Steps: ingest the tax extracts landed by the cutoff (and reconcile them), features, train (both
models, champion/challenger), score, audit list, fold the audit outcomes back.
"""

from __future__ import annotations

import logging
import time

from sunat_pipeline.settings import Settings
from sunat_pipeline.tax import inputs

log = logging.getLogger(__name__)
STEPS = ("ingest", "features", "train", "score", "audit_list", "fold_outcomes")


def ingest_sources(settings: Settings, month: str) -> dict:
    """Every tax extract landed by the month's cutoff: bronze or quarantine, accepted rows into silver."""
    from sunat_pipeline import daily
    from sunat_pipeline.ingest.sources import TAX_SOURCES

    cut = inputs.cutoff(month)
    done = [daily.ingest(settings, s, cut) for s in TAX_SOURCES]
    return {"month": str(month), "cutoff": cut.isoformat(), "files_new": sum(d["files_new"] for d in done),
            "rows": sum(d["rows"] for d in done), "rejected": [r for d in done for r in d["rejected"]]}


def reconcile(settings: Settings, month: str) -> dict:
    """Prove every tax file landed by the cutoff is in bronze or quarantine (raises otherwise)."""
    from sunat_pipeline import ingest as ing
    from sunat_pipeline.ingest.sources import TAX_SOURCES

    return ing.reconcile(settings, inputs.cutoff(month), TAX_SOURCES)


def ingest(settings: Settings, month: str) -> dict:
    """``ingest_sources`` then ``reconcile`` (the DAG's ingest task)."""
    out = ingest_sources(settings, month)
    out["landed"] = reconcile(settings, month)["landed"]
    return out


def features(settings: Settings, month: str) -> dict:
    """The month's taxpayer features, rebuilt from what the cutoff allows (``gold/tax_features``)."""
    from sunat_pipeline.tax.train import feature_frame

    f = feature_frame(settings, str(inputs.parse_month(month)), refresh=True)
    elig = int(f.eligible.astype(bool).sum()) if len(f) else 0
    log.info("tax features %s: %d taxpayers, %d eligible", month, len(f), elig)
    return {"month": str(month), "taxpayers": len(f), "eligible": elig}


def train(settings: Settings, month: str) -> dict:
    from sunat_pipeline.tax import train as tr

    r = tr.train(settings, month)
    return {"month": r["month"], "n_labels": r["n_labels"], "n_positive": r["n_positive"],
            "score_with": r["score_with"],
            **{f"{k}_promoted": r[k].get("promoted") for k in ("anomaly", "supervised")}}


def score(settings: Settings, month: str) -> dict:
    from sunat_pipeline.tax import auditlist

    return auditlist.score(settings, month)


def audit_list(settings: Settings, month: str) -> dict:
    from sunat_pipeline.tax import auditlist

    return auditlist.build_list(settings, month)


def fold_outcomes(settings: Settings, month: str) -> dict:
    from sunat_pipeline.tax import outcomes

    m = str(inputs.parse_month(month))
    return outcomes.fold(settings, m, inputs.load(settings, m))


def run_month(settings: Settings, month: str) -> dict[str, dict]:
    """Every step for ``month`` in order, in this process (what one DAG run does)."""
    month = str(inputs.parse_month(month))
    t0 = time.time()
    steps = {"ingest": ingest, "features": features, "train": train, "score": score, "audit_list": audit_list,
             "fold_outcomes": fold_outcomes}
    out = {step: steps[step](settings, month) for step in STEPS}
    log.info("tax month %s: %d new files, %d eligible, scored with %s, listed %d %s, %d audits known (%.1f s)",
             month, out["ingest"]["files_new"], out["features"]["eligible"], out["train"]["score_with"],
             out["audit_list"]["listed"], out["audit_list"]["by_reason"], out["fold_outcomes"]["audits_known"],
             time.time() - t0)
    return out
