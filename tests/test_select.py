"""Channel selection: capacity per office, mandatory first, random share, exploitation, exploration, rollup."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.selection.select import kmeanspp_order, rollup, select_channels
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings

DAY = date(2026, 3, 2)
CFG = SelectionSettings(default_capacity=OfficeCapacity(red=4, yellow=6),
                        capacity={"118": OfficeCapacity(red=6, yellow=9)}, random_share=0.2, exploration_share=0.2,
                        exploitation_revenue_share=1.0)  # exploitation ranked by expected revenue only


def decls(n_per_office: int = 50, offices=("118", "235", "046"), seed: int = 0, mandatory: dict | None = None):
    rng = np.random.default_rng(seed)
    frames = []
    for o in offices:
        n = n_per_office
        p = rng.beta(1, 8, n)
        rev = rng.lognormal(6, 1.5, n)
        frames.append(pd.DataFrame({
            "declaration_id": [f"{o}-2026-10-{i:07d}" for i in range(n)],
            "customs_office": o,
            "importer_id": rng.choice([f"20{k:09d}" for k in range(15)], n),
            "hs2": rng.choice(["61", "85", "84", "39"], n),
            "fraud_probability": p,
            "expected_revenue_usd": p * rev,
            "revenue_if_fraud_usd": rev,
            "uncertainty": rng.uniform(0, 0.2, n),
            "rule_score": rng.uniform(0, 1, n).round(3),
            "mandatory": False,
        }))
    d = pd.concat(frames, ignore_index=True)
    for o, k in (mandatory or {}).items():
        idx = d.index[d.customs_office == o][:k]
        d.loc[idx, "mandatory"] = True
    return d


def _counts(out: pd.DataFrame) -> pd.DataFrame:
    return out.groupby(["customs_office", "channel"]).size().unstack(fill_value=0)


def test_every_declaration_gets_exactly_one_channel():
    d = decls()
    out = select_channels(d, CFG, DAY, seed=42)
    assert len(out) == len(d)
    pd.testing.assert_frame_equal(out[d.columns], d)
    assert out.channel.isin(["RED", "YELLOW", "GREEN"]).all()
    assert ((out.channel == "GREEN") == (out.selection_reason == "none")).all()
    assert set(out.selection_reason) <= {"mandatory_rule", "random", "exploitation", "exploration", "none"}


def test_capacity_per_office_is_filled_and_never_exceeded():
    d = decls(mandatory={"235": 2})
    out = select_channels(d, CFG, DAY, seed=42)
    c = _counts(out)
    for office in ("118", "235", "046"):
        cap = CFG.capacity_for(office)
        assert c.loc[office, "RED"] == cap.red
        assert c.loc[office, "YELLOW"] == cap.yellow
    assert CFG.capacity_for("118").red == 6 and CFG.capacity_for("999").red == 4


def test_small_office_selects_at_most_what_it_has():
    d = decls(n_per_office=5, offices=("046",))
    out = select_channels(d, CFG, DAY, seed=1)
    assert (out.channel != "GREEN").sum() == 5
    assert (out.channel == "RED").sum() == 4


def test_mandatory_hits_are_selected_first_and_red_first():
    d = decls(mandatory={"046": 3, "118": 8})
    out = select_channels(d, CFG, DAY, seed=42)
    m = out[out.mandatory]
    assert (m.selection_reason == "mandatory_rule").all()
    assert (out.selection_reason[~out.mandatory] != "mandatory_rule").all()
    assert (m.channel[m.customs_office == "046"] == "RED").all()
    # 118 has 6 RED slots: the 6 mandatory hits with the highest rule score go RED, the rest YELLOW.
    m118 = m[m.customs_office == "118"].sort_values(["rule_score", "declaration_id"], ascending=[False, True])
    assert m118.channel.tolist() == ["RED"] * 6 + ["YELLOW"] * 2
    c = _counts(out)
    assert c.loc["118", "RED"] == 6 and c.loc["118", "YELLOW"] == 9


def test_mandatory_overflow_beyond_capacity_is_still_selected(caplog):
    d = decls(n_per_office=30, offices=("046",), mandatory={"046": 13})
    with caplog.at_level(logging.WARNING, logger="sunat_pipeline.selection.select"):
        out = select_channels(d, CFG, DAY, seed=42)
    assert (out.channel[out.mandatory] != "GREEN").all()
    assert (out.channel[~out.mandatory] == "GREEN").all()
    assert (out.channel == "RED").sum() == 4 + 3 and (out.channel == "YELLOW").sum() == 6
    assert "3 mandatory selections exceeded office capacity" in caplog.text


def test_random_share_count_and_spread_over_channels():
    d = decls()
    out = select_channels(d, CFG, DAY, seed=42)
    for office in ("118", "235", "046"):
        cap = CFG.capacity_for(office)
        g = out[out.customs_office == office]
        n_rand = int(round(CFG.random_share * (cap.red + cap.yellow)))
        assert (g.selection_reason == "random").sum() == n_rand > 0
        # Random selections are spread over RED and YELLOW in proportion to capacity (issue #6).
        n_red = int(round(CFG.random_share * cap.red))
        assert (g.channel[g.selection_reason == "random"] == "RED").sum() == n_red
        assert (g.channel[g.selection_reason == "random"] == "YELLOW").sum() == n_rand - n_red
        n_explore = int(round(CFG.exploration_share * (cap.red + cap.yellow)))
        assert (g.selection_reason == "exploration").sum() == n_explore
        assert (g.selection_reason == "exploitation").sum() == cap.red + cap.yellow - n_rand - n_explore


def test_exploitation_takes_the_highest_expected_revenue_left():
    d = decls()
    out = select_channels(d, CFG, DAY, seed=42)
    for _, g in out.groupby("customs_office"):
        exploit = g.expected_revenue_usd[g.selection_reason == "exploitation"]
        later = g.expected_revenue_usd[g.selection_reason.isin(["exploration", "none"])]
        assert exploit.min() >= later.max()


def test_no_random_or_exploration_share():
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=2, yellow=3), random_share=0, exploration_share=0,
                            exploitation_revenue_share=1.0)
    d = decls(offices=("046",))
    out = select_channels(d, cfg, DAY, seed=42)
    sel = out[out.channel != "GREEN"]
    assert (sel.selection_reason == "exploitation").all() and len(sel) == 5
    top5 = d.sort_values("expected_revenue_usd", ascending=False).declaration_id.head(5)
    assert set(sel.declaration_id) == set(top5)


def test_deterministic_for_a_seed_and_independent_of_row_order():
    d = decls()
    a = select_channels(d, CFG, DAY, seed=42)
    b = select_channels(d, CFG, DAY, seed=42)
    pd.testing.assert_frame_equal(a, b)
    shuffled = d.sample(frac=1.0, random_state=3).reset_index(drop=True)
    c = select_channels(shuffled, CFG, DAY, seed=42)
    pd.testing.assert_series_equal(
        a.set_index("declaration_id").channel.sort_index(), c.set_index("declaration_id").channel.sort_index())
    rand = {s: set(select_channels(d, CFG, DAY, seed=s).query("selection_reason == 'random'").declaration_id)
            for s in (1, 2)}
    assert rand[1] != rand[2]  # the random share depends on the seed
    other_day = select_channels(d, CFG, date(2026, 3, 3), seed=1).query("selection_reason == 'random'")
    assert set(other_day.declaration_id) != rand[1]  # ... and on the day


def test_exploration_spreads_over_the_feature_space():
    # a, b, c are near-duplicates (same importer and chapter); d and e lie elsewhere (k-means++ seeding).
    score = np.array([10.0, 9.9, 9.8, 6.0, 7.0])
    emb = np.array([[0.0, 0.0], [0.0, 0.01], [0.01, 0.0], [5.0, 0.0], [0.0, 5.0]])
    order = list(kmeanspp_order(score, emb, pool=10, rng=np.random.default_rng(0)))
    assert order[0] == 0  # the most valuable first
    assert set(order[:3]) == {0, 3, 4}
    assert sorted(order) == [0, 1, 2, 3, 4]
    assert list(kmeanspp_order(score, emb, pool=1, rng=np.random.default_rng(0))) == [0]


def test_rollup_math():
    items = pd.DataFrame({
        "declaration_id": ["D1", "D1", "D1", "D2", "D3"],
        "item_no": [1, 2, 3, 1, 1],
        "customs_office": ["118", "118", "118", "235", "046"],
        "importer_id": ["A", "A", "A", "B", "C"],
        "hs_code": ["8517130000", "6109100000", "3915900000", "2914110000", "0106200000"],
        "fraud_probability": [0.5, 0.2, 0.0, 0.3, 1.0],
        "expected_revenue_usd": [10.0, 5.0, 0.0, 7.0, 3.0],
        "revenue_if_fraud_usd": [20.0, 25.0, 1.0, 23.0, 3.0],
        "uncertainty": [0.01, 0.05, 0.02, 0.0, 0.1],
        "rule_score": [0.0, 0.3, 0.6, 0.0, 0.9],
        "mandatory": [False, False, True, False, True],
    })
    d = rollup(items).set_index("declaration_id")
    assert list(d.index) == ["D1", "D2", "D3"]
    np.testing.assert_allclose(d.fraud_probability, [1 - 0.5 * 0.8 * 1.0, 0.3, 0.999999])
    np.testing.assert_allclose(d.expected_revenue_usd, [15.0, 7.0, 3.0])
    np.testing.assert_allclose(d.revenue_if_fraud_usd, [25.0, 23.0, 3.0])
    np.testing.assert_allclose(d.uncertainty, [0.05, 0.0, 0.1])
    np.testing.assert_allclose(d.rule_score, [0.6, 0.0, 0.9])
    assert d.mandatory.tolist() == [True, False, True]
    assert d.hs2.tolist() == ["85", "29", "01"]
    assert d.customs_office.tolist() == ["118", "235", "046"]


@pytest.mark.parametrize("probs", [[0.1], [0.1, 0.1], [0.3, 0.4, 0.5, 0.6]])
def test_rollup_probability_is_one_minus_product(probs):
    items = pd.DataFrame({"declaration_id": "X", "customs_office": "118", "importer_id": "A",
                          "hs_code": "8517130000", "fraud_probability": probs, "expected_revenue_usd": 1.0,
                          "revenue_if_fraud_usd": 1.0, "uncertainty": 0.0, "rule_score": 0.0, "mandatory": False})
    p = rollup(items).fraud_probability.iloc[0]
    assert p == pytest.approx(1 - np.prod(1 - np.array(probs)))
    assert p >= max(probs) - 1e-12
