"""Exploration (selection/exploration.py): uncertainty that means something, log revenue, an adaptive share."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.modeling.model import RiskModel
from sunat_pipeline.selection.exploration import adaptive_share, exploration_score, novelty
from sunat_pipeline.settings import SelectionSettings

DAY = date(2026, 7, 1)


def test_novelty_is_widest_for_the_entity_with_the_thinnest_history():
    X = pd.DataFrame({"importer_id_n_insp": [0, 200, 200], "importer_id_fraud_rate": [0.1, 0.1, 0.1],
                      "supplier_id_n_insp": [200, 200, 200], "supplier_id_fraud_rate": [0.1, 0.1, 0.1],
                      "hs6_origin_n_insp": [200, 200, 3], "hs6_origin_fraud_rate": [0.1, 0.1, 0.3]})
    nv = novelty(X)
    assert nv.novelty[0] > nv.novelty[1] and nv.novelty[2] > nv.novelty[1]
    assert list(nv.novelty_entity) == ["importer", "importer", "hs6_origin"]
    assert novelty(pd.DataFrame(index=range(2))).novelty.eq(0).all()  # no profile features: no novelty


def test_the_score_uses_log_revenue_and_both_uncertainties():
    d = pd.DataFrame({"uncertainty": [0.03, 0.03, 0.0, 0.03], "novelty": [0.0, 0.0, 0.03, 0.04],
                      "revenue_if_fraud_usd": [1_000.0, 1_000_000.0, 1_000.0, 1_000.0]})
    s = exploration_score(d)
    assert s[1] / s[0] == pytest.approx(np.log1p(1e6) / np.log1p(1e3))  # x1000 the revenue: x2 the score
    assert s[2] == pytest.approx(s[0])  # a novel declaration counts like an uncertain one
    assert s[3] == pytest.approx(0.05 * np.log1p(1e3))  # in quadrature


def _outcomes(hits_explore: int, hits_random: int, n: int = 40) -> pd.DataFrame:
    rows = []
    for reason, hits in (("exploration", hits_explore), ("random", hits_random)):
        for i in range(n):
            rows.append({"selection_reason": reason, "declaration_id": f"{reason}-{i}",
                         "declaration_date": DAY - timedelta(days=1 + i % 20),
                         "result": "FRAUD" if i < hits else "CLEAN"})
    return pd.DataFrame(rows)


def test_the_exploration_share_follows_its_evidence_within_bounds():
    cfg = SelectionSettings(exploration_share=0.10, exploration_share_min=0.05, exploration_share_max=0.20)
    up = adaptive_share(cfg, _outcomes(12, 4), DAY, 28)
    down = adaptive_share(cfg, _outcomes(1, 8), DAY, 28)
    even = adaptive_share(cfg, _outcomes(5, 5), DAY, 28)
    assert up["share"] > even["share"] > down["share"]
    assert even["share"] == pytest.approx(0.10) and up["share"] <= 0.20 and down["share"] >= 0.05
    assert up["exploration_selected"] == 40 and up["random_selected"] == 40
    # far better or far worse hits the bounds; outcomes of the day itself or of before the window do not count
    assert adaptive_share(cfg, _outcomes(40, 0), DAY, 28)["share"] == 0.20
    assert adaptive_share(cfg, _outcomes(0, 40), DAY, 28)["share"] == 0.05
    late = _outcomes(40, 0).assign(declaration_date=DAY)
    assert adaptive_share(cfg, late, DAY, 28)["share"] == pytest.approx(0.10)
    # switched off, without evidence, or with no exploration at all: the configured share
    assert adaptive_share(cfg.model_copy(update={"exploration_adaptive": False}), _outcomes(12, 4), DAY, 28)[
        "share"] == 0.10
    assert adaptive_share(cfg, None, DAY, 28)["share"] == 0.10
    assert adaptive_share(cfg.model_copy(update={"exploration_share": 0.0}), _outcomes(12, 4), DAY, 28)[
        "share"] == 0.0


def test_bag_members_train_on_bootstrap_resamples():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X.a + rng.normal(0, 0.5, 400) > 1).astype(int)
    kw = dict(n_estimators=10, max_depth=3, bag_size=3, n_jobs=1)
    m = RiskModel(**kw)
    rows, w = m._resample(np.arange(400), 1)
    assert w.sum() == 400 and len(rows) < 400 and (w >= 1).all()  # about 63% distinct rows, drawn 400 times
    rows2, _ = m._resample(np.arange(400), 2)
    assert not np.array_equal(rows, rows2)
    boot = m.fit(X, y).predict(X)
    plain = RiskModel(bootstrap=False, **kw).fit(X, y).predict(X)
    assert boot.uncertainty.mean() > plain.uncertainty.mean()  # sampling uncertainty, not only seed noise
    pd.testing.assert_frame_equal(boot, RiskModel(**kw).fit(X, y).predict(X))  # deterministic
