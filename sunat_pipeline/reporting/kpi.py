"""KPIs of the targeting: what the channels found, what random and exploration saw that exploitation
would not, how the offence database and the rule weights evolve (definitions in docs/kpi.md).

``compute(settings, day)`` returns the tables of day D's report as of the end of D: the pipeline's
decisions of every scored day up to D, joined to the outcomes the offence database knew after D's
feedback (``feedback.offences(asof=D)``), so a report of a past day is reproducible whatever arrived
since. ``write`` stores them as ``gold/kpi/<table>/report_date=D/part-0.parquet`` (each report is a
snapshot: the latest one is the current view, earlier ones show what was known then).

Tables: ``efficiency`` (per day, week, all x office: selection rate, hit rate per channel, targeted and
random hit rates, the efficiency index, frauds, revenue, discoveries, undetected fraud in GREEN),
``channels`` (per day, week, all x office x channel x selection reason), ``rules`` (hits and precision
per rule, weights used and produced), ``risk_areas``, ``discoveries`` (frauds found by random and
exploration selections, flagged when exploitation would have missed them), ``offence_growth`` (per
weights version), ``scores`` (score distribution per day and channel), ``calibration`` and ``weights``
(the weight history up to D).
"""

from __future__ import annotations

import itertools
import json
import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.lake.store import partition, read_partitions, write_parquet_atomic
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
ALL = "ALL"
TARGETED = ("mandatory_rule", "exploitation", "exploration")
PROBES = ("random", "exploration")  # selections that look where exploitation would not
TABLES = ("summary", "efficiency", "channels", "rules", "risk_areas", "discoveries", "offence_growth", "scores",
          "calibration", "weights")
_SCORED_COLUMNS = ["declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "hs_code",
                   "origin_country", "fraud_probability", "expected_revenue_usd", "uncertainty", "rule_score",
                   "rule_hits", "channel", "selection_reason", "model_version", "rule_weights_version", "mandatory"]


def kpi_dir(settings: Settings):
    return settings.gold / "kpi"


def _div(a, b):
    """a / b, NaN where b is 0 (two scalars, or two aligned Series)."""
    if np.isscalar(a) and np.isscalar(b):
        return float(a) / float(b) if b else np.nan
    a, b = pd.Series(a).astype(float), pd.Series(b).astype(float)
    return a / b.where(b != 0)


def beta_interval(k: float, n: float, level: float = 0.90) -> tuple[float, float]:
    """Jeffreys interval of a binomial proportion (k of n)."""
    if n <= 0:
        return np.nan, np.nan
    from scipy.special import betaincinv

    lo, hi = betaincinv(k + 0.5, n - k + 0.5, [(1 - level) / 2, (1 + level) / 2])
    return float(0.0 if k == 0 else lo), float(1.0 if k == n else hi)


# --- inputs ----------------------------------------------------------------------------------------------

def scored_items(settings: Settings, upto: date) -> pd.DataFrame:
    """The pipeline's scored items of every day up to ``upto``."""
    frames = []
    base = settings.scored_dir
    for p in sorted(base.glob("declaration_date=*")) if base.exists() else []:
        d = date.fromisoformat(p.name.split("=", 1)[1])
        if d > upto:
            continue
        for f in sorted(p.glob("*.parquet")):
            df = pd.read_parquet(f)
            frames.append(df[[c for c in _SCORED_COLUMNS if c in df.columns]])
    if not frames:
        return pd.DataFrame(columns=_SCORED_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
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


# --- tables ----------------------------------------------------------------------------------------------

def _periods(dates: pd.Series) -> dict[str, pd.Series]:
    d = pd.to_datetime(dates)
    return {"day": d.dt.strftime("%Y-%m-%d"), "week": d.dt.strftime("%G-W%V"),
            "all": pd.Series("all", index=dates.index)}


def _cube(df: pd.DataFrame, date_col: str, dims: list[str], sums: list[str]) -> pd.DataFrame:
    """Sums of ``sums`` per (period_type, period, *dims), with every dim also rolled up to ALL."""
    out = []
    for ptype, per in _periods(df[date_col]).items():
        x = df.assign(period=per.to_numpy())
        for roll in itertools.product([False, True], repeat=len(dims)):
            y = x.assign(**{dim: ALL for dim, r in zip(dims, roll, strict=True) if r})
            s = y.groupby(["period", *dims], sort=True)[sums].sum().reset_index()
            out.append(s.assign(period_type=ptype))
    if not out:
        return pd.DataFrame(columns=["period_type", "period", *dims, *sums])
    res = pd.concat(out, ignore_index=True)  # day rows, then week, then all; ALL after the offices
    res = res.sort_values(["period_type", "period", *dims], kind="stable",
                          key=lambda s: s.map({"day": 0, "week": 1, "all": 2}) if s.name == "period_type"
                          else s.astype(str).str.replace(ALL, "~", regex=False))
    return res[["period_type", "period", *dims, *sums]].reset_index(drop=True)


def green_estimate(decl: pd.DataFrame, min_sample: int = 5) -> dict:
    """Fraud rate of GREEN declarations estimated from random selections (the unbiased sample).

    Random selections that exploitation would have left (past the exploitation cut) stand for GREEN best;
    with fewer than ``min_sample`` inspected ones, every inspected random selection is used (an upper
    bound: random picks above the cut are riskier than GREEN). Detection is what an inspection finds.
    """
    rnd = decl[(decl.selection_reason == "random") & decl.inspected]
    below = rnd[rnd.missed_by_exploitation]
    basis, sample = ("random below the exploitation cut", below) if len(below) >= min_sample else \
        ("all random selections", rnd)
    n, k = len(sample), int(sample.fraud.sum())
    lo, hi = beta_interval(k, n)
    hits = decl[(decl.selection_reason == "random") & decl.fraud]
    rev = float(hits.revenue_recovered_usd.mean()) if len(hits) else float(
        decl[decl.fraud].revenue_recovered_usd.mean()) if decl.fraud.any() else 0.0
    return {"basis": basis, "n": n, "frauds": k, "rate": k / n if n else np.nan, "low": lo, "high": hi,
            "revenue_per_fraud_usd": rev}


def efficiency(decl: pd.DataFrame, green: dict) -> pd.DataFrame:
    """Per (period, office): selection, hit rates per channel, targeted vs random, the efficiency index."""
    sr = decl.selection_reason
    x = pd.DataFrame({
        "declaration_date": decl.declaration_date, "customs_office": decl.customs_office,
        "declarations": 1, "selected": decl.selected, "red": decl.channel == "RED",
        "yellow": decl.channel == "YELLOW", "green": decl.channel == "GREEN",
        "inspected": decl.inspected, "frauds": decl.fraud,
        "revenue_recovered_usd": decl.revenue_recovered_usd, "penalty_usd": decl.penalty_usd,
    })
    for name, m in [("red", decl.channel == "RED"), ("yellow", decl.channel == "YELLOW"),
                    ("targeted", sr.isin(TARGETED)), ("random", sr == "random"),
                    ("exploitation", sr == "exploitation"), ("exploration", sr == "exploration"),
                    ("mandatory", sr == "mandatory_rule")]:
        x[f"{name}_inspected"] = m & decl.inspected
        x[f"{name}_frauds"] = m & decl.fraud
    disc = sr.isin(PROBES) & decl.fraud & decl.missed_by_exploitation
    x["discoveries"] = disc
    x["discovery_revenue_usd"] = decl.revenue_recovered_usd.where(disc, 0.0)
    sums = [c for c in x.columns if c not in ("declaration_date", "customs_office")]
    e = _cube(x, "declaration_date", ["customs_office"], sums)
    e["selection_rate"] = _div(e.selected, e.declarations)
    e["outcomes_complete"] = _div(e.inspected, e.selected)
    e["hit_rate"] = _div(e.frauds, e.inspected)
    for name in ("red", "yellow", "targeted", "random", "exploitation", "exploration", "mandatory"):
        e[f"hit_rate_{name}"] = _div(e[f"{name}_frauds"], e[f"{name}_inspected"])
    e["efficiency_index"] = _div(e.hit_rate_targeted, e.hit_rate_random)
    e["lift_exploitation"] = _div(e.hit_rate_exploitation, e.hit_rate_random)
    e["green_fraud_rate_est"] = green["rate"]
    e["undetected_frauds_est"] = e.green * green["rate"]
    e["undetected_frauds_low"] = e.green * green["low"]
    e["undetected_frauds_high"] = e.green * green["high"]
    e["undetected_revenue_est_usd"] = e.undetected_frauds_est * green["revenue_per_fraud_usd"]
    e["missed_share_est"] = _div(e.undetected_frauds_est, e.undetected_frauds_est + e.frauds)
    ints = [c for c in sums if c not in ("revenue_recovered_usd", "penalty_usd", "discovery_revenue_usd")]
    return e.astype({c: "int64" for c in ints})


def channels(decl: pd.DataFrame) -> pd.DataFrame:
    """Per (period, office, channel, selection reason): counts, hit rate (declarations and items), revenue."""
    x = pd.DataFrame({
        "declaration_date": decl.declaration_date, "customs_office": decl.customs_office,
        "channel": decl.channel, "selection_reason": decl.selection_reason, "declarations": 1,
        "items": decl.n_items, "inspected": decl.inspected, "frauds": decl.fraud,
        "items_inspected": decl.items_inspected, "items_fraud": decl.items_fraud,
        "revenue_recovered_usd": decl.revenue_recovered_usd, "penalty_usd": decl.penalty_usd,
        "expected_revenue_usd": decl.expected_revenue_usd,
    })
    c = _cube(x, "declaration_date", ["customs_office", "channel", "selection_reason"],
              [k for k in x.columns if k not in ("declaration_date", "customs_office", "channel", "selection_reason")])
    c["hit_rate"] = _div(c.frauds, c.inspected)
    c["item_hit_rate"] = _div(c.items_fraud, c.items_inspected)
    return c.astype({k: "int64" for k in ("declarations", "items", "inspected", "frauds", "items_inspected",
                                          "items_fraud")})


def _weights_used(settings: Settings, decl_today: pd.DataFrame, day: date) -> str:
    if "rule_weights_version" in decl_today and len(decl_today):
        return str(decl_today.rule_weights_version.iloc[0])
    return feedback.version_before(settings, day)


def rules_table(settings: Settings, day: date, it_today: pd.DataFrame, off: pd.DataFrame) -> pd.DataFrame:
    """Per rule: hits among the day's items and selections, outcomes and precision, weights and evidence."""
    rs = load_rules(settings.rules_path)
    used = _weights_used(settings, it_today, day)
    w_used = feedback.load_version(settings, used)["weights"]
    produced = f"rw-{day.isoformat()}"
    rec = feedback.load_version(settings, produced) if produced in feedback.versions(settings) else None
    hits = it_today[["rule_hits", "channel"]].explode("rule_hits").dropna() if len(it_today) else \
        pd.DataFrame(columns=["rule_hits", "channel"])
    o = off.assign(fraud=(off.result == "FRAUD").to_numpy(), today=pd.to_datetime(off.reported_date).dt.date == day,
                   pipeline=(off.selection_reason != "legacy").to_numpy())
    o = o[["rule_hits", "fraud", "today", "pipeline", "revenue_recovered_usd"]].explode("rule_hits").dropna(
        subset=["rule_hits"])
    rows = []
    for r in rs.rules:
        h = hits[hits.rule_hits == r.id]
        x = o[o.rule_hits == r.id]
        ev = (rec or {}).get("evidence", {}).get(r.id, {})
        rows.append({
            "rule_id": r.id, "risk_area": r.area, "name": r.name, "mandatory": r.mandatory,
            "items_hit_today": len(h), "selected_items_hit_today": int(h.channel.isin(["RED", "YELLOW"]).sum()),
            "inspected": len(x), "frauds": int(x.fraud.sum()), "precision": _div(int(x.fraud.sum()), len(x)),
            "revenue_recovered_usd": round(float(x.revenue_recovered_usd.sum()), 2),
            "inspected_pipeline": int(x.pipeline.sum()), "frauds_pipeline": int((x.fraud & x.pipeline).sum()),
            "precision_pipeline": _div(int((x.fraud & x.pipeline).sum()), int(x.pipeline.sum())),
            "inspected_reported_today": int(x.today.sum()), "frauds_reported_today": int((x.fraud & x.today).sum()),
            "initial_weight": r.weight, "weights_used": used, "weight_used": w_used.get(r.id, r.weight),
            "weights_produced": produced if rec else None,
            "weight_next": (rec or {}).get("weights", {}).get(r.id, np.nan),
            "posterior_precision": ev.get("posterior_precision", np.nan),
            "ci90_low": ev.get("ci90_low", np.nan), "ci90_high": ev.get("ci90_high", np.nan),
        })
    return pd.DataFrame(rows)


def risk_areas(settings: Settings, day: date, off: pd.DataFrame, first_day: date | None) -> pd.DataFrame:
    """Per (period of report, risk area): outcomes of items hit by the area's rules ('none': no rule hit)."""
    rs = load_rules(settings.rules_path)
    area = {r.id: r.area for r in rs.rules}
    cols = ["period_type", "period", "risk_area", "inspected", "frauds", "precision", "revenue_recovered_usd",
            "inspected_pipeline", "frauds_pipeline"]
    if off.empty:
        return pd.DataFrame(columns=cols)
    areas = [sorted({area.get(h, "other") for h in hits}) or ["none"] for hits in off.rule_hits]
    o = pd.DataFrame({"reported_date": pd.to_datetime(off.reported_date), "risk_area": areas,
                      "inspected": 1, "frauds": (off.result == "FRAUD").to_numpy(),
                      "revenue_recovered_usd": off.revenue_recovered_usd.astype(float).to_numpy(),
                      "pipeline": (off.selection_reason != "legacy").to_numpy()}).explode("risk_area")
    o["inspected_pipeline"] = o.pipeline
    o["frauds_pipeline"] = o.pipeline & o.frauds
    if first_day is not None:  # day and week rows over the pipeline's days; 'all' over the whole database
        live = o[o.reported_date.dt.date >= first_day]
    else:
        live = o.iloc[0:0]
    sums = ["inspected", "frauds", "revenue_recovered_usd", "inspected_pipeline", "frauds_pipeline"]
    parts = [_cube(live, "reported_date", ["risk_area"], sums).query("period_type != 'all'"),
             _cube(o, "reported_date", ["risk_area"], sums).query("period_type == 'all'")]
    a = pd.concat(parts, ignore_index=True)
    a["precision"] = _div(a.frauds, a.inspected)
    return a[cols].astype({"inspected": "int64", "frauds": "int64", "inspected_pipeline": "int64",
                           "frauds_pipeline": "int64"})


def discoveries(decl: pd.DataFrame, off: pd.DataFrame) -> pd.DataFrame:
    """Frauds found by random and exploration selections; ``missed_by_exploitation`` marks those
    exploitation would not have selected; ``new_importer`` those of an importer with no fraud on record
    before the declaration."""
    cols = ["declaration_date", "declaration_id", "customs_office", "importer_id", "hs2", "origin_country",
            "channel", "selection_reason", "rank_revenue", "rank_probability", "cut", "missed_by_exploitation",
            "fraud_probability", "expected_revenue_usd", "uncertainty", "offence_codes", "rule_hits",
            "revenue_recovered_usd", "importer_prior_frauds", "new_importer"]
    d = decl[decl.selection_reason.isin(PROBES) & decl.fraud].copy()
    if d.empty:
        return pd.DataFrame(columns=cols)
    f = off[off.result == "FRAUD"][["importer_id", "reported_date"]].dropna()
    f = f.assign(importer_id=f.importer_id.astype("str"),
                 reported_date=pd.to_datetime(f.reported_date).astype("datetime64[us]")).sort_values(
        ["reported_date", "importer_id"], kind="stable")
    f["n"] = f.groupby("importer_id").cumcount() + 1  # the importer's frauds on record by that date
    left = d[["importer_id", "declaration_date"]].assign(
        importer_id=d.importer_id.astype("str"), declaration_date=d.declaration_date.astype("datetime64[us]"),
        _row=np.arange(len(d))).sort_values("declaration_date", kind="stable")
    m = pd.merge_asof(left, f, left_on="declaration_date", right_on="reported_date", by="importer_id",
                      direction="backward")
    d["importer_prior_frauds"] = m.set_index("_row").n.reindex(np.arange(len(d))).fillna(0).astype(int).to_numpy()
    d["new_importer"] = d.importer_prior_frauds == 0
    d = d.sort_values(["declaration_date", "missed_by_exploitation", "revenue_recovered_usd", "declaration_id"],
                      ascending=[True, False, False, True])
    return d[cols].reset_index(drop=True)


def offence_growth(settings: Settings, day: date, hist: pd.DataFrame) -> pd.DataFrame:
    """Per weights version up to D: what its feedback folded into the offence database, and the database's
    totals after it (recorded by the version). ``hist``: the database as of D (every row version)."""
    g = hist.assign(fraud=(hist.result == "FRAUD").to_numpy(), legacy=(hist.selection_reason == "legacy").to_numpy(),
                    rev=hist.revenue_recovered_usd.astype(float)).groupby("folded_in")
    folded = pd.DataFrame({"n": g.size(), "frauds": g.fraud.sum(), "rev": g.rev.sum(), "legacy": g.legacy.sum()})
    rows = []
    for v in [v for v in feedback.versions(settings) if v <= f"rw-{day.isoformat()}"]:
        rec = feedback.load_version(settings, v)
        f = folded.loc[v] if v in folded.index else pd.Series({"n": 0, "frauds": 0, "rev": 0.0, "legacy": 0})
        tot = rec.get("offence_db", {})
        rows.append({
            "version": v, "date": rec["date"], "records_folded": int(f.n), "frauds_folded": int(f.frauds),
            "revenue_folded_usd": round(float(f.rev), 2), "legacy_folded": int(f.legacy),
            "pipeline_folded": int(f.n - f.legacy),
            "corrections": rec.get("corrections", 0), "late_records": rec.get("late_records", 0),
            "records_total": tot.get("records"), "current_total": tot.get("current"),
            "frauds_total": tot.get("frauds"), "revenue_total_usd": tot.get("revenue_recovered_usd"),
            "pipeline_total": tot.get("pipeline"),
        })
    return pd.DataFrame(rows)


def scores(decl: pd.DataFrame) -> pd.DataFrame:
    """Per (decision day, channel incl. ALL): the distribution of the declarations' risk scores."""
    cols = ["declaration_date", "channel", "declarations", "fraud_probability_mean", "fraud_probability_p50",
            "fraud_probability_p90", "expected_revenue_mean_usd", "expected_revenue_total_usd", "uncertainty_mean",
            "rule_score_mean"]
    if decl.empty:
        return pd.DataFrame(columns=cols)
    x = pd.concat([decl, decl.assign(channel=ALL)], ignore_index=True)
    g = x.groupby([x.declaration_date.dt.strftime("%Y-%m-%d"), "channel"], sort=True)
    s = pd.DataFrame({
        "declarations": g.size(),
        "fraud_probability_mean": g.fraud_probability.mean(),
        "fraud_probability_p50": g.fraud_probability.median(),
        "fraud_probability_p90": g.fraud_probability.quantile(0.9),
        "expected_revenue_mean_usd": g.expected_revenue_usd.mean(),
        "expected_revenue_total_usd": g.expected_revenue_usd.sum(),
        "uncertainty_mean": g.uncertainty.mean(),
        "rule_score_mean": g.rule_score.mean(),
    }).reset_index()
    return s[cols]


def calibration(it: pd.DataFrame, bins: int = 10) -> pd.DataFrame:
    """Inspected items by decile of the model's fraud probability: mean predicted vs observed hit rate
    (on inspected items only, so it carries the selection's bias)."""
    cols = ["bin", "items", "p_low", "p_high", "predicted_mean", "observed_rate"]
    x = it[it.has_outcome]
    if len(x) < bins:
        return pd.DataFrame(columns=cols)
    p = x.fraud_probability.astype(float)
    b = pd.qcut(p.rank(method="first"), bins, labels=False)
    g = x.assign(_b=b.to_numpy(), _p=p.to_numpy()).groupby("_b")
    return pd.DataFrame({"bin": g.size().index.astype(int), "items": g.size().to_numpy(),
                         "p_low": g._p.min().to_numpy(), "p_high": g._p.max().to_numpy(),
                         "predicted_mean": g._p.mean().to_numpy(), "observed_rate": g.fraud.mean().to_numpy()})


def weights(settings: Settings, day: date) -> pd.DataFrame:
    h = feedback.weights_history(settings)
    if h.empty:
        return h
    area = {r.id: r.area for r in load_rules(settings.rules_path).rules}
    h = h[h.version <= f"rw-{day.isoformat()}"]
    return h.assign(risk_area=h.rule_id.map(area)).reset_index(drop=True)


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
    t = {
        "efficiency": efficiency(decl, green),
        "channels": channels(decl),
        "rules": rules_table(settings, day, it_today, off),
        "risk_areas": risk_areas(settings, day, off, first),
        "discoveries": discoveries(decl, off),
        "offence_growth": offence_growth(settings, day, hist),
        "scores": scores(decl),
        "calibration": calibration(it),
        "weights": weights(settings, day),
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
    used = str(t["rules"].weights_used.iloc[0]) if len(t["rules"]) else feedback.version_before(settings, day)
    produced = f"rw-{day.isoformat()}" if f"rw-{day.isoformat()}" in feedback.versions(settings) else None
    mv = None
    if len(decl_today):
        runs = settings.gold / "score_runs" / f"declaration_date={day.isoformat()}" / "run.json"
        mv = json.loads(runs.read_text())["model_version"] if runs.exists() else None
    row = {
        "report_date": day.isoformat(), "model_version": mv, "weights_used": used, "weights_produced": produced,
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
    }
    return pd.DataFrame([row])


def write(settings: Settings, day: date, tables: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Each table to ``gold/kpi/<table>/report_date=D/part-0.parquet`` (atomic, same bytes on a re-run)."""
    out = {}
    for name, df in tables.items():
        p = partition(kpi_dir(settings) / name, "report_date", day) / "part-0.parquet"
        write_parquet_atomic(df.reset_index(drop=True), p)
        out[name] = str(p)
    return out


def read(settings: Settings, table: str, report_date: date | None = None) -> pd.DataFrame:
    """A KPI table: one report's snapshot (``report_date``), or the latest one."""
    base = kpi_dir(settings) / table
    if report_date is None:
        parts = sorted(base.glob("report_date=*")) if base.exists() else []
        if not parts:
            return pd.DataFrame()
        report_date = date.fromisoformat(parts[-1].name.split("=", 1)[1])
    return read_partitions(base, "report_date", upto=report_date, since=report_date)


def latest_summary(settings: Settings) -> dict | None:
    s = read(settings, "summary")
    return s.iloc[-1].to_dict() if len(s) else None
