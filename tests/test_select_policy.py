"""Selection policy (issue #6): workload units, per-office capacity, random spread, mandatory first,
exploitation mix, k-means++ exploration, determinism, a 50,000-item day, and reasons in words."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_select import synthetic_day
from sunat_pipeline.features.catalog import CATALOG, FEATURES
from sunat_pipeline.selection.reasons import _DESCRIPTIONS, _selection_notes, explain
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.selection.select import (
    BASIS,
    EMB_PREFIX,
    item_embedding,
    kmeanspp_order,
    rollup,
    select_channels,
    workload,
)
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings, get_settings

DAY = date(2026, 7, 1)


def decls(n: int = 200, offices=("118", "235"), seed: int = 0, mandatory: int = 0, max_items: int = 6):
    rng = np.random.default_rng(seed)
    frames = []
    for o in offices:
        p = rng.beta(1, 8, n)
        rev = rng.lognormal(6, 1.5, n)
        frames.append(pd.DataFrame({
            "declaration_id": [f"{o}-2026-10-{i:07d}" for i in range(n)],
            "customs_office": o,
            "importer_id": rng.choice([f"20{k:09d}" for k in range(30)], n),
            "hs2": rng.choice(["61", "85", "84", "39", "29"], n),
            "n_items": rng.integers(1, max_items + 1, n),
            "fraud_probability": p,
            "expected_revenue_usd": p * rev,
            "revenue_if_fraud_usd": rev,
            "uncertainty": rng.uniform(0, 0.2, n),
            "rule_score": rng.uniform(0, 1, n).round(3),
            "mandatory": False,
        }))
    d = pd.concat(frames, ignore_index=True)
    if mandatory:
        for o in offices:
            d.loc[d.index[d.customs_office == o][:mandatory], "mandatory"] = True
    return d


def _units(out: pd.DataFrame, office: str, channel: str, reason: str | None = None) -> float:
    g = out[(out.customs_office == office) & (out.channel == channel)]
    if reason:
        g = g[g.selection_reason == reason]
    return float(g.workload_units.sum())


# --- capacity ------------------------------------------------------------------------------------

def test_workload_units_fill_each_channel_without_exceeding_it():
    cap = OfficeCapacity(red=300, yellow=450, unit="workload")
    cfg = SelectionSettings(default_capacity=cap, random_share=0.2, exploration_share=0.1)
    d = decls()
    out = select_channels(d, cfg, DAY, seed=42)
    np.testing.assert_allclose(out.workload_units, 10 + 5 * d.n_items)  # ASYCUDA-style defaults
    for o in ("118", "235"):
        g = out[out.customs_office == o]
        red, yellow = _units(out, o, "RED"), _units(out, o, "YELLOW")
        assert red <= 300 and yellow <= 450
        # Filled: no GREEN declaration would still fit in what is left of either channel.
        smallest_green = g.workload_units[g.channel == "GREEN"].min()
        assert smallest_green > 300 - red and smallest_green > 450 - yellow
        # A big declaration counts for more than a small one: fewer declarations than units/10.
        assert (g.channel != "GREEN").sum() < 750 / 10


def test_unit_costs_are_settings_and_an_office_may_override_them():
    cfg = SelectionSettings(workload_per_declaration=4, workload_per_item=2,
                            default_capacity=OfficeCapacity(red=40, yellow=60, unit="workload"),
                            capacity={"235": OfficeCapacity(red=40, yellow=60, unit="workload", per_declaration=0,
                                                            per_item=1)})
    d = decls()
    out = select_channels(d, cfg, DAY, seed=1)
    a, b = out[out.customs_office == "118"], out[out.customs_office == "235"]
    np.testing.assert_allclose(a.workload_units, 4 + 2 * a.n_items)
    np.testing.assert_allclose(b.workload_units, b.n_items)
    np.testing.assert_allclose(workload(np.array([1, 3]), cfg, cfg.capacity_for("118")), [6, 10])
    assert _units(out, "235", "RED") <= 40 and _units(out, "235", "YELLOW") <= 60
    assert (b.channel != "GREEN").sum() > (a.channel != "GREEN").sum()  # cheaper declarations: more of them


def test_capacity_is_per_office_and_may_mix_units():
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=3, yellow=5),
                            capacity={"118": OfficeCapacity(red=10, yellow=20),
                                      "235": OfficeCapacity(red=200, yellow=100, unit="workload")})
    d = decls(offices=("118", "235", "046"))
    out = select_channels(d, cfg, DAY, seed=42)
    c = out.groupby(["customs_office", "channel"]).size().unstack(fill_value=0)
    assert (c.loc["118", "RED"], c.loc["118", "YELLOW"]) == (10, 20)
    assert (c.loc["046", "RED"], c.loc["046", "YELLOW"]) == (3, 5)
    assert _units(out, "235", "RED") <= 200 and _units(out, "235", "YELLOW") <= 100


# --- random, mandatory, exploitation -------------------------------------------------------------

def test_random_share_is_spread_over_red_and_yellow_in_proportion_to_capacity():
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=20, yellow=30), random_share=0.2)
    out = select_channels(decls(), cfg, DAY, seed=42)
    for o in ("118", "235"):
        r = out[(out.customs_office == o) & (out.selection_reason == "random")]
        assert (r.channel == "RED").sum() == 4 and (r.channel == "YELLOW").sum() == 6
    # In workload units: at least the share of each channel, overshooting by less than one declaration.
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=200, yellow=600, unit="workload"), random_share=0.25)
    out = select_channels(decls(), cfg, DAY, seed=42)
    for o in ("118", "235"):
        for ch, cap in (("RED", 200), ("YELLOW", 600)):
            u = _units(out, o, ch, "random")
            assert 0.25 * cap <= u < 0.25 * cap + 10 + 5 * 6


def test_random_selection_is_uniform_over_the_rest():
    # Over many days, the random share picks low- and high-risk declarations alike.
    d = decls(n=100, offices=("118",))
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=10, yellow=10), random_share=0.5)
    picks = pd.concat([select_channels(d, cfg, date(2026, 7, k), seed=3).query("selection_reason == 'random'")
                       for k in range(1, 29)])
    low = d.fraud_probability < d.fraud_probability.median()
    share_low = picks.declaration_id.isin(d.declaration_id[low]).mean()
    assert 0.35 < share_low < 0.65


def test_a_random_quota_under_one_declaration_still_draws_and_its_propensity_is_what_it_draws():
    """0.15 x 3 = 0.45 declarations a day: rounded at random, the office draws on about 45% of days (never, with
    half-up rounding), so every declaration has a chance on record every day, and the recorded probability is
    the chance the draw really gives (picks over days and declarations)."""
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=1, yellow=2), random_share=0.15,
                            exploration_share=0.0)
    d = decls(n=40, offices=("019",))
    days = [date.fromordinal(DAY.toordinal() + k) for k in range(400)]
    outs = [select_channels(d, cfg, day, seed=5) for day in days]
    drew = np.array([(o.selection_reason == "random").sum() for o in outs])
    assert set(drew) == {0, 1} and 0.38 < drew.mean() < 0.52
    green = pd.concat([o[o.channel == "GREEN"] for o in outs])
    assert (green.selection_probability > 0).all()
    # The draw comes before the model's picks, over all 40 (no mandatory hit): 0.45 / 40 recorded for each,
    # what the draws gave over the 400 days (about 0.45 x 400 picks of 40 x 400 chances).
    recorded = pd.concat([o[o.selection_reason.isin(["random", "none"])] for o in outs]).selection_probability
    assert np.allclose(recorded, round(0.45 / len(d), 6))
    assert abs(drew.sum() / (len(days) * len(d)) / recorded.mean() - 1) < 0.15


def test_mandatory_rules_select_before_random_and_model():
    d = decls(mandatory=12)
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=10, yellow=6), random_share=0.5,
                            exploration_share=0.5)
    out = select_channels(d, cfg, DAY, seed=42)
    for o in ("118", "235"):
        g = out[out.customs_office == o]
        m = g[g.mandatory]
        assert (m.selection_reason == "mandatory_rule").all() and (m.channel != "GREEN").all()
        # 12 mandatory hits fill the 10 RED slots and 2 of 6 YELLOW: the random quota keeps its YELLOW part
        # (3 of 6), exploration its share of what is left (1); nothing is left for exploitation.
        assert (g.selection_reason == "random").sum() == 3
        assert (g.selection_reason == "exploration").sum() == 1
        assert (g.channel[g.selection_reason.isin(["random", "exploration"])] == "YELLOW").all()
        assert not (g.selection_reason == "exploitation").any()
    # Mandatory hits beyond capacity are still selected (RED), in workload units too.
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=30, yellow=0, unit="workload"))
    out = select_channels(decls(mandatory=12), cfg, DAY, seed=42)
    assert (out.channel[out.mandatory] == "RED").all() and (out.channel[~out.mandatory] == "GREEN").all()


def test_exploitation_mixes_expected_revenue_and_fraud_probability():
    d = decls(n=300, offices=("118",))
    base = dict(default_capacity=OfficeCapacity(red=8, yellow=12), random_share=0, exploration_share=0)
    rev = select_channels(d, SelectionSettings(**base, exploitation_revenue_share=1.0), DAY, seed=1)
    prob = select_channels(d, SelectionSettings(**base, exploitation_revenue_share=0.0), DAY, seed=1)
    mix = select_channels(d, SelectionSettings(**base, exploitation_revenue_share=0.5), DAY, seed=1)
    top = {k: set(d.nlargest(20, k).declaration_id) for k in ("expected_revenue_usd", "fraud_probability")}
    assert set(rev.declaration_id[rev.channel != "GREEN"]) == top["expected_revenue_usd"]
    assert set(prob.declaration_id[prob.channel != "GREEN"]) == top["fraud_probability"]
    assert (prob.selection_basis[prob.channel != "GREEN"] == "exploitation:fraud_probability").all()
    m = mix[mix.channel != "GREEN"]
    assert (m.selection_basis == "exploitation:expected_revenue").sum() == 10
    assert (m.selection_basis == "exploitation:fraud_probability").sum() == 10
    top10 = {k: set(d.nlargest(10, k).declaration_id) for k in top}
    assert top10["expected_revenue_usd"] | top10["fraud_probability"] <= set(m.declaration_id)
    # The highest-ranked go RED (physical examination) first.
    assert d.set_index("declaration_id").expected_revenue_usd.idxmax() in set(m.declaration_id[m.channel == "RED"])


def test_fewer_candidates_than_capacity_go_red_first():
    d = decls(n=6, offices=("046",))
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=4, yellow=6), random_share=0.3, exploration_share=0.3)
    out = select_channels(d, cfg, DAY, seed=1)
    assert (out.channel == "RED").sum() == 4 and (out.channel == "YELLOW").sum() == 2


# --- exploration ---------------------------------------------------------------------------------

def _clustered(n_a: int = 40, n_b: int = 15, n_c: int = 15, seed: int = 0) -> pd.DataFrame:
    """Cluster A holds the most uncertain, valuable declarations; B and C are elsewhere in feature space."""
    rng = np.random.default_rng(seed)
    centers = {"A": (0.0, 0.0), "B": (8.0, 0.0), "C": (0.0, 8.0)}
    rows = []
    for cl, n, unc in (("A", n_a, 0.2), ("B", n_b, 0.12), ("C", n_c, 0.12)):
        for i in range(n):
            rows.append({"declaration_id": f"118-{cl}-{i:03d}", "cluster": cl, "customs_office": "118",
                         "importer_id": f"I{cl}", "hs2": "85", "n_items": 1, "fraud_probability": 0.1,
                         "expected_revenue_usd": 10.0, "revenue_if_fraud_usd": 1000.0,
                         "uncertainty": unc * rng.uniform(0.95, 1.0), "rule_score": 0.0, "mandatory": False,
                         f"{EMB_PREFIX}0": centers[cl][0] + rng.normal(0, 0.3),
                         f"{EMB_PREFIX}1": centers[cl][1] + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def test_exploration_is_spread_over_the_feature_space_with_kmeanspp():
    d = _clustered()
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=3, yellow=3), random_share=0, exploration_share=1.0)
    for seed in range(5):
        out = select_channels(d, cfg, DAY, seed=seed)
        ex = out[out.selection_reason == "exploration"]
        assert len(ex) == 6
        assert set(ex.cluster) == {"A", "B", "C"}, seed  # pure top uncertainty x revenue would take only A
        assert ex.sort_values("uncertainty").cluster.iloc[-1] == "A"
    top = d.assign(s=d.uncertainty * d.revenue_if_fraud_usd).nlargest(6, "s")
    assert set(top.cluster) == {"A"}


def test_kmeanspp_order_properties():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 500)
    emb = rng.normal(size=(500, 8))
    eligible = rng.random(500) < 0.5
    order = list(kmeanspp_order(score, emb, pool=60, rng=np.random.default_rng(1), eligible=eligible))
    assert len(order) == len(set(order)) == 60
    assert eligible[order].all()
    pool = set(np.flatnonzero(eligible)[np.argsort(-score[eligible], kind="stable")[:60]])
    assert set(order) == pool  # only the best-scored candidates enter the pool
    assert order[0] == int(np.flatnonzero(eligible)[np.argmax(score[eligible])])
    again = list(kmeanspp_order(score, emb, pool=60, rng=np.random.default_rng(1), eligible=eligible))
    assert order == again
    # Duplicates of a pick come last (zero distance), best score first.
    dup = list(kmeanspp_order(np.array([3.0, 2.0, 1.0]), np.zeros((3, 2)), pool=3, rng=np.random.default_rng(0)))
    assert dup[0] == 0 and sorted(dup) == [0, 1, 2]
    assert list(kmeanspp_order(np.array([]), np.zeros((0, 2)), pool=5, rng=np.random.default_rng(0))) == []


def test_item_embedding_and_rollup_mean():
    items, X = synthetic_day(300, seed=4)
    e = item_embedding(X, items)
    assert e.shape[0] == len(items) and np.isfinite(e).all()
    X2 = X.copy()
    X2.loc[:5, "log_ref_ratio"] = np.nan  # missing values sit at the mean, never NaN
    assert np.isfinite(item_embedding(X2, items)).all()
    d = rollup(items, embedding=e)
    emb_cols = [c for c in d.columns if c.startswith(EMB_PREFIX)]
    assert len(emb_cols) == e.shape[1]
    first = d.declaration_id.iloc[0]
    np.testing.assert_allclose(d[emb_cols].iloc[0], e[(items.declaration_id == first).to_numpy()].mean(axis=0))
    assert (d.n_items == items.groupby("declaration_id").size().sort_index().to_numpy()).all()


# --- determinism and scale -----------------------------------------------------------------------

def test_deterministic_and_independent_of_row_order():
    items, X = synthetic_day(3000, seed=2)
    d = rollup(items, embedding=item_embedding(X, items))
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=300, yellow=500, unit="workload"))
    a = select_channels(d, cfg, DAY, seed=42)
    pd.testing.assert_frame_equal(a, select_channels(d, cfg, DAY, seed=42))
    shuffled = d.sample(frac=1.0, random_state=5).reset_index(drop=True)
    b = select_channels(shuffled, cfg, DAY, seed=42).set_index("declaration_id").sort_index()
    a = a.set_index("declaration_id").sort_index()
    pd.testing.assert_frame_equal(a[["channel", "selection_reason", "selection_basis"]],
                                  b[["channel", "selection_reason", "selection_basis"]])
    c = select_channels(d, cfg, DAY, seed=7).set_index("declaration_id").sort_index()
    for r in ("random", "exploration"):
        assert set(a.index[a.selection_reason == r]) != set(c.index[c.selection_reason == r])


@pytest.mark.parametrize("unit", ["declarations", "workload"])
def test_a_50000_item_day_with_small_capacities(unit):
    items, X = synthetic_day(50_000, seed=1)
    d = rollup(items, embedding=item_embedding(X, items))
    d["mandatory"] = d.index.isin(d.groupby("customs_office").head(2).index)  # a few mandatory hits per office
    cap = OfficeCapacity(red=6, yellow=9) if unit == "declarations" else OfficeCapacity(red=150, yellow=225,
                                                                                          unit="workload")
    cfg = SelectionSettings(default_capacity=cap, capacity={"019": cap.model_copy(update={"red": 0})})
    out = select_channels(d, cfg, DAY, seed=42)
    assert len(out) == len(d) == items.declaration_id.nunique()
    assert set(out.selection_basis) <= set(BASIS)
    assert ((out.channel == "GREEN") == (out.selection_reason == "none")).all()
    assert (out.channel[out.mandatory] != "GREEN").all()
    for o, g in out.groupby("customs_office"):
        c = cfg.capacity_for(o)
        w = g.workload_units if unit == "workload" else pd.Series(1.0, index=g.index)
        nm = ~g.mandatory
        assert w[(g.channel == "RED") & nm].sum() <= c.red + w[(g.channel == "RED") & ~nm].sum()
        assert w[g.channel != "GREEN"].sum() <= c.red + c.yellow + w[g.mandatory].sum()
        for r in ("random", "exploitation", "exploration"):
            assert (g.selection_reason == r).any(), (o, r)
    assert not (out.channel[(out.customs_office == "019") & ~out.mandatory] == "RED").any()  # no RED capacity


# --- reasons in words ----------------------------------------------------------------------------

ITEM = {"hs_code": "8471300000", "origin_country": "CN", "supplier_country": "VN", "importer_id": "20100000001",
        "declarant_id": "B0007", "supplier_id": "S00042", "customs_office": "118", "importer_id_n_insp": 12.0,
        "declarant_id_n_insp": 0.0}
VALUES = {"log_cif": 9.2, "log_unit_value_kg": 2.0, "log_unit_value_qty": 3.0, "cif_fob_ratio": 1.07,
          "freight_share": 0.05, "duty_rate": 0.06, "taxes_over_cif": 0.25, "log_ref_ratio": math.log(0.36),
          "kg_per_unit": 2.0, "has_permit": 0.0, "origin_differs_supplier": 1.0, "hs2": 84.0, "hs4": 8471.0,
          "office_code": 118.0, "n_items": 3.0, "importer_past_items": 40.0, "importer_days_active": 12.0,
          "importer_is_new": 1.0, "tax_purchases_over_imports": 0.4, "day_of_week": 6.0, "month": 3.0}


@pytest.mark.parametrize("feature", FEATURES)
def test_every_catalogue_feature_reads_naturally(feature):
    v = VALUES.get(feature, 0.42 if feature.endswith("_fraud_rate") else 7.0)
    txt = explain(feature, v, ITEM)
    assert txt and not txt.startswith(f"{_DESCRIPTIONS[feature]}:"), txt  # its own phrase, not the fallback
    assert "nan" not in txt.lower() and "_" not in txt, txt
    missing = explain(feature, float("nan"), ITEM)
    assert "nan" not in missing.lower() and "_" not in missing, missing


def test_phrases_officers_can_check():
    assert explain("log_ref_ratio", math.log(0.36), ITEM) == \
        "unit value 64% below the reference for HS 8471300000 from CN"
    assert explain("importer_id_fraud_rate", 0.42, ITEM) == \
        "importer 20100000001 has an offence rate of 42% over 12 past inspections"
    assert explain("declarant_id_fraud_rate", 0.1, ITEM) == \
        "customs broker B0007 has no inspection history yet (overall offence rate of 10% assumed)"
    assert explain("origin_differs_supplier", 1, ITEM) == "origin CN differs from the supplier's country VN"
    assert explain("hs6_n_insp", 3, ITEM) == "3 past inspections of goods of HS subheading 847130 with known outcome"
    assert explain("day_of_week", 6, ITEM) == "lodged on a Sunday"
    assert explain("tax_purchases_over_imports", float("nan"), ITEM) == \
        "no tax return to compare with the importer's customs imports"
    assert len(CATALOG) == len(FEATURES)


def test_every_selected_declaration_gets_a_selection_note():
    rules = load_rules(get_settings().rules_path)
    d = decls(n=60, offices=("118",), mandatory=2)
    cfg = SelectionSettings(default_capacity=OfficeCapacity(red=6, yellow=9), random_share=0.2, exploration_share=0.2)
    out = select_channels(d, cfg, DAY, seed=42).assign(mandatory_hits=lambda x: [["DRG-01"] if m else []
                                                                                  for m in x.mandatory])
    notes = _selection_notes(out, rules)
    sel = out[out.channel != "GREEN"]
    assert set(notes) == set(sel.declaration_id)
    drg01 = next(r.name for r in rules.rules if r.id == "DRG-01")  # its name as config/rules.yaml has it
    for r in sel.itertuples():
        n = notes[r.declaration_id]
        assert {"mandatory_rule": f"mandatory rule DRG-01 ({drg01})",
                "random": "random quality-control selection", "exploration": "exploration: model uncertain",
                "exploitation": "model: "}[r.selection_reason] in n, n


def test_selection_probability_is_recorded_and_matches_the_random_draw():
    cfg = SelectionSettings(capacity={"118": OfficeCapacity(red=10, yellow=10)}, random_share=0.5,
                            exploration_share=0.1)
    d = decls(n=200, offices=("118",), mandatory=5)
    runs = [select_channels(d, cfg, DAY, seed) for seed in range(300)]
    first = runs[0].set_index("declaration_id")
    assert first.selection_probability.between(0, 1).all()
    assert (first.selection_probability[first.selection_reason.isin(["mandatory_rule", "exploitation"])] == 1).all()
    rnd = first[first.selection_reason == "random"]
    eligible = (~first.mandatory).sum()
    assert len(rnd) and np.allclose(rnd.selection_probability, len(rnd) / eligible)
    green = first[first.channel == "GREEN"]
    assert (green.selection_probability >= len(rnd) / eligible - 1e-6).all()
    assert (green.selection_probability > len(rnd) / eligible + 1e-3).any()  # the exploration pool's chance
    # The recorded sampling probability is the frequency with which the random draw takes a declaration.
    freq = pd.concat([r.set_index("declaration_id").selection_reason == "random" for r in runs], axis=1).mean(axis=1)
    not_mand = ~first.mandatory
    assert freq[not_mand].mean() == pytest.approx(len(rnd) / eligible, rel=0.02)
    assert freq[not_mand].std() < 0.05  # every declaration of the draw had the same chance
