"""Tax risk of the importer as its declarations see it (issue 17 item 4, the customs half; docs/tax.md).

The monthly tax run for month M publishes its tables on its run date P(M), day ``tax_audit.run_day`` of M+1
(``tax.store.published_date``): every eligible taxpayer's combined score and rank (``gold/tax_scores``), the
audit list (``gold/tax_audit_list``) and the audit outcomes known at its cutoff (``gold/tax_audit_outcomes``).
A declaration lodged on day D uses the latest month with P(M) < D (strictly, as everything else a declaration
sees was known at the start of D) and the audits known to the runs published before D, each from the first run
that knew it. Nothing published before D (no tax side landed: test worlds, the demo without it, foreign
extracts) gives NaN, which the model reads as missing.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import encode, index_in, to_days
from sunat_pipeline.settings import Settings

NAMES = ("tax_risk_score", "tax_risk_rank_share", "tax_audit_listed", "tax_audits_closed", "tax_audits_assessed")
SCORE_COLUMNS = ["taxpayer_id", "combined_score", "population_rank"]
LIST_COLUMNS = ["taxpayer_id", "selection_reason"]
AUDIT_COLUMNS = ["audit_id", "taxpayer_id", "result"]


def load(settings: Settings, asof: date) -> dict[str, pd.DataFrame]:
    """The tax run's tables published on or before ``asof`` (the features keep those published before each
    declaration's day); keys are ``build_features``' arguments."""
    from sunat_pipeline.tax import store  # the tax run's lake tables (it does not import the customs features)

    audits = store.read_published(settings, store.OUTCOMES, asof, AUDIT_COLUMNS)
    # Each outcomes partition repeats every audit known by then: keep the first run that knew it.
    audits = audits.sort_values(["published_date", "audit_id"], kind="stable").drop_duplicates("audit_id")
    return {"tax_scores": store.read_published(settings, store.SCORES, asof, SCORE_COLUMNS),
            "tax_lists": store.read_published(settings, store.LIST, asof, LIST_COLUMNS),
            "tax_audits": audits.reset_index(drop=True)}


def _grid(df: pd.DataFrame, uq: pd.Index, pub: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    """(importer x published month) array of ``values`` (rows of other taxpayers dropped), ``fill`` elsewhere."""
    g = np.full((len(uq), len(pub)), fill)
    if len(df):
        r = index_in(df.taxpayer_id.astype(str), uq)
        m = np.searchsorted(pub, to_days(df.published_date))
        ok = r >= 0
        g[r[ok], m[ok]] = values[ok]
    return g


def tax_risk_features(items: pd.DataFrame, scores: pd.DataFrame | None = None, lists: pd.DataFrame | None = None,
                      audits: pd.DataFrame | None = None) -> pd.DataFrame:
    """The importer's tax risk as published before each item's day (module docstring); NaN where nothing was."""
    n = len(items)
    out = pd.DataFrame({k: np.full(n, np.nan) for k in NAMES})
    frames = [f if f is not None else pd.DataFrame() for f in (scores, lists, audits)]
    scores, lists, audits = frames
    pubs = [to_days(f.published_date) for f in (scores, lists) if len(f)]
    if not n or not pubs:
        return out
    pub = np.unique(np.concatenate(pubs))
    # The latest month published strictly before the day (-1: none).
    k = np.searchsorted(pub, to_days(items.declaration_date), side="left") - 1
    codes, uq = encode(items.importer_id.astype(str))
    ok = (k >= 0) & (codes >= 0)
    r, c = codes[ok], k[ok]
    if len(scores):
        size = scores.groupby("published_date").taxpayer_id.transform("size").to_numpy(float)
        score = _grid(scores, uq, pub, scores.combined_score.to_numpy(float), np.nan)
        rank = _grid(scores, uq, pub, scores.population_rank.to_numpy(float) / size, np.nan)
        out.loc[ok, "tax_risk_score"] = score[r, c]
        out.loc[ok, "tax_risk_rank_share"] = rank[r, c]
    if len(lists):
        # Only risk picks say something about risk; a random pick counts as not listed.
        listed = _grid(lists, uq, pub, (lists.selection_reason == "risk").to_numpy(float), 0.0)
        had_list = np.isin(pub, to_days(lists.published_date))
        out.loc[ok, "tax_audit_listed"] = np.where(had_list[c], listed[r, c], np.nan)
    closed = np.zeros((len(uq), len(pub)))
    assessed = closed.copy()
    if len(audits):
        a = audits[to_days(audits.published_date) <= pub[-1]]
        ar, am = index_in(a.taxpayer_id.astype(str), uq), np.searchsorted(pub, to_days(a.published_date))
        keep = ar >= 0
        np.add.at(closed, (ar[keep], am[keep]), 1.0)
        np.add.at(assessed, (ar[keep], am[keep]), (a.result == "ASSESSED").to_numpy(float)[keep])
    out.loc[ok, "tax_audits_closed"] = np.cumsum(closed, axis=1)[r, c]
    out.loc[ok, "tax_audits_assessed"] = np.cumsum(assessed, axis=1)[r, c]
    return out
