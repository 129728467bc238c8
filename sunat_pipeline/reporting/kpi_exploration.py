"""Exploration's hit rate and its discoveries, beside the other selection reasons (definitions in docs/kpi.md).

``finds`` takes every selected declaration whose outcome was reported by the report day and flags its fraud
finds: a **new offender** (no FRAUD finding of the importer reported before the declaration's date), an
importer **new to customs** (its first declaration at most ``new_importer_days`` before), a **new pattern**
(no FRAUD finding of a fraudulent item's HS6 x origin reported before the declaration's date) and an
**unexpected** find (no rule hit, declaration fraud probability below the office-day's exploitation cut).
The product cannot see the simulator's schemes: new patterns and unexpected finds are its proxies for them.

``table`` counts them per window of reported outcomes (the report day; the trailing
``exploration_window_days``) x selection reason, with hit rates, their 95% intervals and the ratios of each
reason's hit rate to random's and to exploitation's (``kpi_tables``' interval helpers).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_pipeline.reporting.kpi_tables import ALL, _div, beta_interval, ratio_interval

REASONS = ("mandatory_rule", "random", "exploitation", "exploration")
FLAGS = ("new_offender", "new_importer", "new_pattern", "unexpected")
CUSTOMS_COLUMNS = ["declaration_id", "item_no", "declaration_date", "importer_id", "origin_country"]
_KEY = ["declaration_date", "declaration_id"]
FIND_COLUMNS = [*_KEY, "customs_office", "importer_id", "selection_reason", "channel", "outcome_date", "fraud",
                "revenue_recovered_usd", "declaration_fraud_probability", "exploitation_cut", "rule_hits", *FLAGS]
TABLE_COLUMNS = ["window", "period_start", "period_end", "selection_reason", "inspected", "hits", "hit_rate",
                 "hit_rate_low", "hit_rate_high", "ratio_vs_random", "ratio_vs_random_low", "ratio_vs_random_high",
                 "ratio_vs_exploitation", "ratio_vs_exploitation_low", "ratio_vs_exploitation_high",
                 "revenue_recovered_usd", *FLAGS]


def _ts(s) -> pd.Series:
    return pd.to_datetime(pd.Series(s)).astype("datetime64[us]")


def _pair(hs: pd.Series, origin: pd.Series) -> pd.Series:
    return hs.astype("str").str[:6] + "|" + origin.astype("str")


def _known_before(first: pd.Series, keys: pd.Series, when: pd.Series) -> np.ndarray:
    """Whether ``first`` (earliest FRAUD report per key) is before ``when``, row by row (no finding: False)."""
    return (keys.map(first).astype("datetime64[us]") < when).to_numpy(dtype=bool)  # NaT compares False


def finds(decl: pd.DataFrame, it: pd.DataFrame, off: pd.DataFrame, customs: pd.DataFrame, day: date,
          new_importer_days: int = 30) -> pd.DataFrame:
    """One row per selected declaration (a reason in ``REASONS``) with an outcome reported by ``day``: when
    it came back (``outcome_date``: its latest item outcome), whether it was a hit, and the discovery flags
    (each False unless a hit). ``decl``: ``kpi.declarations``; ``it``: ``kpi.item_outcomes``; ``off``: the
    offence database's current rows; ``customs``: customs silver up to ``day`` (``CUSTOMS_COLUMNS``).
    Outcomes and findings reported after ``day`` are ignored."""
    end = pd.Timestamp(day)
    o = it[it.has_outcome].assign(_rep=_ts(it.reported_date[it.has_outcome]),
                                  declaration_date=_ts(it.declaration_date[it.has_outcome]))
    o = o[o._rep <= end]
    if decl.empty or o.empty:
        return pd.DataFrame(columns=FIND_COLUMNS).astype({"outcome_date": "datetime64[us]", "fraud": bool,
                                                          **{f: bool for f in FLAGS}})
    d = decl.assign(declaration_date=_ts(decl.declaration_date))
    prob = d.fraud_probability.astype(float)
    if "declaration_fraud_probability" in it.columns:  # what selection ranked (scored output schema >= 2)
        dp = it.groupby("declaration_id").declaration_fraud_probability.first()
        prob = d.declaration_id.map(dp).astype(float).fillna(prob)
    d["declaration_fraud_probability"] = prob
    picks = d[d.selected & (d.selection_reason == "exploitation")]
    cut = picks.groupby(["declaration_date", "customs_office"]).declaration_fraud_probability.min()
    g = o.groupby(_KEY)
    back = pd.DataFrame({"outcome_date": g._rep.max(), "fraud": g.fraud.any(),
                         "revenue_recovered_usd": g.revenue_recovered_usd.sum()}).reset_index()
    f = d[d.selected & d.selection_reason.isin(REASONS)].drop(columns=["fraud", "revenue_recovered_usd"]).merge(
        back, on=_KEY, how="inner").merge(cut.rename("exploitation_cut").reset_index(),
                                          on=["declaration_date", "customs_office"], how="left")
    f = f.sort_values(_KEY, kind="stable").reset_index(drop=True)
    # Earlier findings: FRAUD outcomes of any selection (legacy included) reported by the day.
    fr = off[(off.result == "FRAUD").to_numpy()]
    fr = fr.assign(_rep=_ts(fr.reported_date))
    fr = fr[fr._rep <= end]
    first_imp = fr.groupby(fr.importer_id.astype("str"))._rep.min()
    origin = customs[["declaration_id", "item_no", "origin_country"]].astype({"declaration_id": "str",
                                                                              "item_no": "int64"})
    fr = fr.astype({"declaration_id": "str", "item_no": "int64"}).merge(origin, on=["declaration_id", "item_no"],
                                                                        how="left")
    first_pair = fr.groupby(_pair(fr.hs_code, fr.origin_country))._rep.min()
    hit = f.fraud.to_numpy(dtype=bool)
    f["new_offender"] = hit & ~_known_before(first_imp, f.importer_id.astype("str"), f.declaration_date)
    # A declaration is a new pattern when any of its fraudulent items' HS6 x origin had no finding before.
    fi = o[o.fraud].merge(f[_KEY], on=_KEY)
    fi = fi.assign(_new=~_known_before(first_pair, _pair(fi.hs_code, fi.origin_country), fi.declaration_date))
    newp = fi.groupby(_KEY)._new.any().rename("_newp").reset_index()
    f["new_pattern"] = hit & f[_KEY].merge(newp, on=_KEY, how="left")._newp.fillna(False).to_numpy(bool)
    # New to customs: first declaration within the lookback, and the history long enough to tell.
    c = customs.assign(declaration_date=_ts(customs.declaration_date))
    first_seen = c.groupby(c.importer_id.astype("str")).declaration_date.min()
    since = f.declaration_date - pd.Timedelta(days=new_importer_days)
    seen = f.importer_id.astype("str").map(first_seen).astype("datetime64[us]")
    covered = (since >= c.declaration_date.min()).to_numpy(bool) if len(c) else np.zeros(len(f), bool)
    f["new_importer"] = hit & (seen >= since).to_numpy(bool) & covered
    f["unexpected"] = hit & (f.rule_hits.fillna("") == "").to_numpy() & (
        f.declaration_fraud_probability < f.exploitation_cut).to_numpy()
    return f[FIND_COLUMNS]


def table(f: pd.DataFrame, day: date, window_days: int) -> pd.DataFrame:
    """Per window of reported outcomes (``day``; the trailing ``window_days``) x selection reason (and ALL):
    inspected declarations, hits, hit rate with its 95% (Jeffreys) interval, its ratio to random's and to
    exploitation's with 95% (Katz) intervals, revenue, and the discoveries."""
    windows = {"day": day, f"{window_days}d": day - timedelta(days=window_days - 1)}
    rows = []
    for w, start in windows.items():
        x = f[(f.outcome_date >= pd.Timestamp(start)) & (f.outcome_date <= pd.Timestamp(day))]
        for reason in (*REASONS, ALL):
            y = x if reason == ALL else x[x.selection_reason == reason]
            n, k = len(y), int(y.fraud.sum())
            lo, hi = beta_interval(k, n, level=0.95)
            rows.append({"window": w, "period_start": start, "period_end": day, "selection_reason": reason,
                         "inspected": n, "hits": k, "hit_rate": _div(k, n), "hit_rate_low": lo, "hit_rate_high": hi,
                         "revenue_recovered_usd": round(float(y.revenue_recovered_usd[y.fraud].sum()), 2),
                         **{fl: int(y[fl].sum()) for fl in FLAGS}})
    t = pd.DataFrame(rows)
    for base in ("random", "exploitation"):
        ref = t[t.selection_reason == base].set_index("window")
        k2, n2 = t.window.map(ref.hits), t.window.map(ref.inspected)
        t[f"ratio_vs_{base}"] = _div(t.hit_rate, _div(k2, n2)).to_numpy()
        lo, hi = ratio_interval(t.hits, t.inspected, k2, n2)
        t[f"ratio_vs_{base}_low"], t[f"ratio_vs_{base}_high"] = lo.to_numpy(), hi.to_numpy()
    return t[TABLE_COLUMNS]


def headline(t: pd.DataFrame, window_days: int) -> dict:
    """Flat figures for the summary table: exploration today and over the window, discoveries today."""
    def row(w: str, reason: str) -> dict:
        r = t[(t.window == w) & (t.selection_reason == reason)]
        return r.iloc[0].to_dict() if len(r) else {}

    today, ex_day, ex_win = row("day", ALL), row("day", "exploration"), row(f"{window_days}d", "exploration")
    return {
        "exploration_inspected_today": int(ex_day.get("inspected", 0)),
        "exploration_hits_today": int(ex_day.get("hits", 0)),
        "exploration_inspected_window": int(ex_win.get("inspected", 0)),
        "exploration_hits_window": int(ex_win.get("hits", 0)),
        **{f"exploration_{k}_window{end}": ex_win.get(k + end, np.nan)
           for k in ("hit_rate", "ratio_vs_random", "ratio_vs_exploitation") for end in ("", "_low", "_high")},
        **{f"{fl}_today": int(today.get(fl, 0)) for fl in FLAGS},
    }


def as_json(t: pd.DataFrame, clean) -> dict:
    """The table as nested JSON: {window: {reason: {figure: value}}}; ``clean`` makes each value JSON-safe."""
    keep = [c for c in TABLE_COLUMNS if c not in ("window", "period_start", "period_end", "selection_reason")]
    out: dict = {}
    for r in t.to_dict("records"):
        w = out.setdefault(r["window"], {"period_start": clean(r["period_start"]),
                                         "period_end": clean(r["period_end"])})
        w[r["selection_reason"]] = {k: clean(r[k]) for k in keep}
    return out


def log_line(t: pd.DataFrame, day: date, window_days: int) -> str:
    """One line: exploration's outcomes and discoveries of the day, its hit rate over the window."""
    def r(w):
        x = t[(t.window == w) & (t.selection_reason == "exploration")]
        return x.iloc[0] if len(x) else None

    d, w = r("day"), r(f"{window_days}d")
    if d is None or w is None:
        return f"exploration {day}: nothing reported"

    def pct(v):
        return "n/a" if pd.isna(v) else f"{100 * v:.0f}%"

    def x(v):
        return "n/a" if pd.isna(v) else f"x{v:.2f}"

    plural = {"new_offender": ("new offender", "new offenders"), "new_importer": ("new importer", "new importers"),
              "new_pattern": ("new HS x origin", "new HS x origin"), "unexpected": ("unexpected", "unexpected")}
    disc = ", ".join(f"{int(d[fl])} {plural[fl][int(d[fl]) != 1]}" for fl in FLAGS)
    return (f"exploration {day}: {int(d.inspected)} selected with an outcome, {int(d.hits)} hits ({pct(d.hit_rate)}), "
            f"discoveries: {disc}; last {window_days} days: {int(w.inspected)} selected with an outcome, "
            f"hit rate {pct(w.hit_rate)} [{pct(w.hit_rate_low)}, {pct(w.hit_rate_high)}], "
            f"{x(w.ratio_vs_random)} random, {x(w.ratio_vs_exploitation)} exploitation")
