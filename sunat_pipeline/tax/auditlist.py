"""Scoring the month's eligible taxpayers and the capacity-bounded audit list per regional tax office.

Scores (``gold/tax_scores/month=M``): every eligible taxpayer with its anomaly score, the supervised audit
probability where a supervised champion scored the month, and the combined score: the supervised model's rank
percentile blended with the anomaly score's (``tax_audit.anomaly_weight``), or the anomaly percentile alone.

The list (``gold/tax_audit_list/month=M``, schema in docs/tax.md): per office, its capacity (explicit, else
``capacity_share`` of its eligible taxpayers, at least ``min_capacity``); the random share of it drawn
uniformly (seeded by the settings' seed, the month and the office) from the taxpayers not picked by risk, the
rest the top of the combined score. Each row carries plain-language reasons. Same lake and settings, same
bytes: nothing in it depends on the clock.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pandas as pd

from sunat_pipeline.modeling import registry
from sunat_pipeline.settings import Settings
from sunat_pipeline.tax import features as F
from sunat_pipeline.tax import inputs, store
from sunat_pipeline.tax.reasons import reasons as phrase
from sunat_pipeline.tax.train import NoTaxpayers, feature_frame, model_settings

log = logging.getLogger(__name__)
SCHEMA_VERSION = "1"
LIST_COLUMNS = ["taxpayer_id", "tax_office", "region", "sector", "office_rank", "selection_reason",
                "selection_probability", "combined_score", "audit_probability", "anomaly_score",
                "anomaly_percentile", "population_rank", "population_size", "reasons", "cutoff_date",
                "anomaly_model_version", "audit_model_version", "schema_version"]


def _model(settings: Settings, name: str, version: str | None):
    return registry.load_version(model_settings(settings, name), version) if version else None


def score(settings: Settings, month: str) -> dict:
    """Score the month's eligible taxpayers with the versions its training chose; write ``tax_scores``."""
    month = str(inputs.parse_month(month))
    rec = store.read_json(settings, store.MODELS, month)
    if rec is None:
        raise RuntimeError(f"no tax models recorded for {month}: run the train step first")
    ta = settings.tax_audit
    feats = feature_frame(settings, month)
    elig = feats[feats.eligible.astype(bool)].sort_values(F.ID, kind="stable").reset_index(drop=True)
    if elig.empty:
        raise NoTaxpayers(f"no eligible taxpayer for {month}")
    versions = rec["score_with"]
    anomaly = _model(settings, ta.anomaly_model, versions["anomaly"])
    sup = _model(settings, ta.audit_model, versions["supervised"])
    out = elig[[F.ID, "tax_office", "region", "sector"]].copy()
    out["anomaly_score"] = anomaly.score(elig)
    out["anomaly_percentile"] = out.anomaly_score.rank(pct=True, method="average")
    if sup is not None:
        out["audit_probability"] = sup.score(elig)
        sup_pct = out.audit_probability.rank(pct=True, method="average")
        out["combined_score"] = (1 - ta.anomaly_weight) * sup_pct + ta.anomaly_weight * out.anomaly_percentile
    else:
        out["audit_probability"] = np.nan
        out["combined_score"] = out.anomaly_percentile
    out = out.sort_values(["combined_score", F.ID], ascending=[False, True], kind="stable").reset_index(drop=True)
    out["population_rank"] = np.arange(1, len(out) + 1)
    out["anomaly_model_version"] = versions["anomaly"]
    out["audit_model_version"] = versions["supervised"]
    store.write(settings, store.SCORES, month, out)
    log.info("tax scores %s: %d eligible taxpayers scored (anomaly v%s, supervised %s)", month, len(out),
             versions["anomaly"], f"v{versions['supervised']}" if versions["supervised"] else "none")
    return {"month": month, "scored": len(out), "anomaly_version": versions["anomaly"],
            "supervised_version": versions["supervised"]}


def capacity(settings: Settings, office: str, eligible: int) -> int:
    ta = settings.tax_audit
    if office in ta.capacity:
        return int(ta.capacity[office])
    return max(ta.min_capacity, int(round(ta.capacity_share * eligible))) if eligible else 0


def _pick(settings: Settings, month: str, office: str, g: pd.DataFrame) -> pd.DataFrame:
    """The office's list: the top of the combined score, then the random share among the rest."""
    cap = min(capacity(settings, office, len(g)), len(g))
    n_rand = int(round(settings.tax_audit.random_share * cap))
    top = g.head(cap - n_rand).assign(selection_reason="risk", selection_probability=1.0)
    rest = g.iloc[cap - n_rand:]
    p = pd.Period(month, "M")
    rng = np.random.default_rng([settings.seed, p.year * 12 + p.month, zlib.crc32(office.encode())])
    idx = np.sort(rng.choice(len(rest), min(n_rand, len(rest)), replace=False)) if len(rest) else []
    rand = rest.iloc[idx].assign(selection_reason="random",
                                 selection_probability=min(n_rand, len(rest)) / max(len(rest), 1))
    return pd.concat([top, rand], ignore_index=True).assign(office_rank=lambda d: np.arange(1, len(d) + 1))


def build_list(settings: Settings, month: str) -> dict:
    """The month's audit list with reasons; replaces ``gold/tax_audit_list/month=M`` atomically."""
    month = str(inputs.parse_month(month))
    sc = store.read(settings, store.SCORES, month)
    if sc is None:
        raise RuntimeError(f"no tax scores for {month}: run the score step first")
    rec = store.read_json(settings, store.MODELS, month)
    picked = pd.concat([_pick(settings, month, str(o), g.reset_index(drop=True))
                        for o, g in sc.groupby("tax_office", sort=True)], ignore_index=True)
    feats = feature_frame(settings, month).set_index(F.ID).loc[picked[F.ID]].reset_index()
    ta = settings.tax_audit
    versions = rec["score_with"]
    model = _model(settings, ta.audit_model, versions["supervised"]) or _model(
        settings, ta.anomaly_model, versions["anomaly"])
    unusual = getattr(model, "anomaly", None) or model  # the one-sided z-scores of the anomaly model
    said = phrase(feats, model.contributions(feats), unusual.contributions(feats), ta.reasons_top,
                  getattr(unusual, "center_", None))
    n = len(sc)
    lead = [(f"chosen at random for quality control ({_share(r.selection_probability)} chance among the "
             f"{r.tax_office} taxpayers not picked by risk)" if r.selection_reason == "random" else
             f"ranked {r.office_rank} in {r.tax_office} and {r.population_rank} of {n} eligible taxpayers by "
             "combined score")
            for r in picked.itertuples()]
    picked["reasons"] = [[a, *b] for a, b in zip(lead, said, strict=True)]
    picked["population_size"] = n
    picked["cutoff_date"] = inputs.cutoff(month)
    picked["schema_version"] = SCHEMA_VERSION
    out = picked[LIST_COLUMNS]
    path = store.write(settings, store.LIST, month, out)
    counts = out.groupby("selection_reason").size().to_dict()
    log.info("tax audit list %s: %d taxpayers over %d offices (%s) -> %s", month, len(out),
             out.tax_office.nunique(), counts, path)
    return {"month": month, "listed": len(out), "offices": int(out.tax_office.nunique()),
            "by_reason": {str(k): int(v) for k, v in counts.items()}, "path": str(path)}


def _share(x: float) -> str:
    x = float(x)
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"
