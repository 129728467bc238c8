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


# --- channels by what each check can detect (issue 14, item 4) ----------------------------------------------

def _mechanism_world(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "kg": rng.normal(size=n)})
    y = (X.a + rng.normal(0, 0.7, n) > 1.2).astype(int).to_numpy()
    # frauds with a high kg signal are quantity frauds (only a physical exam sees them), the rest undervaluation
    mech = np.where(y == 1, np.where(X.kg + rng.normal(0, 0.3, n) > 0, "quantity", "undervaluation"), "")
    return X, y, mech


def test_the_model_learns_which_frauds_only_a_physical_exam_finds():
    X, y, mech = _mechanism_world()
    kw = dict(n_estimators=20, max_depth=3, bag_size=2, n_jobs=1)
    m = RiskModel(**kw).fit(X, y, mechanism=mech, blind=("quantity", "counterfeit"))
    share = m.predict(X).documentary_blind_share
    assert share[X.kg > 1].mean() > 0.8 and share[X.kg < -1].mean() < 0.2
    # without offence codes (an external extract) or without blind offences: no such model, the column is empty
    assert RiskModel(**kw).fit(X, y).predict(X).documentary_blind_share.isna().all()
    assert RiskModel(**kw).fit(X, y, mechanism=mech).predict(X).documentary_blind_share.isna().all()


def test_a_clean_documentary_check_weighs_only_as_far_as_it_could_see():
    X, y, mech = _mechanism_world()
    ch = np.where(np.random.default_rng(1).random(len(y)) < 0.5, "YELLOW", "RED")
    kw = dict(n_estimators=20, max_depth=3, bag_size=2, n_jobs=1)
    plain = RiskModel(**kw).fit(X, y, mechanism=mech, channel=ch, blind=("quantity",))
    weighted = RiskModel(**kw).fit(X, y, mechanism=mech, channel=ch, blind=("quantity",), blind_label_weights=True)
    assert plain.label_weight_mean_ == 1.0 and weighted.label_weight_mean_ < 1.0
    # a clean documentary result where quantity fraud is likely says less: those items score higher
    hi_kg = (X.kg > 1).to_numpy()
    assert weighted.predict(X).fraud_probability[hi_kg].mean() > plain.predict(X).fraud_probability[hi_kg].mean()


def test_red_goes_to_the_picks_a_documentary_check_could_not_clear():
    from sunat_pipeline.selection.select import select_channels
    from sunat_pipeline.settings import OfficeCapacity

    rng = np.random.default_rng(3)
    n = 60
    decl = pd.DataFrame({"declaration_id": [f"d{i:03d}" for i in range(n)], "customs_office": "118",
                         "importer_id": "i", "hs2": "85", "n_items": 1, "fraud_probability": rng.uniform(0, 1, n),
                         "expected_revenue_usd": rng.uniform(0, 100, n), "revenue_if_fraud_usd": 100.0,
                         "uncertainty": 0.0, "rule_score": 0.0, "mandatory": False,
                         "blind_fraud_probability": rng.uniform(0, 0.5, n)})
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=4, yellow=6), random_share=0.0,
                            exploration_share=0.0, default_capacity_mode="fixed")
    base = select_channels(decl, cfg, DAY, 1)
    by = select_channels(decl, cfg.model_copy(update={"channel_by_mechanism": True}), DAY, 1)
    assert (base.channel != "GREEN").equals(by.channel != "GREEN")  # the same declarations are selected
    assert (by.channel == "RED").sum() == (base.channel == "RED").sum() == 4
    sel = by[by.channel != "GREEN"]
    red, yellow = sel[sel.channel == "RED"], sel[sel.channel == "YELLOW"]
    assert red.blind_fraud_probability.min() >= yellow.blind_fraud_probability.max()
