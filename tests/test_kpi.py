"""KPIs: exact figures on a hand-made day, then the daily report on a tiny world (tables, HTML, as-of
snapshots, byte-identical re-runs)."""

from __future__ import annotations

import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest
from handscore import score_by_hand
from test_output_readers import assert_reads_as_hive_table
from tinyworld import SHORT_WORLD

from sunat_pipeline import ingest
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.reporting import kpi, monitor, report
from sunat_pipeline.reporting import kpi_tables as tables
from sunat_pipeline.selection.output import read_scored
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import get_settings
from sunat_sim.inspection import inspect_day

DAY = pd.Timestamp("2026-07-01")

# One office-day of office 118 (ten declarations) and two declarations of office 235.
# id: (channel, reason, expected revenue, fraud probability, outcome, revenue recovered)
DECL = {
    "D00": ("RED", "mandatory_rule", 10.0, 0.2, "FRAUD", 100.0),
    "D01": ("RED", "exploitation", 1000.0, 0.9, "FRAUD", 1000.0),
    "D02": ("RED", "exploitation", 900.0, 0.8, "CLEAN", 0.0),
    "D03": ("YELLOW", "exploitation", 800.0, 0.7, "FRAUD", 300.0),
    "D07": ("GREEN", "none", 700.0, 0.6, None, 0.0),
    "D08": ("GREEN", "none", 600.0, 0.5, None, 0.0),
    "D05": ("YELLOW", "random", 500.0, 0.4, "CLEAN", 0.0),
    "D09": ("GREEN", "none", 300.0, 0.3, None, 0.0),
    "D04": ("RED", "random", 100.0, 0.2, "FRAUD", 50.0),
    "D06": ("YELLOW", "exploration", 50.0, 0.05, "FRAUD", 20.0),
    "E00": ("RED", "exploitation", 200.0, 0.5, "FRAUD", 200.0),
    "E01": ("GREEN", "none", 100.0, 0.1, None, 0.0),
}


def _hand_day():
    rows, off = [], []
    for did, (ch, why, rev, p, res, got) in DECL.items():
        rows.append({"declaration_id": did, "item_no": 1, "declaration_date": DAY,
                     "customs_office": "235" if did.startswith("E") else "118", "importer_id": f"I{did}",
                     "hs_code": "8517120000", "origin_country": "CN", "fraud_probability": p,
                     "expected_revenue_usd": rev, "uncertainty": 0.1, "rule_score": 0.3 if why == "mandatory_rule"
                     else 0.0, "rule_hits": ["DRG-01"] if why == "mandatory_rule" else [], "channel": ch,
                     "selection_reason": why, "mandatory": why == "mandatory_rule"})
        if res:
            off.append({"record_id": f"R{did}", "declaration_id": did, "item_no": 1, "result": res,
                        "offence_code": "undervaluation" if res == "FRAUD" else "", "revenue_recovered_usd": got,
                        "penalty_usd": got / 2, "reported_date": DAY + pd.Timedelta(days=2)})
    # D01 has a second item, inspected and clean: the declaration is still a hit.
    rows.append({**rows[1], "item_no": 2, "fraud_probability": 0.1, "expected_revenue_usd": 10.0})
    off.append({"record_id": "RD01b", "declaration_id": "D01", "item_no": 2, "result": "CLEAN", "offence_code": "",
                "revenue_recovered_usd": 0.0, "penalty_usd": 0.0, "reported_date": DAY + pd.Timedelta(days=2)})
    # An earlier offence of D04's importer: D04's discovery is not a new importer.
    off.append({"record_id": "OLD", "declaration_id": "X", "item_no": 1, "result": "FRAUD", "offence_code": "origin",
                "revenue_recovered_usd": 5.0, "penalty_usd": 2.5, "reported_date": DAY - pd.Timedelta(days=30),
                "importer_id": "ID04"})
    off = pd.DataFrame(off)
    off["importer_id"] = off.importer_id.fillna("I" + off.declaration_id)
    return pd.DataFrame(rows), off


@pytest.fixture(scope="module")
def hand():
    items, off = _hand_day()
    it = kpi.item_outcomes(items, off)
    decl = kpi.declarations(it)
    return it, decl, off


def test_declarations_roll_up_and_rank_against_the_exploitation_cut(hand):
    _, decl, _ = hand
    d = decl.set_index("declaration_id")
    assert d.loc["D01", "n_items"] == 2 and d.loc["D01", "items_inspected"] == 2 and d.loc["D01", "items_fraud"] == 1
    assert d.loc["D01", "fraud"] and d.loc["D01", "fraud_probability"] == pytest.approx(1 - 0.1 * 0.9)
    assert d.loc["D00", "rule_hits"] == "DRG-01" and d.loc["D01", "offence_codes"] == "undervaluation"
    assert d.loc["D01", "cut"] == 6 and d.loc["E00", "cut"] == 1  # non-mandatory selections of the office-day
    assert pd.isna(d.loc["D00", "rank_revenue"]) and not d.loc["D00", "missed_by_exploitation"]
    assert d.loc["D05", "rank_revenue"] == 6 and not d.loc["D05", "missed_by_exploitation"]
    assert d.loc["D04", "rank_revenue"] == 8 and d.loc["D04", "missed_by_exploitation"]
    assert d.loc["D06", "rank_probability"] == 9 and d.loc["D06", "missed_by_exploitation"]
    assert d.loc["D02", "inspected"] and not d.loc["D02", "fraud"] and not d.loc["D07", "inspected"]


def test_efficiency_hit_rates_and_the_efficiency_index(hand):
    _, decl, _ = hand
    green = tables.green_estimate(decl, min_sample=5)
    e = tables.efficiency(decl, green)
    o = e[(e.period_type == "all") & (e.customs_office == "118")].iloc[0]
    assert (o.declarations, o.selected, o.inspected, o.frauds, o.green) == (10, 7, 7, 5, 3)
    assert o.selection_rate == pytest.approx(0.7)
    assert o.hit_rate_red == pytest.approx(3 / 4) and o.hit_rate_yellow == pytest.approx(2 / 3)
    assert o.hit_rate_targeted == pytest.approx(4 / 5) and o.hit_rate_random == pytest.approx(1 / 2)
    assert o.efficiency_index == pytest.approx(1.6)
    assert o.lift_exploitation == pytest.approx((2 / 3) / (1 / 2))
    assert o.discoveries == 2 and o.discovery_revenue_usd == pytest.approx(70.0)
    assert o.revenue_recovered_usd == pytest.approx(1470.0)
    a = e[(e.period_type == "all") & (e.customs_office == tables.ALL)].iloc[0]
    assert (a.declarations, a.frauds) == (12, 6) and a.hit_rate_targeted == pytest.approx(5 / 6)
    assert a.efficiency_index == pytest.approx((5 / 6) / (1 / 2))
    # One day only: the day, week and all rows agree.
    for ptype in ("day", "week"):
        r = e[(e.period_type == ptype) & (e.customs_office == tables.ALL)].iloc[0]
        assert r.frauds == a.frauds and r.efficiency_index == pytest.approx(a.efficiency_index)
    assert set(e.period_type) == {"day", "week", "all"} and set(e.customs_office) == {"118", "235", tables.ALL}


def test_undetected_fraud_in_green_from_random_selections(hand):
    _, decl, _ = hand
    # Too few random selections below the exploitation cut (1 < 5): every random selection is used.
    g = tables.green_estimate(decl, min_sample=5)
    assert g["basis"] == "all random selections" and (g["n"], g["frauds"]) == (2, 1) and g["rate"] == 0.5
    assert 0 < g["low"] < 0.5 < g["high"] < 1
    e = tables.efficiency(decl, g)
    a = e[(e.period_type == "all") & (e.customs_office == tables.ALL)].iloc[0]
    assert a.undetected_frauds_est == pytest.approx(4 * 0.5)  # 4 GREEN declarations
    assert a.undetected_revenue_est_usd == pytest.approx(2.0 * 50.0)  # revenue of a random hit
    assert a.missed_share_est == pytest.approx(2.0 / (2.0 + 6))
    g1 = tables.green_estimate(decl, min_sample=1)
    assert g1["basis"] == "random below the exploitation cut" and (g1["n"], g1["frauds"]) == (1, 1)


def test_channels_cube_and_discoveries(hand):
    it, decl, off = hand
    c = tables.channels(decl)
    red = c[(c.period_type == "all") & (c.customs_office == tables.ALL) & (c.channel == "RED")
            & (c.selection_reason == tables.ALL)].iloc[0]
    assert (red.declarations, red.inspected, red.frauds) == (5, 5, 4) and red.hit_rate == pytest.approx(0.8)
    tot = c[(c.period_type == "all") & (c.customs_office == tables.ALL) & (c.channel == tables.ALL)
            & (c.selection_reason == tables.ALL)].iloc[0]
    assert tot.declarations == 12 and tot["items"] == 13 and tot.items_inspected == 9
    parts = c[(c.period_type == "all") & (c.customs_office != tables.ALL) & (c.channel != tables.ALL)
              & (c.selection_reason != tables.ALL)]
    assert parts.declarations.sum() == 12 and parts.frauds.sum() == 6
    d = tables.discoveries(decl, off).set_index("declaration_id")
    assert set(d.index) == {"D04", "D06"} and d.missed_by_exploitation.all()
    assert d.loc["D04", "importer_prior_frauds"] == 1 and not d.loc["D04", "new_importer"]
    assert d.loc["D06", "new_importer"]


def test_kpis_of_a_lake_with_nothing_scored_yet(tmp_path):
    s = get_settings(lake_root=tmp_path / "data")
    t = kpi.compute(s, DAY.date())
    assert set(t) == set(kpi.TABLES)
    row = t["summary"].iloc[0]
    assert row.declarations == 0 and row.frauds_found == 0 and np.isnan(row.efficiency_index)
    assert t["efficiency"].empty and t["discoveries"].empty and len(t["rules"]) == len(load_rules(s.rules_path).rules)
    page = report.render(s, DAY.date(), t, pd.DataFrame())
    assert page.startswith(b"<!DOCTYPE html>") and b"Nothing yet" in page


# --- the daily report on a tiny world ---------------------------------------------------------------------

D1, D2, _ = SHORT_WORLD.live_dates  # outcomes come back the day after inspection


class _Stub:
    def predict(self, X):
        return pd.DataFrame({"fraud_probability": 1 / (1 + np.exp(-(X.log_cif.to_numpy() - 9)))})


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """Two live days scored by hand, fed back and inspected; D2's report published twice, then D1's KPIs
    computed after D2 (a past day's snapshot)."""
    s = tiny_world(SHORT_WORLD, upto=D1).copy(tmp_path_factory.mktemp("kpi_world"),
                                              selection={"default_capacity": {"red": 3, "yellow": 4}})
    for d in (D1, D2):
        for src in SOURCES:
            ingest.ingest_source(s, src, d)  # D1: already ingested, adds nothing
        score_by_hand(s, d)
        feedback.update(s, d)
        inspect_day(s, d)
    # The drift reference of the stand-in model, as training would have left it (no MLflow needed).
    monitor.reference_frame(s, "0", model=_Stub(), training_date=D1)
    handler, logger = _Collect(), logging.getLogger("sunat_pipeline.reporting.report")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        out = report.publish(s, D2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return {"settings": s, "out": out, "logs": handler.messages, "again": kpi.compute(s, D2),
            "d1": kpi.compute(s, D1)}


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_daily_report_writes_every_table_and_an_html_page(world):
    s, out = world["settings"], world["out"]
    json.dumps(out)  # small and serialisable: it goes through XCom
    for t in kpi.TABLES:
        assert (s.gold / "kpi" / t / f"report_date={D2}" / "part-0.parquet").exists(), t
    page = report.report_path(s, D2)
    assert out["report_path"] == str(page) and page.exists()
    html = page.read_text()
    assert html.count("<img") >= 7 and "Efficiency index" in html and "Drift against the training data" in html
    assert any(page.resolve().as_uri() in m for m in world["logs"])
    summary = kpi.read(s, "summary", D2).iloc[0]
    assert summary.report_path == str(page) and summary.drift_checked
    assert kpi.latest_summary(s)["report_date"] == D2  # from the path, a date
    assert report.last_report(s) == page


def test_report_figures_match_a_direct_count(world):
    s = world["settings"]
    summary = kpi.read(s, "summary", D2).iloc[0]
    # Independently: the declarations of D1 and D2 and their current outcomes as of D2.
    scored = read_scored(s, since=D1, upto=D2)
    off = feedback.offences(s, asof=D2)
    m = scored.merge(off[["declaration_id", "item_no", "result"]], on=["declaration_id", "item_no"], how="left")
    per = m.groupby("declaration_id").agg(channel=("channel", "first"), reason=("selection_reason", "first"),
                                          inspected=("result", lambda r: r.notna().any()),
                                          fraud=("result", lambda r: (r == "FRAUD").any()))
    red = per[(per.channel == "RED") & per.inspected]
    assert len(red) > 0
    assert summary.hit_rate_red == pytest.approx(red.fraud.mean())
    targeted = per[per.reason.isin(tables.TARGETED) & per.inspected]
    rnd = per[(per.reason == "random") & per.inspected]
    assert summary.hit_rate_targeted == pytest.approx(targeted.fraud.mean())
    if rnd.fraud.mean() > 0:
        assert summary.efficiency_index == pytest.approx(targeted.fraud.mean() / rnd.fraud.mean())
    assert summary.frauds_found == int(per.fraud.sum())
    today = scored[scored.declaration_date == D2].declaration_id.unique()
    assert summary.red == int((per.loc[today].channel == "RED").sum())
    rep = off[pd.to_datetime(off.reported_date).dt.date == D2]
    assert summary.outcomes_reported_today == len(rep)
    rules = kpi.read(s, "rules", D2)
    assert rules.inspected.sum() == sum(len(h) for h in off.rule_hits)
    growth = kpi.read(s, "offence_growth", D2)
    assert growth.version.tolist() == [f"rw-{D1}", f"rw-{D2}"]
    assert growth.records_folded.sum() == len(feedback.offences(s, current=False, asof=D2))


def test_recomputing_gives_the_same_tables_and_past_days_are_snapshots(world):
    # (Re-running a whole day through Airflow, report included, rewrites the same bytes: tests/test_e2e.py.)
    s = world["settings"]
    for name, df in world["again"].items():
        stored = kpi.read(s, name, D2)
        assert (stored.report_date == D2).all()  # the snapshot's date, from the path
        stored = stored[df.columns]  # (publish adds the drift check and the page to the headline)
        pd.testing.assert_frame_equal(stored.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False,
                                      obj=name)
    # D1's KPIs, computed after D2: as of D1, no outcome of the pipeline's selections was back yet.
    s1 = world["d1"]["summary"].iloc[0]
    assert s1.frauds_found == 0 and np.isnan(s1.efficiency_index) and s1.days_scored == 1
    assert s1.weights_produced == f"rw-{D1}"
    e = world["d1"]["efficiency"]
    assert e.inspected.sum() == 0 and set(e[e.period_type == "day"].period) == {D1.isoformat()}


def test_every_partitioned_table_reads_as_one_hive_table(world):
    """The partition key lives in the path only, so each table reads as one table with pandas, pyarrow and
    DuckDB (tests/test_output_readers.py), the key back as a column."""
    s = world["settings"]
    tables = {s.scored_dir: "declaration_date", s.gold / "offences": "reported_date",
              s.gold / "monitoring" / "drift": "report_date"}
    tables.update({s.gold / "kpi" / t: "report_date" for t in kpi.TABLES})
    for folder, key in tables.items():
        assert_reads_as_hive_table(folder, key)


def _cube_by_groupby(df, date_col, dims, sums):
    """Reference: one pandas groupby per period type and per combination of rolled-up dims."""
    out = []
    for ptype, per in tables._periods(df[date_col]).items():
        x = df.assign(period=per.to_numpy())
        for roll in itertools.product([False, True], repeat=len(dims)):
            y = x.assign(**{dim: tables.ALL for dim, r in zip(dims, roll, strict=True) if r})
            out.append(y.groupby(["period", *dims], sort=True)[sums].sum().reset_index().assign(period_type=ptype))
    res = pd.concat(out, ignore_index=True)
    res = res.sort_values(["period_type", "period", *dims], kind="stable",
                          key=lambda s: s.map({"day": 0, "week": 1, "all": 2}) if s.name == "period_type"
                          else s.astype(str).str.replace(tables.ALL, "~", regex=False))
    return res[["period_type", "period", *dims, *sums]].reset_index(drop=True)


@pytest.mark.parametrize("n", [0, 1, 400])
def test_cube_equals_a_groupby_per_rollup(n):
    rng = np.random.default_rng(n)
    dims = ["customs_office", "channel", "selection_reason"]
    df = pd.DataFrame({  # days across an ISO year boundary (2026-W53 / 2027-W01)
        "declaration_date": pd.Timestamp("2026-12-25") + pd.to_timedelta(rng.integers(0, 14, n), unit="D"),
        "customs_office": rng.choice(["118", "235", "046"], n), "channel": rng.choice(["RED", "YELLOW", "GREEN"], n),
        "selection_reason": rng.choice(["random", "exploitation", "none"], n), "declarations": 1,
        "items": rng.integers(1, 5, n), "frauds": rng.random(n) < 0.3,
        "revenue_recovered_usd": np.round(rng.lognormal(6, 2, n), 2) * (rng.random(n) < 0.5),
    })
    sums = ["declarations", "items", "frauds", "revenue_recovered_usd"]
    got, want = tables._cube(df, "declaration_date", dims, sums), _cube_by_groupby(df, "declaration_date", dims, sums)
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    if n:  # money may differ in the last bits (both sum with compensation, in different orders)
        assert n < 400 or {"2026-W53", "2027-W01"} <= set(got.period)
        pd.testing.assert_frame_equal(got, want.astype({c: "int64" for c in sums[:3]}), check_exact=False,
                                      rtol=1e-12)


def test_efficiency_index_has_an_interval_per_channel_and_the_seed_index(hand):
    _, decl, _ = hand
    green = tables.green_estimate(decl, min_sample=5)
    e = tables.efficiency(decl, green)
    a = e[(e.period_type == "all") & (e.customs_office == tables.ALL)].iloc[0]
    assert a.efficiency_index_low < a.efficiency_index < a.efficiency_index_high
    for ch in ("red", "yellow"):
        t = a[f"targeted_{ch}_frauds"] / a[f"targeted_{ch}_inspected"] if a[f"targeted_{ch}_inspected"] else np.nan
        r = a[f"random_{ch}_frauds"] / a[f"random_{ch}_inspected"] if a[f"random_{ch}_inspected"] else np.nan
        got = a[f"efficiency_index_{ch}"]
        assert (np.isnan(got) and (np.isnan(t) or np.isnan(r) or r == 0)) or got == pytest.approx(t / r)
    assert a.targeted_red_inspected + a.targeted_yellow_inspected == a.targeted_inspected
    detected = a.frauds / (a.frauds + a.undetected_frauds_est)
    assert a.efficiency_index_seed == pytest.approx(detected / a.selection_rate)
    # Katz's interval on a textbook case: 30/100 against 10/100 -> RR 3, about [1.55, 5.82]
    lo, hi = tables.ratio_interval([30], [100], [10], [100])
    assert lo.iloc[0] == pytest.approx(1.55, abs=0.01) and hi.iloc[0] == pytest.approx(5.82, abs=0.02)
    lo, hi = tables.ratio_interval([3], [10], [0], [0])
    assert np.isnan(lo.iloc[0]) and np.isnan(hi.iloc[0])


def test_report_has_exploration_and_discoveries(world):
    from sunat_pipeline.reporting import kpi_exploration as kx

    s, out = world["settings"], world["out"]
    w = s.monitoring.exploration_window_days
    assert "Exploration and discoveries" in report.report_path(s, D2).read_text()
    ex = json.loads(json.dumps(out["exploration"]))  # JSON as it is: through XCom
    assert ex["window_days"] == w and set(ex) == {"window_days", "day", f"{w}d"}
    assert set(ex["day"]) == {"period_start", "period_end", *kx.REASONS, tables.ALL}
    assert set(ex[f"{w}d"]["exploration"]) >= {"inspected", "hits", "hit_rate", "hit_rate_low", "ratio_vs_random",
                                               "ratio_vs_exploitation", *kx.FLAGS}
    # Independently: the pipeline's selected declarations with an outcome back by D2.
    scored = read_scored(s, since=D1, upto=D2)
    off = feedback.offences(s, asof=D2)
    m = scored[scored.channel.isin(["RED", "YELLOW"])].merge(
        off[["declaration_id", "item_no", "result", "reported_date"]], on=["declaration_id", "item_no"])
    per = m.groupby("declaration_id").agg(reason=("selection_reason", "first"), fraud=("result",
                                          lambda r: (r == "FRAUD").any()), back=("reported_date", "max"))
    t = kpi.read(s, "exploration", D2)
    a = t[(t.window == f"{w}d") & (t.selection_reason == tables.ALL)].iloc[0]
    assert len(per) > 0 and (a.inspected, a.hits) == (len(per), int(per.fraud.sum()))
    for reason, g in per.groupby("reason"):
        r = t[(t.window == f"{w}d") & (t.selection_reason == reason)].iloc[0]
        assert (r.inspected, r.hits) == (len(g), int(g.fraud.sum())), reason
    day = t[(t.window == "day") & (t.selection_reason == tables.ALL)].iloc[0]
    assert day.inspected == int((pd.to_datetime(per.back).dt.date == D2).sum())
    assert (t[list(kx.FLAGS)].to_numpy() <= t[["hits"]].to_numpy()).all()
    line = next(m for m in world["logs"] if m.startswith(f"exploration {D2}: "))
    assert "discoveries: " in line and f"last {w} days" in line
    assert kpi.read(s, "summary", D2).iloc[0].exploration_inspected_window == ex[f"{w}d"]["exploration"]["inspected"]
    # As of D1 nothing of the pipeline's had come back.
    assert world["d1"]["exploration"].inspected.sum() == 0
