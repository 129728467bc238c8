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
