"""The champion/challenger gate on all the traffic, not only on what the champion chose to inspect.

The labelled holdout is what past selections inspected: mostly the champion's own top picks, so a challenger
that ranks the same items first looks as good as it, and one that would find what the champion never looked
at cannot show it. The gate therefore estimates, for each model, the share of the holdout days' fraud revenue
it would capture by inspecting the top ``PRIMARY_RATE`` (10%) of **all** items of those days (ranked by its
expected revenue), by inverse-propensity weighting: an inspected item counts ``revenue x fraud /
selection_probability``, where the selection probability is the one the scoring run recorded for its
declaration (1 for mandatory and exploitation picks, the sampling probability for a random pick). The random
quality-control share gives every declaration a chance, so the estimate is unbiased (Horvitz-Thompson, as a
ratio to the estimated total). A 95% interval of the difference comes from a bootstrap over days.

It is used when at least ``MIN_COVERAGE`` of the holdout's items had a recorded, positive selection probability
(an item the policy could never select is outside any inverse-propensity estimate: it is left out, and a policy
without a random share is judged on its labelled holdout) and at least ``MIN_DAYS`` of its days are fully
reported (a day whose inspections are not
all reported yet would count its pending frauds as clean, so it is left out); before that (the legacy history,
or a lake scored before schema 4) the gate falls back to the labelled holdout.

The decision (``decide``): by default a challenger, trained on the newer outcomes, replaces the champion unless
the estimate says it is worse (the whole 95% interval of the difference below ``promotion_margin``). The
estimate rests on the random share's few picks, so most differences between two successive models lie inside
its noise; a gate that demands proof of improvement would keep a stale champion on a coin toss, while this one
still stops a challenger that is clearly worse. ``training.promotion_rule: better`` restores the point rule.

Each gate writes what it compared under ``gold/champion_gate/training_date=D/`` (every holdout item's score
under both models, and the decision), so the decision can be audited and, in the backtest, judged against the
ground truth.
"""

from __future__ import annotations

import json
import logging
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.lake.store import atomic_write_bytes, partition, write_parquet_atomic
from sunat_pipeline.modeling.metrics import PRIMARY_RATE, top_positions
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
MIN_COVERAGE = 0.9  # share of the holdout's items scored with a recorded selection probability
MIN_DAYS = 7  # fully reported holdout days the all-traffic estimate needs (a week of traffic)
N_BOOT = 500
KEY = ["declaration_id", "item_no"]


def gate_dir(settings: Settings, asof: date):
    return partition(settings.gold / "champion_gate", "training_date", asof)


def _scored(settings: Settings, items: pd.DataFrame, since: date, upto: date) -> pd.DataFrame:
    """Each item's recorded selection probability and channel (NaN / None where its day was not scored)."""
    from sunat_pipeline.selection.output import read_scored

    cols = [*KEY, "selection_probability", "channel"]
    sc = read_scored(settings, since=since, upto=upto)
    sc = sc.reindex(columns=cols) if len(sc) else pd.DataFrame(columns=cols)
    sc = sc.assign(item_no=sc.item_no.astype("int64"))
    return items[KEY].assign(item_no=items.item_no.astype("int64")).merge(sc, on=KEY, how="left")


def top_mask(score: np.ndarray, k: float = PRIMARY_RATE) -> np.ndarray:
    """The items in the top ``k`` of ``score`` (the same cut as the training metrics), as a mask."""
    top = np.zeros(len(score), dtype=bool)
    top[top_positions(score, k)] = True
    return top


def ipw_revenue(score, value, pi) -> float:
    """Estimated fraud revenue in the top ``PRIMARY_RATE`` of ``score`` over every item of the period
    (Horvitz-Thompson: unbiased). ``value``: an inspected item's fraud revenue (0 for a clean or uninspected
    one); ``pi``: its selection probability."""
    w = np.asarray(value, float) / np.clip(np.asarray(pi, float), 1e-9, None)
    return float(w[top_mask(score)].sum())


def ipw_share(score, value, pi) -> float:
    """``ipw_revenue`` as a share of the estimated total fraud revenue (a ratio estimator: consistent; both
    models share the denominator, so the comparison's sign is the unbiased difference's)."""
    total = float((np.asarray(value, float) / np.clip(np.asarray(pi, float), 1e-9, None)).sum())
    return ipw_revenue(score, value, pi) / total if total > 0 else 0.0


def _boot_diff(days: np.ndarray, value, pi, challenger, champion, seed: int) -> tuple[float, float]:
    """95% interval of (challenger - champion) share, resampling whole days (the unit of selection)."""
    uniq = np.unique(days)
    idx = [np.flatnonzero(days == d) for d in uniq]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(N_BOOT):
        rows = np.concatenate([idx[k] for k in rng.integers(0, len(uniq), len(uniq))])
        v, p = value[rows], pi[rows]
        diffs.append(ipw_share(challenger[rows], v, p) - ipw_share(champion[rows], v, p))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return round(float(lo), 6), round(float(hi), 6)


def all_traffic(settings: Settings, asof: date, items: pd.DataFrame, labels: pd.DataFrame,
                challenger: np.ndarray, champion: np.ndarray) -> dict:
    """The gate's estimate on every item of the holdout days. ``items``: those items (declared columns);
    ``labels``: the labelled ones (``KEY``, y, revenue); ``challenger``/``champion``: each model's expected
    revenue for ``items``. Writes what it compared; returns the estimate, or ``method: labelled_holdout`` when
    too few items carry a recorded selection probability (then the labelled holdout decides)."""
    dates = pd.to_datetime(items.declaration_date).dt.date
    sc = _scored(settings, items, dates.min(), dates.max()) if len(items) else _scored(settings, items, asof, asof)
    lab = labels[[*KEY, "y", "revenue"]].assign(item_no=labels.item_no.astype("int64"))
    f = sc.merge(lab, on=KEY, how="left").assign(declaration_date=dates.to_numpy(),
                                                 challenger=np.asarray(challenger, float),
                                                 champion=np.asarray(champion, float))
    # Days whose selections are not all reported yet would count pending frauds as clean: left out.
    sel = f.channel.isin(["RED", "YELLOW"])
    reported = (f.y.notna() & sel).groupby(f.declaration_date).sum() / sel.groupby(f.declaration_date).sum()
    done = set(reported[reported >= MIN_COVERAGE].index)
    # An item the day's policy could never have selected (probability 0: no random share, or an office whose
    # capacity went to mandatory hits) is outside what inverse propensity can estimate: left out, and counted
    # against the coverage (a policy without a random share is judged on its labelled holdout).
    positive = f.selection_probability.fillna(0).to_numpy(float) > 0
    f["in_gate"] = f.declaration_date.isin(done) & positive
    write_parquet_atomic(f, gate_dir(settings, asof) / "items.parquet")
    coverage = float(positive.mean()) if len(f) else 0.0
    if coverage < MIN_COVERAGE or len(done) < MIN_DAYS:
        log.info("gate %s: %.0f%% of the holdout's items had a chance of selection on record, %d days fully "
                 "reported: the labelled holdout decides", asof, 100 * coverage, len(done))
        return {"method": "labelled_holdout", "coverage": round(coverage, 4), "days": len(done), "n_items": len(f)}
    g = f[f.in_gate]
    value = np.where(g.y.fillna(0).to_numpy(float) > 0, g.revenue.fillna(0).to_numpy(float), 0.0)
    pi = g.selection_probability.to_numpy(float)
    ch, cp = ipw_share(g.challenger.to_numpy(), value, pi), ipw_share(g.champion.to_numpy(), value, pi)
    lo, hi = _boot_diff(g.declaration_date.astype(str).to_numpy(), value, pi, g.challenger.to_numpy(),
                        g.champion.to_numpy(), settings.seed)
    return {"method": "ipw_all_traffic", "challenger_share": round(ch, 6), "champion_share": round(cp, 6),
            "difference": round(ch - cp, 6), "difference_ci95": [lo, hi], "n_items": len(g),
            "n_labelled": int(g.y.notna().sum()), "days": len(done), "coverage": round(coverage, 4)}


def record_decision(settings: Settings, asof: date, decision: dict) -> None:
    atomic_write_bytes(gate_dir(settings, asof) / "decision.json",
                       json.dumps(decision, indent=2, default=str).encode())


def decide(estimate: dict, margin: float, rule: str) -> tuple[bool, str]:
    """The champion/challenger decision on an all-traffic estimate (module docstring). (promoted, why)."""
    lo, hi = estimate["difference_ci95"]
    diff = estimate["difference"]
    shares = (f"challenger {estimate['challenger_share']:.4f} vs champion {estimate['champion_share']:.4f} of the "
              f"fraud revenue in the top 10% of all traffic, estimated by inverse propensity (difference {diff:+.4f}, "
              f"95% CI [{lo:+.4f}, {hi:+.4f}], margin {margin})")
    if rule == "better":
        return diff >= margin, shares
    if hi < margin:
        return False, f"challenger worse: {shares}"
    return True, f"challenger not shown worse: {shares}"
