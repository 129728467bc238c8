"""RiskModel on synthetic data: output columns, probability range, determinism, uncertainty, contributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.modeling.metrics import at_k
from sunat_pipeline.modeling.model import RiskModel

COLUMNS = ["fraud_probability", "revenue_if_fraud_usd", "expected_revenue_usd", "uncertainty",
           "documentary_blind_share"]


def make_data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "log_ref_ratio": rng.normal(0, 0.5, n),
        "importer_fraud_rate": rng.beta(2, 10, n),
        "log_cif": rng.normal(9, 1.5, n),
        "noise": rng.normal(0, 1, n),
    })
    logit = -3.0 - 4.0 * X.log_ref_ratio + 8.0 * X.importer_fraud_rate
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    revenue = np.where(y == 1, np.exp(X.log_cif - 2 + rng.normal(0, 0.1, n)), 0.0)
    return X, y, revenue


def _model(seed: int = 3, bag_size: int = 3) -> RiskModel:
    return RiskModel(n_estimators=40, max_depth=3, learning_rate=0.2, bag_size=bag_size, seed=seed, n_jobs=1)


@pytest.fixture(scope="module")
def data():
    X, y, rev = make_data(1500, seed=0)
    Xh, yh, revh = make_data(1000, seed=1)
    return X, y, rev, Xh, yh, revh


@pytest.fixture(scope="module")
def fitted(data):
    X, y, rev, *_ = data
    return _model().fit(X, y, rev)


def test_predict_columns_and_ranges(fitted, data):
    _, _, _, Xh, _, _ = data
    pred = fitted.predict(Xh)
    assert list(pred.columns) == COLUMNS
    assert pred.index.equals(Xh.index)
    assert pred.fraud_probability.between(0, 1).all()
    assert (pred.uncertainty >= 0).all() and (pred.uncertainty > 0).any()
    assert (pred.revenue_if_fraud_usd >= 0).all()
    np.testing.assert_allclose(pred.expected_revenue_usd, pred.fraud_probability * pred.revenue_if_fraud_usd,
                               rtol=1e-4, atol=0.01)
    assert len(fitted.classifiers_) == 3 and fitted.regressor_ is not None


def test_uncertainty_is_the_spread_of_the_bag(fitted, data):
    Xh = data[3]
    bag = fitted.predict_proba_bag(Xh)
    assert bag.shape == (len(Xh), 3)
    pred = fitted.predict(Xh)
    np.testing.assert_allclose(pred.fraud_probability, bag.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(pred.uncertainty, bag.std(axis=1), atol=1e-6)


def test_learns_the_signal(fitted, data):
    _, _, _, Xh, yh, revh = data
    p = fitted.predict(Xh).fraud_probability.to_numpy()
    base = yh.mean()
    assert at_k(p, yh, revh, k=0.1)["precision"] > 2 * base
    # Calibrated back to the labelled-set scale: the mean probability is near the fraud rate.
    assert 0.5 * base < p.mean() < 1.5 * base


def test_deterministic_for_a_seed(data):
    X, y, rev, Xh, _, _ = data
    a = _model(seed=5).fit(X, y, rev).predict(Xh)
    b = _model(seed=5).fit(X, y, rev).predict(Xh)
    pd.testing.assert_frame_equal(a, b)
    c = _model(seed=6).fit(X, y, rev).predict(Xh)
    assert not a.fraud_probability.equals(c.fraud_probability)


def test_column_order_does_not_matter(fitted, data):
    Xh = data[3]
    shuffled = Xh[list(reversed(Xh.columns))].assign(unused=1.0)
    pd.testing.assert_frame_equal(fitted.predict(shuffled), fitted.predict(Xh))


def test_single_member_bag_has_zero_uncertainty(data):
    X, y, _, Xh, _, _ = data
    m = _model(bag_size=1).fit(X, y)
    pred = m.predict(Xh)
    assert (pred.uncertainty == 0).all()
    # Without revenue there is no regressor; revenue falls back to 0.
    assert m.regressor_ is None
    assert (pred.revenue_if_fraud_usd == 0).all() and (pred.expected_revenue_usd == 0).all()


def test_revenue_fallback_is_the_median_when_few_frauds():
    X, y, rev = make_data(300, seed=4)
    keep = np.flatnonzero(y == 0)[:200].tolist() + np.flatnonzero(y == 1)[:5].tolist()
    X, y, rev = X.iloc[keep].reset_index(drop=True), y[keep], rev[keep]
    m = _model().fit(X, y, rev)
    assert m.regressor_ is None
    assert m.revenue_fallback_ == pytest.approx(np.median(rev[y == 1]))
    assert (m.predict(X).revenue_if_fraud_usd == round(m.revenue_fallback_, 2)).all()


def test_contributions_shape_and_additivity(fitted, data):
    Xh = data[3].iloc[:50]
    contrib = fitted.contributions(Xh)
    assert contrib.shape == (50, Xh.shape[1])
    assert list(contrib.columns) == fitted.feature_names_
    assert contrib.index.equals(Xh.index)
    # Contributions plus a constant bias give the first bag member's log-odds.
    raw = fitted.classifiers_[0].predict_proba(Xh[fitted.feature_names_])[:, 1]
    bias = np.log(raw / (1 - raw)) - contrib.sum(axis=1).to_numpy()
    np.testing.assert_allclose(bias, bias[0], atol=1e-4)
    # The noise feature matters less than the true drivers.
    imp = fitted.feature_importance()
    assert set(imp.index) == set(Xh.columns)
    assert imp["noise"] < max(imp["log_ref_ratio"], imp["importer_fraud_rate"])


def test_get_params_round_trip():
    m = _model(seed=9)
    params = m.get_params()
    assert params["seed"] == 9 and params["bag_size"] == 3 and params["n_estimators"] == 40
    assert RiskModel(**params).get_params() == params
