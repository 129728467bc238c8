"""Time-budgeted, seeded hyperparameter search for the daily retraining.

The search never sees the holdout that decides promotion: it splits the *training* part by time (the most
recent ``valid_share`` of its declaration dates validate), tries the configured parameters first and then
random points of the same space as the offline evaluation (``evaluate.sample_params``), and keeps the
parameters with the best primary metric (Revenue@10% of expected revenue). A trial starts only if the
budget still allows one more of the slowest seen so far, and at most ``max_trials`` run: when the cap binds
first the result is reproducible for a seed; when the budget binds first it depends on the machine's speed,
which the logged trial table shows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sunat_pipeline.modeling.metrics import targeting_report
from sunat_pipeline.modeling.model import RiskModel

log = logging.getLogger(__name__)
PRIMARY = "revenue_at_10"


@dataclass
class SearchResult:
    best: dict
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.trials)


def time_validation(dates: pd.Series, valid_share: float = 0.25) -> np.ndarray:
    """True for the rows of the most recent ``valid_share`` of distinct dates (at least one date)."""
    d = pd.to_datetime(dates).dt.normalize()
    days = np.sort(d.unique())
    n_valid = max(1, int(round(len(days) * valid_share)))
    return (d >= days[-n_valid]).to_numpy() if len(days) > 1 else np.zeros(len(d), dtype=bool)


def search(X: pd.DataFrame, y, revenue, dates: pd.Series, base: dict, *, budget_s: float, max_trials: int,
           seed: int, device: str = "cpu") -> SearchResult:
    from sunat_pipeline.modeling.evaluate import sample_params

    y = np.asarray(y, dtype=float)
    revenue = np.asarray(revenue, dtype=float)
    val = time_validation(dates)
    fit = ~val
    out = SearchResult(best=dict(base))
    if budget_s <= 0 or max_trials <= 1 or val.sum() == 0 or y[fit].sum() < 10 or y[val].sum() < 3:
        log.info("hyperparameter search skipped (budget %.0f s, %d trials, %d validation frauds): using the "
                 "configured parameters", budget_s, max_trials, int(y[val].sum()) if val.any() else 0)
        return out
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    slowest = 0.0
    best_score = -np.inf
    for i in range(max_trials):
        elapsed = time.perf_counter() - start
        if i > 0 and elapsed + slowest > budget_s:
            break
        params = dict(base) if i == 0 else {**base, **sample_params(rng)}
        t0 = time.perf_counter()
        # One bag member per trial: the search ranks parameter sets; the bag is for the final model.
        m = RiskModel(**{**params, "bag_size": 1, "seed": seed, "device": device})
        m.fit(X[fit], y[fit], revenue[fit])
        pred = m.predict(X[val])
        score = targeting_report(pred.expected_revenue_usd.to_numpy(), y[val], revenue[val]).get(PRIMARY, 0.0)
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        out.trials.append({"trial": i, **{k: params[k] for k in sorted(params) if k not in ("seed", "device")},
                           PRIMARY: round(float(score), 6), "seconds": round(took, 2)})
        if score > best_score:
            best_score, out.best = score, params
    out.seconds = time.perf_counter() - start
    log.info("hyperparameter search: %d trials in %.1f s (budget %.0f s); best %s=%.4f (trial %d)",
             len(out.trials), out.seconds, budget_s, PRIMARY, best_score,
             max(out.trials, key=lambda r: r[PRIMARY])["trial"])
    return out
