"""Targeting metrics at an inspection rate on hand-made examples with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sunat_pipeline.modeling.metrics import at_k, targeting_report

SCORE = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
Y = [1, 0, 1, 0, 0, 1, 0, 0, 0, 1]
# Revenue of a clean item (index 1) must be ignored: only frauds recover revenue.
REV = [100.0, 50.0, 10.0, 0.0, 0.0, 300.0, 0.0, 0.0, 0.0, 40.0]


def test_at_k_hand_example():
    m = at_k(SCORE, Y, REV, k=0.3)  # top 3: items 0, 1, 2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["revenue"] == pytest.approx(110 / 450)
    assert m["norm_rev"] == pytest.approx(110 / 440)  # best 3 frauds: 300 + 100 + 40


def test_at_least_one_item_is_selected():
    m = at_k(SCORE, Y, REV, k=0.01)  # 0.1 items rounds to 0: still one inspection
    assert m == pytest.approx({"precision": 1.0, "recall": 0.25, "revenue": 100 / 450, "norm_rev": 100 / 300})


def test_perfect_and_reversed_rankings():
    y = np.array(Y)
    rev = np.array(REV) * y
    perfect = at_k(rev + y, y, REV, k=0.4)
    assert perfect == pytest.approx({"precision": 1.0, "recall": 1.0, "revenue": 1.0, "norm_rev": 1.0})
    worst = at_k(-(rev + y), y, REV, k=0.4)
    assert worst["precision"] == 0.0 and worst["recall"] == 0.0 and worst["revenue"] == 0.0


def test_ties_keep_the_original_order():
    m = at_k([1.0] * 10, Y, k=0.2)  # ties: the first two items
    assert m == pytest.approx({"precision": 0.5, "recall": 0.25})
    assert "revenue" not in m


def test_no_frauds_gives_zero_not_nan():
    m = at_k(SCORE, [0] * 10, REV, k=0.5)
    assert m == {"precision": 0.0, "recall": 0.0, "revenue": 0.0, "norm_rev": 0.0}


def test_targeting_report_keys_and_values():
    r = targeting_report(SCORE, Y, REV, rates=(0.1, 0.3, 0.025))
    names = ("precision", "recall", "revenue", "norm_rev")
    assert set(r) == {f"{m}_at_{t}" for m in names for t in ("10", "30", "2_5")}
    assert r["precision_at_30"] == round(2 / 3, 6)
    assert r["recall_at_10"] == 0.25
    assert r["norm_rev_at_30"] == 0.25
    default = targeting_report(SCORE, Y)
    assert set(default) == {f"{m}_at_{t}" for m in ("precision", "recall") for t in ("1", "2", "5", "10")}


def test_primary_metric_is_revenue_at_10_and_precision_without_revenue():
    import pandas as pd

    from sunat_pipeline.modeling.metrics import PRIMARY_METRIC, primary_metric, primary_score

    n = 20
    y = np.array([1, 0] * 10)
    revenue = np.where(y == 1, np.arange(n, dtype=float), 0.0)
    # Expected revenue ranks the frauds with the most revenue first; the probability ranks a clean item first.
    pred = pd.DataFrame({"fraud_probability": np.r_[0.0, 1.0, np.zeros(n - 2)],
                         "expected_revenue_usd": revenue.copy()})
    assert primary_metric(revenue) == PRIMARY_METRIC == "revenue_at_10"
    name, value = primary_score(pred, y, revenue)  # top 2 by expected revenue: frauds 18 and 16
    assert name == "revenue_at_10" and value == pytest.approx((18 + 16) / revenue.sum(), abs=1e-6)
    name, value = primary_score(pred, y)  # no revenue: top 2 by probability, item 1 (clean) and item 0 (fraud)
    assert name == "precision_at_10" and value == pytest.approx(0.5)


def test_calibration_uses_equal_count_bins():
    from sunat_pipeline.modeling.metrics import calibration

    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    cal, table = calibration(p, y, bins=10)
    assert len(table) == 10 and table.n.sum() == 5000 and (table.n == 500).all()
    assert (table.p_min.to_numpy()[1:] >= table.p_max.to_numpy()[:-1]).all()
    assert cal["ece"] < 0.03 and abs(cal["brier"] - np.mean((p - y) ** 2)) < 1e-12
    np.testing.assert_allclose(table.observed_rate, [y[(p >= lo) & (p <= hi)].mean() for lo, hi in
                                                     zip(table.p_min, table.p_max, strict=True)])
    bad, _ = calibration(np.clip(p * 0.3, 0, 1), y)
    assert bad["ece"] > 0.2
    one_class, _ = calibration(p, np.zeros(5000))  # a holdout without frauds still has a Brier score
    assert one_class["brier"] == pytest.approx(np.mean(p ** 2)) and one_class["observed_rate"] == 0.0
