"""Exploration: where the labels bought with a share of capacity teach the most (docs/selection.md, step 4).

What exploration values, per declaration: ``exploration_score = u x log(1 + revenue at stake if fraudulent)``
(log revenue as in gATE, so a few very large declarations do not take every slot), where ``u`` combines two
uncertainties that mean something:

* the model's: the spread of its bag, whose members train on bootstrap resamples of the labelled rows (the
  sampling uncertainty of the fit, not seed noise; ``modeling/model.py``);
* the evidence's (novelty): the posterior standard deviation of the fraud rate of the item's thinnest-history
  entity - importer, supplier and HS6 x origin pair - from the smoothed profiles (``features/history.py``: a
  Beta posterior with ``SMOOTHING`` pseudo-inspections at the prior). A new importer, a new supplier or an HS
  x origin combination never inspected has the widest posterior; an entity inspected a hundred times the
  narrowest.

The two add in quadrature (``u = sqrt(u_model^2 + u_profile^2)``; the item's maximum over its declaration).
Diversity: among the best candidates, k-means++ seeding over the feature embedding picks valuable yet
mutually different declarations (``kmeanspp_order``).

The share of capacity exploration gets adapts to evidence (``adaptive_share``), within the settings' bounds:
the hit rate of exploration's recent picks against the random share's (both Beta-smoothed), the APT idea of
the DATE simulator in its simplest form: exploration that finds more than random earns capacity, exploration
that finds less gives it back to the model's ranking.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_pipeline.features.history import SMOOTHING
from sunat_pipeline.settings import SelectionSettings

log = logging.getLogger(__name__)
_EPS = 1e-9
# Entities whose thin history makes an item novel: (inspections column, smoothed fraud rate column).
NOVELTY_ENTITIES = {"importer": ("importer_id_n_insp", "importer_id_fraud_rate"),
                    "supplier": ("supplier_id_n_insp", "supplier_id_fraud_rate"),
                    "hs6_origin": ("hs6_origin_n_insp", "hs6_origin_fraud_rate")}
_PRIOR_HITS = 1.0  # Beta(1, 9) on a hit rate: a 10% rate worth ten selections until evidence arrives
_PRIOR_SELECTIONS = 10.0


def standardise(a: np.ndarray) -> np.ndarray:
    """Column-wise z-scores; missing values at the mean; clipped to +-5 so one outlier cannot dominate."""
    a = np.array(a, dtype=np.float64)
    ok = np.isfinite(a)
    cnt = np.maximum(ok.sum(axis=0), 1)
    z = np.where(ok, a, 0.0)
    mu = z.sum(axis=0) / cnt
    sd = np.sqrt(np.where(ok, (a - mu) ** 2, 0.0).sum(axis=0) / cnt)
    z = np.where(ok, (a - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    return np.clip(z, -5.0, 5.0)


def novelty(X: pd.DataFrame) -> pd.DataFrame:
    """Per item: the posterior sd of each entity's fraud rate, the largest (``novelty``) and which entity."""
    sds = {}
    for name, (n_col, r_col) in NOVELTY_ENTITIES.items():
        if n_col in X and r_col in X:
            n = pd.to_numeric(X[n_col], errors="coerce").fillna(0).clip(lower=0).to_numpy(float)
            m = pd.to_numeric(X[r_col], errors="coerce").fillna(0.1).clip(0, 1).to_numpy(float)
            sds[name] = np.sqrt(m * (1 - m) / (n + SMOOTHING + 1))
    if not sds:
        return pd.DataFrame({"novelty": np.zeros(len(X)), "novelty_entity": ""}, index=X.index)
    a = np.column_stack(list(sds.values()))
    names = np.array(list(sds))
    return pd.DataFrame({"novelty": a.max(axis=1).round(6), "novelty_entity": names[a.argmax(axis=1)]},
                        index=X.index)


def exploration_score(decl: pd.DataFrame) -> np.ndarray:
    """u x log(1 + revenue at stake if fraudulent), per declaration (rolled-up columns)."""
    u_model = decl.uncertainty.to_numpy(dtype=float)
    u_prof = decl.novelty.to_numpy(dtype=float) if "novelty" in decl else np.zeros(len(decl))
    u = np.sqrt(np.nan_to_num(u_model) ** 2 + np.nan_to_num(u_prof) ** 2)
    return u * np.log1p(decl.revenue_if_fraud_usd.to_numpy(dtype=float).clip(0))


def adaptive_share(cfg: SelectionSettings, outcomes: pd.DataFrame | None, day: date, window_days: int) -> dict:
    """The day's exploration share and the evidence behind it. ``outcomes``: the offence database's current
    rows (selection_reason, declaration_id, declaration_date, result) known before the day; ``window_days``:
    the declaration days weighed (the KPI report's exploration window, so analysts see the same evidence)."""
    base = cfg.exploration_share
    out = {"share": base, "base": base, "adaptive": cfg.exploration_adaptive}
    if not cfg.exploration_adaptive or base <= 0 or outcomes is None or outcomes.empty:
        return out
    since = day - timedelta(days=window_days)
    o = outcomes[outcomes.selection_reason.isin(["exploration", "random"]) & outcomes.declaration_date.notna()]
    when = pd.to_datetime(o.declaration_date)  # compared as timestamps: no date object per row
    o = o[(when >= pd.Timestamp(since)) & (when < pd.Timestamp(day))]
    # Declarations are what was selected; a hit is a declaration with at least one FRAUD item.
    d = o.assign(hit=o.result == "FRAUD").groupby(["selection_reason", "declaration_id"]).hit.any().reset_index()
    rate, n = {}, {}
    for r in ("exploration", "random"):
        g = d[d.selection_reason == r]
        n[r], hits = len(g), int(g.hit.sum())
        rate[r] = (hits + _PRIOR_HITS) / (len(g) + _PRIOR_SELECTIONS)
    ratio = rate["exploration"] / rate["random"]
    share = float(np.clip(base * ratio, cfg.exploration_share_min, cfg.exploration_share_max))
    out.update({"share": round(share, 4), "ratio": round(ratio, 4), "exploration_selected": n["exploration"],
                "random_selected": n["random"], "exploration_hit_rate": round(rate["exploration"], 4),
                "random_hit_rate": round(rate["random"], 4), "window_days": window_days})
    return out


def kmeanspp_order(score: np.ndarray, embedding: np.ndarray, pool: int, rng: np.random.Generator,
                   eligible: np.ndarray | None = None) -> Iterator[int]:
    """gATE-style exploration order: positions of diverse, valuable candidates.

    The ``pool`` eligible candidates with the highest ``score`` are embedded (standardised over the pool, plus
    a constant bias dimension) and scaled by their score; the first pick is the best score, each next one is
    drawn with probability proportional to its squared distance to the nearest pick so far (k-means++ seeding,
    as BADGE does with gradient embeddings). Valuable points far from what is already picked come first;
    near-duplicates of a pick drop to probability zero. Lazy: O(pool x dims) per pick.
    """
    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0).clip(0)
    n = len(score)
    cand = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    if not len(cand):
        return
    cand = cand[np.lexsort((cand, -score[cand]))][: max(1, int(pool))]
    w = score[cand]
    w = w / w.max() if w.max() > 0 else np.ones(len(cand))
    e = standardise(np.asarray(embedding, dtype=np.float64)[cand]) if embedding is not None and len(
        embedding) else np.zeros((len(cand), 0))
    e = np.hstack([e, np.ones((len(cand), 1))]) * w[:, None]
    first = 0  # the best score (cand is sorted by score)
    yield int(cand[first])
    d2 = ((e - e[first]) ** 2).sum(axis=1)
    d2[first] = 0.0
    left = np.ones(len(cand), dtype=bool)
    left[first] = False
    for _ in range(len(cand) - 1):
        total = d2.sum()
        if total <= _EPS:  # what is left duplicates the picks: best score first
            for j in np.flatnonzero(left):
                yield int(cand[j])
            return
        cs = np.cumsum(d2)
        j = int(np.searchsorted(cs, rng.random() * cs[-1], side="right"))
        j = min(j, len(cand) - 1)
        if not left[j] or d2[j] <= 0:  # float edge at the very end of the cumulative sum
            j = int(np.flatnonzero(left & (d2 > 0))[-1])
        left[j] = False
        yield int(cand[j])
        d2 = np.minimum(d2, ((e - e[j]) ** 2).sum(axis=1))
        d2[j] = 0.0
