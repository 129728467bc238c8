"""The time-budgeted hyperparameter search of the weekly retraining."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.modeling.metrics import PRIMARY_METRIC
from sunat_pipeline.modeling.tuning import sample_params, search, time_validation

BASE = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.2}


def _data(n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    y = (X.a + 0.5 * rng.normal(size=n) > 1.2).astype(int)
    revenue = np.where(y == 1, np.exp(rng.normal(7, 1, n)), 0.0)
    dates = pd.Series(pd.to_datetime("2026-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 60, n)), unit="D"))
    return X, y, revenue, dates


def test_validation_is_the_most_recent_dates():
    dates = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]))
    assert time_validation(dates, 0.25).tolist() == [False, False, False, True]


def test_search_tries_the_base_first_and_respects_the_trial_cap():
    X, y, rev, dates = _data()
    res = search(X, y, rev, dates, BASE, budget_s=600, max_trials=4, seed=3)
    t = res.table()
    assert len(t) == 4 and t.trial.tolist() == [0, 1, 2, 3] and res.metric == PRIMARY_METRIC
    assert t.iloc[0][["n_estimators", "max_depth", "learning_rate"]].tolist() == [30, 3, 0.2]
    # Later trials are the seeded random points of the space, over the base.
    rng = np.random.default_rng(3)
    for i in (1, 2, 3):
        expected = {**BASE, **sample_params(rng)}
        assert {k: t.iloc[i][k] for k in expected} == pytest.approx(expected), i
    # The result is the parameters of the trial with the best metric (the first of equals).
    best = int(t[PRIMARY_METRIC].idxmax())
    assert t.iloc[best][PRIMARY_METRIC] == t[PRIMARY_METRIC].max()
    assert res.best == pytest.approx({k: t.iloc[best][k] for k in res.best})
    assert res.best == BASE if best == 0 else res.best != BASE


def test_labels_without_revenue_are_ranked_by_precision():
    X, y, _, dates = _data()
    res = search(X, y, None, dates, BASE, budget_s=600, max_trials=2, seed=3)
    assert res.metric == "precision_at_10" and len(res.trials) == 2
    assert all(0 <= r["precision_at_10"] <= 1 for r in res.trials)


def test_search_is_reproducible_when_the_cap_binds():
    X, y, rev, dates = _data()
    a = search(X, y, rev, dates, BASE, budget_s=600, max_trials=3, seed=5)
    b = search(X, y, rev, dates, BASE, budget_s=600, max_trials=3, seed=5)
    assert a.best == b.best
    pd.testing.assert_frame_equal(a.table().drop(columns="seconds"), b.table().drop(columns="seconds"))
    assert len(a.trials) == 3


def test_no_budget_means_the_base_parameters():
    X, y, rev, dates = _data()
    res = search(X, y, rev, dates, BASE, budget_s=0, max_trials=5, seed=1)
    assert res.best == BASE and res.trials == []
