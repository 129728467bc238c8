"""KPIs of the targeting: what the channels found, what random and exploration saw that exploitation
would not, how the offence database and the rule weights evolve (definitions in docs/kpi.md).

``compute(settings, day)`` returns the tables of day D's report as of the end of D: the pipeline's
decisions of every scored day up to D, joined to the outcomes the offence database knew after D's
feedback (``feedback.offences(asof=D)``), so a report of a past day is reproducible whatever arrived
since. ``write`` stores them as ``gold/kpi/<table>/report_date=D/part-0.parquet`` (each report is a
snapshot: the latest one is the current view, earlier ones show what was known then).

The tables themselves are computed by ``kpi_tables`` (``exploration``: ``kpi_exploration``; ``tax_audits``:
``kpi_tax``).
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.lake.store import read_partitioned, write_partition
from sunat_pipeline.reporting import kpi_exploration, kpi_tax
from sunat_pipeline.reporting.kpi_tables import (
    ALL,
    calibration,
    channels,
    discoveries,
    efficiency,
    green_estimate,
    offence_growth,
    risk_areas,
    rules_table,
    scores,
    weights,
)
from sunat_pipeline.selection.output import manifest_path, read_scored
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
KEY = "report_date"  # each table's partition: one snapshot per report
TABLES = ("summary", "efficiency", "channels", "rules", "risk_areas", "discoveries", "exploration", "offence_growth",
          "scores", "calibration", "weights", "tax_audits")
_SCORED_COLUMNS = ["declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "hs_code",
                   "origin_country", "fraud_probability", "expected_revenue_usd", "uncertainty", "rule_score",
                   "rule_hits", "channel", "selection_reason", "model_version", "rule_weights_version", "mandatory",
                   "declaration_fraud_probability"]


def kpi_dir(settings: Settings):
    return settings.gold / "kpi"


# --- inputs ----------------------------------------------------------------------------------------------

def scored_items(settings: Settings, upto: date) -> pd.DataFrame:
    """The pipeline's scored items of every day up to ``upto``."""
    scored = read_scored(settings, upto=upto)
    if scored.empty:
        return pd.DataFrame(columns=_SCORED_COLUMNS)
    out = scored[[c for c in _SCORED_COLUMNS if c in scored.columns]].copy()  # older schema versions lack some
    out["declaration_date"] = pd.to_datetime(out.declaration_date)
    if "mandatory" not in out:
        out["mandatory"] = out.selection_reason == "mandatory_rule"
    return out


def item_outcomes(items: pd.DataFrame, off: pd.DataFrame) -> pd.DataFrame:
    """Scored items with their current outcome (if one came back): has_outcome, fraud, revenue, penalty."""
    key = ["declaration_id", "item_no"]
    o = off[[*key, "result", "offence_code", "revenue_recovered_usd", "penalty_usd", "reported_date"]].copy()
    o = o.astype({"declaration_id": "str", "item_no": "int64"}).drop_duplicates(key, keep="last")
    it = items.astype({"declaration_id": "str", "item_no": "int64"}).merge(o, on=key, how="left")
    it["has_outcome"] = it.result.notna()
    it["fraud"] = (it.result == "FRAUD").to_numpy()
    it["revenue_recovered_usd"] = it.revenue_recovered_usd.fillna(0.0).astype(float)
    it["penalty_usd"] = it.penalty_usd.fillna(0.0).astype(float)
    return it


def declarations(it: pd.DataFrame) -> pd.DataFrame:
    """One row per scored declaration, with its outcome and its counterfactual exploitation ranks.

    ``rank_revenue`` / ``rank_probability``: the declaration's place in its office-day among the
    non-mandatory declarations by expected revenue and by fraud probability (the two exploitation
    rankings); ``cut``: how many non-mandatory declarations the office selected that day. A selection
    with both ranks past the cut would not have been taken by exploitation at the same capacity.
    """
    cols = ["declaration_date", "declaration_id", "customs_office", "importer_id", "hs2", "origin_country",
            "channel", "selection_reason", "mandatory", "n_items", "fraud_probability", "expected_revenue_usd",
            "uncertainty", "rule_score", "inspected", "fraud", "items_inspected", "items_fraud",
            "revenue_recovered_usd", "penalty_usd", "offence_codes", "rule_hits", "rank_revenue",
            "rank_probability", "cut", "missed_by_exploitation"]
    if it.empty:
        return pd.DataFrame(columns=[*cols, "selected"]).astype({"declaration_date": "datetime64[us]"})
    x = it.assign(_lq=np.log1p(-it.fraud_probability.astype(float).clip(0, 0.999999)),
                  _code=it.offence_code.where(it.fraud))
    g = x.groupby(["declaration_date", "declaration_id"], sort=True)
    d = pd.DataFrame({
        "customs_office": g.customs_office.first().astype("str"),
        "importer_id": g.importer_id.first().astype("str"),
        "hs2": g.hs_code.first().astype("str").str[:2],
        "origin_country": g.origin_country.first().astype("str"),
        "channel": g.channel.first(),
        "selection_reason": g.selection_reason.first(),
        "mandatory": g.mandatory.any(),
        "n_items": g.size(),
        "fraud_probability": 1 - np.exp(g._lq.sum()),
        "expected_revenue_usd": g.expected_revenue_usd.sum().astype(float),
        "uncertainty": g.uncertainty.max().astype(float),
        "rule_score": g.rule_score.max().astype(float),
        "inspected": g.has_outcome.any(),
        "fraud": g.fraud.any(),
        "items_inspected": g.has_outcome.sum(),
        "items_fraud": g.fraud.sum(),
        "revenue_recovered_usd": g.revenue_recovered_usd.sum(),
        "penalty_usd": g.penalty_usd.sum(),
    })
    key = ["declaration_date", "declaration_id"]
    for col, src in (("offence_codes", x[[*key, "_code"]].rename(columns={"_code": "v"})),
                     ("rule_hits", x[[*key, "rule_hits"]].explode("rule_hits").rename(columns={"rule_hits": "v"}))):
        v = src.dropna(subset=["v"]).astype({"v": "str"})
        v = v[v.v != ""].drop_duplicates().sort_values([*key, "v"])
        d[col] = v.groupby(key).v.agg(",".join).reindex(d.index).fillna("")
    d = d.reset_index()
    d["selected"] = d.channel.isin(["RED", "YELLOW"])
    nm = d[~d.mandatory]
    grp = ["declaration_date", "customs_office"]
    d["rank_revenue"] = nm.sort_values([*grp, "expected_revenue_usd", "fraud_probability", "declaration_id"],
                                       ascending=[True, True, False, False, True]).groupby(grp).cumcount() + 1
    d["rank_probability"] = nm.sort_values([*grp, "fraud_probability", "expected_revenue_usd", "declaration_id"],
                                           ascending=[True, True, False, False, True]).groupby(grp).cumcount() + 1
    d["cut"] = (d.selected & ~d.mandatory).groupby([d.declaration_date, d.customs_office]).transform("sum")
    d["missed_by_exploitation"] = (~d.mandatory & (d[["rank_revenue", "rank_probability"]].min(axis=1) > d.cut))
    d = d.astype({"rank_revenue": "Int64", "rank_probability": "Int64", "cut": "int64"})
    return d[[*cols[:-1], "missed_by_exploitation", "selected"]]


# --- the day's KPIs --------------------------------------------------------------------------------------

def compute(settings: Settings, day: date) -> dict[str, pd.DataFrame]:
    """Every KPI table of day ``day``'s report, as of the end of the day (see the module docstring)."""
    items = scored_items(settings, day)
    hist = feedback.offences(settings, current=False, asof=day)
    off = hist[hist.is_current].reset_index(drop=True)
    it = item_outcomes(items, off)
    decl = declarations(it)
    green = green_estimate(decl, settings.monitoring.min_green_sample)
    first = pd.to_datetime(items.declaration_date).min().date() if len(items) else None
    it_today = it[pd.to_datetime(it.declaration_date).dt.date == day] if len(it) else it
    # Customs silver as the pipeline knew it on the day (ingest.silver's table, only the columns needed).
    customs = read_partitioned(settings.silver / "customs", SOURCES["customs"].partition_by, upto=day,
                               columns=kpi_exploration.CUSTOMS_COLUMNS)
    mon = settings.monitoring
    found = kpi_exploration.finds(decl, it, off, customs, day, mon.new_importer_days)
    t = {
        "efficiency": efficiency(decl, green),
        "channels": channels(decl),
        "rules": rules_table(settings, day, it_today, off),
        "risk_areas": risk_areas(settings, day, off, first),
        "discoveries": discoveries(decl, off),
        "exploration": kpi_exploration.table(found, day, mon.exploration_window_days),
        "offence_growth": offence_growth(settings, day, hist),
        "scores": scores(decl),
        "calibration": calibration(it),
        "weights": weights(settings, day),
        "tax_audits": kpi_tax.compute(settings, day),  # the monthly tax run's audits (empty without a tax side)
    }
    t["summary"] = summary(settings, day, t, decl, off, green)
    return t


def _row(e: pd.DataFrame, ptype: str, period: str, office: str = ALL) -> dict:
    r = e[(e.period_type == ptype) & (e.period == period) & (e.customs_office == office)]
    return r.iloc[0].to_dict() if len(r) else {}


def summary(settings: Settings, day: date, t: dict, decl: pd.DataFrame, off: pd.DataFrame, green: dict) -> pd.DataFrame:
    """The headline of day D: its decisions, what came back on D, and the cumulative figures."""
    e = t["efficiency"]
    today = _row(e, "day", day.isoformat())
    allp = _row(e, "all", "all")
    last7 = decl[decl.declaration_date.dt.date > day - timedelta(days=7)]
    e7 = efficiency(last7, green) if len(last7) else pd.DataFrame()
    r7 = _row(e7, "all", "all") if len(e7) else {}
    rep = off[pd.to_datetime(off.reported_date).dt.date == day] if len(off) else off
    decl_today = decl[decl.declaration_date.dt.date == day]
    used = str(t["rules"].weights_used.iloc[0]) if len(t["rules"]) else rule_weights.version_before(settings, day)
    produced = f"rw-{day.isoformat()}" if f"rw-{day.isoformat()}" in rule_weights.versions(settings) else None
    mv = None
    if len(decl_today):
        run = manifest_path(settings, day)
        mv = json.loads(run.read_text())["model_version"] if run.exists() else None
    row = {
        "report_date": day, "model_version": mv, "weights_used": used, "weights_produced": produced,
        "declarations": int(today.get("declarations", 0)), "selected": int(today.get("selected", 0)),
        "selection_rate": today.get("selection_rate", np.nan), "red": int(today.get("red", 0)),
        "yellow": int(today.get("yellow", 0)), "green": int(today.get("green", 0)),
        "outcomes_reported_today": len(rep), "frauds_reported_today": int((rep.result == "FRAUD").sum()),
        "revenue_reported_today_usd": round(float(rep.revenue_recovered_usd.sum()), 2) if len(rep) else 0.0,
        "pipeline_outcomes_reported_today": int((rep.selection_reason != "legacy").sum()) if len(rep) else 0,
        "days_scored": int(decl.declaration_date.nunique()),
        "hit_rate_red": allp.get("hit_rate_red", np.nan), "hit_rate_yellow": allp.get("hit_rate_yellow", np.nan),
        "hit_rate_targeted": allp.get("hit_rate_targeted", np.nan),
        "hit_rate_random": allp.get("hit_rate_random", np.nan),
        "random_inspected": int(allp.get("random_inspected", 0)),
        "efficiency_index": allp.get("efficiency_index", np.nan),
        "efficiency_index_low": allp.get("efficiency_index_low", np.nan),
        "efficiency_index_high": allp.get("efficiency_index_high", np.nan),
        "efficiency_index_red": allp.get("efficiency_index_red", np.nan),
        "efficiency_index_yellow": allp.get("efficiency_index_yellow", np.nan),
        "efficiency_index_seed": allp.get("efficiency_index_seed", np.nan),
        "efficiency_index_7d": r7.get("efficiency_index", np.nan),
        "lift_exploitation": allp.get("lift_exploitation", np.nan),
        "frauds_found": int(allp.get("frauds", 0)),
        "revenue_recovered_usd": round(float(allp.get("revenue_recovered_usd", 0.0)), 2),
        "discoveries": int(allp.get("discoveries", 0)),
        "discovery_revenue_usd": round(float(allp.get("discovery_revenue_usd", 0.0)), 2),
        "green_fraud_rate_est": green["rate"], "green_fraud_rate_low": green["low"],
        "green_fraud_rate_high": green["high"], "green_estimate_basis": f"{green['basis']} (n={green['n']})",
        "undetected_frauds_est_today": today.get("undetected_frauds_est", np.nan),
        "undetected_frauds_high_today": today.get("undetected_frauds_high", np.nan),
        "undetected_revenue_est_today_usd": today.get("undetected_revenue_est_usd", np.nan),
        "undetected_frauds_est_all": allp.get("undetected_frauds_est", np.nan),
        "missed_share_est": allp.get("missed_share_est", np.nan),
        **kpi_exploration.headline(t["exploration"], settings.monitoring.exploration_window_days),
    }
    return pd.DataFrame([row])


def write(settings: Settings, day: date, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Each table to ``gold/kpi/<table>/report_date=D/part-0.parquet`` (atomic, same bytes on a re-run; the
    report date in the path only)."""
    return {name: str(write_partition(df.reset_index(drop=True), kpi_dir(settings) / name, KEY, day))
            for name, df in tables.items()}


def read(settings: Settings, table: str, report_date: date | None = None) -> pd.DataFrame:
    """A KPI table: one report's snapshot (``report_date``), or the latest one; ``report_date`` (a date) is
    a column."""
    base = kpi_dir(settings) / table
    if report_date is None:
        parts = sorted(base.glob(f"{KEY}=*")) if base.exists() else []
        if not parts:
            return pd.DataFrame()
        report_date = date.fromisoformat(parts[-1].name.split("=", 1)[1])
    return read_partitioned(base, KEY, upto=report_date, since=report_date)


def latest_summary(settings: Settings) -> dict | None:
    s = read(settings, "summary")
    return s.iloc[-1].to_dict() if len(s) else None
