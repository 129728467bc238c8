"""The KPI tables of a report (definitions in docs/kpi.md), as functions of the scored declarations with
their outcomes (``kpi.declarations``), the offence database and the rule-weight versions.

Tables: ``efficiency`` (per day, week, all x office: selection rate, hit rate per channel, targeted and
random hit rates, the efficiency index, frauds, revenue, discoveries, undetected fraud in GREEN),
``channels`` (per day, week, all x office x channel x selection reason), ``rules`` (hits and precision
per rule, weights used and produced), ``risk_areas``, ``discoveries`` (frauds found by random and
exploration selections, flagged when exploitation would have missed them), ``offence_growth`` (per
weights version), ``scores`` (score distribution per day and channel), ``calibration`` and ``weights``
(the weight history up to D).
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd

from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import Settings

ALL = "ALL"
TARGETED = ("mandatory_rule", "exploitation", "exploration")
PROBES = ("random", "exploration")  # selections that look where exploitation would not


def _div(a, b):
    """a / b, NaN where b is 0 (two scalars, or two aligned Series)."""
    if np.isscalar(a) and np.isscalar(b):
        return float(a) / float(b) if b else np.nan
    a, b = pd.Series(a).astype(float), pd.Series(b).astype(float)
    return a / b.where(b != 0)


def ratio_interval(k1, n1, k2, n2, z: float = 1.96):
    """95% interval of the ratio of two hit rates (k1/n1) / (k2/n2), Katz's log method; half a count is added to
    each cell when a count is zero (Haldane). NaN where either group was not inspected."""
    k1, n1, k2, n2 = (pd.Series(v).astype(float) for v in (k1, n1, k2, n2))
    zero = (k1 == 0) | (k2 == 0) | (k1 == n1) | (k2 == n2)
    a, b = k1 + 0.5 * zero, k2 + 0.5 * zero
    m1, m2 = n1 + zero.astype(float), n2 + zero.astype(float)
    ok = (n1 > 0) & (n2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rr = np.log((a / m1) / (b / m2))
        se = np.sqrt(1 / a - 1 / m1 + 1 / b - 1 / m2)
    return np.exp(log_rr - z * se).where(ok), np.exp(log_rr + z * se).where(ok)


def beta_interval(k: float, n: float, level: float = 0.90) -> tuple[float, float]:
    """Jeffreys interval of a binomial proportion (k of n)."""
    if n <= 0:
        return np.nan, np.nan
    from scipy.special import betaincinv

    lo, hi = betaincinv(k + 0.5, n - k + 0.5, [(1 - level) / 2, (1 + level) / 2])
    return float(0.0 if k == 0 else lo), float(1.0 if k == n else hi)



def _periods(dates: pd.Series) -> dict[str, pd.Series]:
    d = pd.to_datetime(dates)
    return {"day": d.dt.strftime("%Y-%m-%d"), "week": d.dt.strftime("%G-W%V"),
            "all": pd.Series("all", index=dates.index)}


def _cube(df: pd.DataFrame, date_col: str, dims: list[str], sums: list[str]) -> pd.DataFrame:
    """Sums of ``sums`` per (period_type, period, *dims), with every dim also rolled up to ALL (DuckDB's
    GROUP BY CUBE). Rows: day periods, then weeks, then all; within each, ALL after the dims' values."""
    long = pd.concat([df[dims + sums].assign(period_type=ptype, period=per.to_numpy())
                      for ptype, per in _periods(df[date_col]).items()], ignore_index=True)
    # Counts stay integers; money is summed with compensation (Kahan), as pandas does.
    totals = [f"fsum({c})" if long[c].dtype.kind == "f" else f"CAST(SUM(CAST({c} AS BIGINT)) AS BIGINT)"
              for c in sums]
    sql = ("SELECT period_type, period, "
           + ", ".join([f"CASE WHEN GROUPING({d}) = 1 THEN '{ALL}' ELSE {d} END AS {d}" for d in dims]
                       + [f"{t} AS {c}" for t, c in zip(totals, sums, strict=True)])
           + f" FROM long GROUP BY period_type, period, CUBE({', '.join(dims)})"
           + " ORDER BY CASE period_type WHEN 'day' THEN 0 WHEN 'week' THEN 1 ELSE 2 END, period, "
           + ", ".join(f"GROUPING({d}), {d}" for d in dims))
    with duckdb.connect() as con:
        con.execute("SET threads = 1")  # one summation order: the same bytes on every run
        con.register("long", long)
        return con.execute(sql).df().astype({c: "str" for c in ["period_type", "period", *dims]})


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
    for ch in ("red", "yellow"):  # the index within a channel: its checks see different frauds
        for name, m in (("targeted", sr.isin(TARGETED)), ("random", sr == "random")):
            x[f"{name}_{ch}_inspected"] = m & (decl.channel == ch.upper()) & decl.inspected
            x[f"{name}_{ch}_frauds"] = m & (decl.channel == ch.upper()) & decl.fraud
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
    e["efficiency_index_low"], e["efficiency_index_high"] = ratio_interval(
        e.targeted_frauds, e.targeted_inspected, e.random_frauds, e.random_inspected)
    for ch in ("red", "yellow"):
        t, r = f"targeted_{ch}", f"random_{ch}"
        e[f"efficiency_index_{ch}"] = _div(_div(e[t + "_frauds"], e[t + "_inspected"]),
                                           _div(e[r + "_frauds"], e[r + "_inspected"]))
        e[f"efficiency_index_{ch}_low"], e[f"efficiency_index_{ch}_high"] = ratio_interval(
            e[t + "_frauds"], e[t + "_inspected"], e[r + "_frauds"], e[r + "_inspected"])
    e["lift_exploitation"] = _div(e.hit_rate_exploitation, e.hit_rate_random)
    e["green_fraud_rate_est"] = green["rate"]
    e["undetected_frauds_est"] = e.green * green["rate"]
    e["undetected_frauds_low"] = e.green * green["low"]
    e["undetected_frauds_high"] = e.green * green["high"]
    e["undetected_revenue_est_usd"] = e.undetected_frauds_est * green["revenue_per_fraud_usd"]
    e["missed_share_est"] = _div(e.undetected_frauds_est, e.undetected_frauds_est + e.frauds)
    # The seed simulation's index: the share of the (estimated) frauds detected over the share selected.
    e["efficiency_index_seed"] = _div(1 - e.missed_share_est, e.selection_rate)
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
    return rule_weights.version_before(settings, day)


def rules_table(settings: Settings, day: date, it_today: pd.DataFrame, off: pd.DataFrame) -> pd.DataFrame:
    """Per rule: hits among the day's items and selections, outcomes and precision, weights and evidence."""
    rs = load_rules(settings.rules_path)
    used = _weights_used(settings, it_today, day)
    w_used = rule_weights.load_version(settings, used)["weights"]
    produced = f"rw-{day.isoformat()}"
    rec = rule_weights.load_version(settings, produced) if produced in rule_weights.versions(settings) else None
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
    for v in [v for v in rule_weights.versions(settings) if v <= f"rw-{day.isoformat()}"]:
        rec = rule_weights.load_version(settings, v)
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
    h = rule_weights.weights_history(settings)
    if h.empty:
        return h
    area = {r.id: r.area for r in load_rules(settings.rules_path).rules}
    h = h[h.version <= f"rw-{day.isoformat()}"]
    return h.assign(risk_area=h.rule_id.map(area)).reset_index(drop=True)
