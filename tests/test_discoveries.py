"""Exploration's hit rate and discoveries (reporting/kpi_exploration.py): exact counts on declarations built by
hand, as of a report day (a finding reported after the day does not count)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.reporting import kpi, report
from sunat_pipeline.reporting import kpi_exploration as kx
from sunat_pipeline.reporting.kpi_tables import ALL, beta_interval, ratio_interval

D0 = pd.Timestamp("2026-07-06")  # the decision day
DAY = pd.Timestamp("2026-07-10")  # the report day
MID = pd.Timestamp("2026-07-08")
AFTER = DAY + pd.Timedelta(days=1)

# id: (office, channel, reason, declaration fraud probability, rule hits, importer, hs code, origin, outcome,
# reported)
DECL = {
    "X1": ("118", "RED", "exploitation", 0.9, [], "IA", "8517120000", "CN", "FRAUD", DAY),  # a repeat offender
    "X2": ("118", "YELLOW", "exploitation", 0.6, [], "IB", "8517120000", "CN", "CLEAN", DAY),  # 118's cut: 0.6
    "X3": ("118", "YELLOW", "exploration", 0.2, [], "IC", "6109100000", "BD", "FRAUD", DAY),  # new everything
    "X4": ("118", "RED", "exploration", 0.3, ["VAL-01"], "ID", "9403600000", "VN", "FRAUD", MID),
    "X5": ("118", "RED", "random", 0.1, [], "IE", "8517120000", "CN", "FRAUD", AFTER),  # back after the day
    "X6": ("118", "YELLOW", "random", 0.5, [], "IB", "8517120000", "CN", "CLEAN", DAY),
    "X7": ("118", "RED", "mandatory_rule", 0.4, ["DRG-01"], "IA", "3004900000", "CO", "FRAUD", DAY),
    "X8": ("118", "GREEN", "none", 0.05, [], "IB", "8517120000", "CN", None, None),
    "Y1": ("235", "RED", "exploitation", 0.1, [], "IF", "8517120000", "CN", "CLEAN", DAY),  # 235's cut: 0.1
    "Y2": ("235", "YELLOW", "exploration", 0.15, [], "IG", "8517120000", "CN", "FRAUD", MID),
}
# Earlier findings (legacy inspections): IA's and the pair 851712 x CN known before D0; ID's reported after D0.
LEGACY = [("L1", "IA", "8517120000", "CN", D0 - pd.Timedelta(days=10)),
          ("L2", "ID", "1111110000", "US", D0 + pd.Timedelta(days=1))]


def _frames():
    items, off, customs = [], [], []
    for did, (office, ch, why, p, hits, imp, hs, origin, res, rep) in DECL.items():
        items.append({"declaration_id": did, "item_no": 1, "declaration_date": D0, "customs_office": office,
                      "importer_id": imp, "hs_code": hs, "origin_country": origin, "fraud_probability": p,
                      "declaration_fraud_probability": p, "expected_revenue_usd": 100 * p, "uncertainty": 0.1,
                      "rule_score": 0.0, "rule_hits": hits, "channel": ch, "selection_reason": why,
                      "mandatory": why == "mandatory_rule"})
        if res:
            off.append({"declaration_id": did, "item_no": 1, "result": res, "importer_id": imp, "hs_code": hs,
                        "offence_code": "undervaluation" if res == "FRAUD" else "", "reported_date": rep,
                        "revenue_recovered_usd": 10.0 if res == "FRAUD" else 0.0, "penalty_usd": 0.0})
    for did, imp, hs, origin, rep in LEGACY:
        off.append({"declaration_id": did, "item_no": 1, "result": "FRAUD", "importer_id": imp, "hs_code": hs,
                    "offence_code": "origin", "reported_date": rep, "revenue_recovered_usd": 5.0, "penalty_usd": 0.0})
        customs.append({"declaration_id": did, "item_no": 1, "declaration_date": rep - pd.Timedelta(days=2),
                        "importer_id": imp, "origin_country": origin})
    first = {"IC": D0 - pd.Timedelta(days=5)}  # IC is new to customs; the others have declared for 100 days
    for imp in ("IA", "IB", "IC", "ID", "IE", "IF", "IG"):
        customs.append({"declaration_id": f"H{imp}", "item_no": 1, "importer_id": imp, "origin_country": "CN",
                        "declaration_date": first.get(imp, D0 - pd.Timedelta(days=100))})
    customs += [{k: r[k] for k in kx.CUSTOMS_COLUMNS} for r in items]
    return pd.DataFrame(items), pd.DataFrame(off), pd.DataFrame(customs)


def _finds(day, customs=None):
    items, off, cust = _frames()
    off = off[off.reported_date <= day]  # the offence database as of the day (feedback.offences(asof=day))
    it = kpi.item_outcomes(items, off)
    return kx.finds(kpi.declarations(it), it, off, cust if customs is None else customs, day.date(), 30)


def _row(t, window, reason):
    return t[(t.window == window) & (t.selection_reason == reason)].iloc[0]


def test_discovery_flags_of_each_find():
    f = _finds(DAY).set_index("declaration_id")
    assert set(f.index) == {"X1", "X2", "X3", "X4", "X6", "X7", "Y1", "Y2"}  # X5: reported after the day
    assert f.loc["X3", "exploitation_cut"] == pytest.approx(0.6) and f.loc["Y2", "exploitation_cut"] == 0.1
    flags = {d: tuple(k for k in kx.FLAGS if f.loc[d, k]) for d in f.index}
    assert flags == {
        "X1": (),  # repeat offender, known pair, an exploitation pick
        "X2": (), "X6": (), "Y1": (),  # clean
        "X3": ("new_offender", "new_importer", "new_pattern", "unexpected"),
        "X4": ("new_offender", "new_pattern"),  # ID's finding came after X4's date; a rule hit it
        "X7": ("new_pattern",),  # IA is a repeat offender; a mandatory rule hit it
        "Y2": ("new_offender",),  # above office 235's cut (0.1)
    }


def test_new_to_customs_needs_a_history_as_long_as_the_lookback():
    items, _, customs = _frames()
    short = customs[pd.to_datetime(customs.declaration_date) > D0 - pd.Timedelta(days=20)]
    assert not _finds(DAY, short).new_importer.any()  # first seen within 30 days, but history is too short


def test_exploration_table_counts_rates_and_ratios_per_window():
    t = kx.table(_finds(DAY), DAY.date(), 28)
    assert list(t.columns) == kx.TABLE_COLUMNS and len(t) == 2 * 5
    counts = {(w, r): (int(_row(t, w, r).inspected), int(_row(t, w, r).hits))
              for w in ("day", "28d") for r in (*kx.REASONS, ALL)}
    assert counts == {
        ("day", "mandatory_rule"): (1, 1), ("day", "random"): (1, 0), ("day", "exploitation"): (3, 1),
        ("day", "exploration"): (1, 1), ("day", ALL): (6, 3),
        ("28d", "mandatory_rule"): (1, 1), ("28d", "random"): (1, 0), ("28d", "exploitation"): (3, 1),
        ("28d", "exploration"): (3, 3), ("28d", ALL): (8, 5),
    }
    ex = _row(t, "28d", "exploration")
    assert (ex.new_offender, ex.new_importer, ex.new_pattern, ex.unexpected) == (3, 1, 2, 1)
    assert ex.hit_rate == 1.0 and (ex.hit_rate_low, ex.hit_rate_high) == pytest.approx(beta_interval(3, 3, 0.95))
    assert ex.ratio_vs_exploitation == pytest.approx(3.0)
    lo, hi = ratio_interval([3], [3], [1], [3])
    assert (ex.ratio_vs_exploitation_low, ex.ratio_vs_exploitation_high) == pytest.approx((lo[0], hi[0]))
    assert np.isnan(ex.ratio_vs_random)  # random found nothing yet: no ratio
    a = _row(t, "28d", ALL)
    assert (a.new_offender, a.new_importer, a.new_pattern, a.unexpected) == (3, 1, 3, 1)
    assert a.revenue_recovered_usd == pytest.approx(50.0)
    assert _row(t, "day", "exploration").period_start == DAY.date()
    assert _row(t, "28d", "exploration").period_start == (DAY - pd.Timedelta(days=27)).date()


def test_a_finding_reported_after_the_day_counts_only_from_then():
    before = kx.table(_finds(DAY), DAY.date(), 28)
    after = kx.table(_finds(AFTER), AFTER.date(), 28)
    assert _row(before, "28d", "random").hits == 0 and _row(after, "28d", "random").hits == 1
    r = _row(after, "day", "random")  # X5: a new offender the rules and the model did not expect
    assert (r.inspected, r.hits, r.new_offender, r.new_importer, r.new_pattern, r.unexpected) == (1, 1, 1, 0, 0, 1)
    assert _row(after, "day", "exploration").inspected == 0
    assert _row(after, "28d", "exploration").ratio_vs_random == pytest.approx(1.0 / 0.5)
    same = ["inspected", "hits", *kx.FLAGS]  # exploration's own finds did not change
    assert _row(before, "28d", "exploration")[same].tolist() == _row(after, "28d", "exploration")[same].tolist()


def test_headline_json_and_log_line():
    t = kx.table(_finds(DAY), DAY.date(), 28)
    h = kx.headline(t, 28)
    assert (h["exploration_inspected_today"], h["exploration_hits_today"]) == (1, 1)
    assert (h["new_offender_today"], h["new_importer_today"], h["new_pattern_today"], h["unexpected_today"]) == \
        (1, 1, 2, 1)  # X3 (all four) and X7 (a new pattern) came back on the day
    j = kx.as_json(t, report._clean)
    json.dumps(j, allow_nan=False)
    assert j["28d"]["exploration"]["hits"] == 3 and j["day"]["period_start"] == "2026-07-10"
    line = kx.log_line(t, DAY.date(), 28)
    assert line.startswith("exploration 2026-07-10: 1 selected with an outcome, 1 hits (100%), discoveries: "
                           "1 new offender, 1 new importer, 1 new HS x origin, 1 unexpected; last 28 days: 3 ")


def test_nothing_back_yet():
    f = _finds(D0)
    assert f.empty
    t = kx.table(f, D0.date(), 28)
    assert t.inspected.sum() == 0 and t.hit_rate.isna().all() and t.new_offender.sum() == 0
    assert kx.log_line(t, D0.date(), 28).startswith("exploration 2026-07-06: 0 selected with an outcome, 0 hits (n/a)")
