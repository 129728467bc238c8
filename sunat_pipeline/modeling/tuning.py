"""Time-budgeted, seeded hyperparameter search: the one search of the weekly retraining and of ``evaluate``.

The search never sees the holdout that decides promotion (nor an evaluation's test file): it splits the
*training* rows by time (the most recent ``valid_share`` of their declaration dates validate), tries the given
parameters first and then random points of the space below, and keeps the parameters with the best primary
metric (``metrics.primary_score``: Revenue@10% of expected revenue; Precision@10% where labels carry no
revenue). A trial starts only if the budget still allows one more of the slowest seen so far, and at most
``max_trials`` run: when the cap binds first the result is reproducible for a seed; when the budget binds
first it depends on the machine's speed, which the logged trial table shows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sunat_pipeline.modeling.metrics import primary_metric, primary_score
from sunat_pipeline.modeling.model import RiskModel

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    best: dict
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    metric: str = ""
    n_fit: int = 0
    n_valid: int = 0
    valid_from: str = ""

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.trials)


def sample_params(rng: np.random.Generator) -> dict:
    """One random point of the search space; the number of trees follows the learning rate."""
    lr = float(np.exp(rng.uniform(np.log(0.02), np.log(0.15))))
    return dict(
        n_estimators=int(np.clip(round(24 / lr, -1), 200, 1200)),
        max_depth=int(rng.choice([4, 5, 6, 7, 8, 10, 12])),
        learning_rate=round(lr, 4),
        min_child_weight=round(float(np.exp(rng.uniform(np.log(0.5), np.log(10)))), 3),
        subsample=round(float(rng.uniform(0.6, 1.0)), 3),
        colsample_bytree=round(float(rng.uniform(0.3, 0.9)), 3),
        reg_lambda=round(float(np.exp(rng.uniform(np.log(0.3), np.log(10)))), 3),
        reg_alpha=float(rng.choice([0.0, 0.1, 1.0])),
        gamma=float(rng.choice([0.0, 0.1, 0.5, 1.0])),
        max_pos_weight=float(rng.choice([1.0, 10.0])),
    )


def time_validation(dates: pd.Series, valid_share: float = 0.25) -> np.ndarray:
    """True for the rows of the most recent ``valid_share`` of distinct dates (at least one date)."""
    d = pd.to_datetime(pd.Series(dates)).dt.normalize()
    days = np.sort(d.unique())
    n_valid = max(1, int(round(len(days) * valid_share)))
    return (d >= days[-n_valid]).to_numpy() if len(days) > 1 else np.zeros(len(d), dtype=bool)


def search(X: pd.DataFrame, y, revenue, dates: pd.Series, base: dict, *, budget_s: float, max_trials: int,
           seed: int, device: str = "cpu", n_jobs: int | None = None) -> SearchResult:
    """Best parameters for ``RiskModel`` on (``X``, ``y``, ``revenue``: None where unknown) by a time split.

    ``base``: the parameters of trial 0 and those the random points do not set."""
    y = np.asarray(y, dtype=float)
    revenue = None if revenue is None else np.asarray(revenue, dtype=float)
    val = time_validation(dates)
    fit = ~val
    dates = pd.to_datetime(pd.Series(dates)).reset_index(drop=True)
    metric = primary_metric(revenue)
    out = SearchResult(best=dict(base), metric=metric, n_fit=int(fit.sum()), n_valid=int(val.sum()),
                       valid_from=str(dates[val].min().date()) if val.any() else "")
    if budget_s <= 0 or max_trials <= 1 or val.sum() == 0 or y[fit].sum() < 10 or y[val].sum() < 3:
        log.info("hyperparameter search skipped (budget %.0f s, %d trials, %d validation frauds): using the "
                 "configured parameters", budget_s, max_trials, int(y[val].sum()) if val.any() else 0)
        return out
    runtime = {"bag_size": 1, "seed": seed, "device": device} | ({} if n_jobs is None else {"n_jobs": n_jobs})
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
        m = RiskModel(**{**params, **runtime})
        m.fit(X[fit], y[fit], None if revenue is None else revenue[fit])
        _, score = primary_score(m.predict(X[val]), y[val], None if revenue is None else revenue[val])
        took = time.perf_counter() - t0
        slowest = max(slowest, took)
        out.trials.append({"trial": i, **{k: params[k] for k in sorted(params) if k not in ("seed", "device")},
                           metric: round(float(score), 6), "seconds": round(took, 2)})
        if score > best_score:
            best_score, out.best = score, params
        log.info("search trial %d: %s=%.4f (%.1f s; best %.4f)", i, metric, score, took, best_score)
    out.seconds = time.perf_counter() - start
    log.info("hyperparameter search: %d trials in %.1f s (budget %.0f s); best %s=%.4f (trial %d)",
             len(out.trials), out.seconds, budget_s, metric, best_score,
             max(out.trials, key=lambda r: r[metric])["trial"])
    return out
