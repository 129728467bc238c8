"""Tax audit KPIs (issue 17 item 5; docs/kpi.md "Tax audits (monthly)"): yield per audit, hit rate and lift over
random audits, overall, by sector and by tax office, with 95% intervals.

The daily report of day D shows the latest monthly tax run published on or before D (its run date,
``tax.store.published_date``): the audits its outcomes table knew at the month's cutoff
(``gold/tax_audit_outcomes``), with each taxpayer's sector and tax office from the register as of that cutoff
(silver ``taxpayers``). So a report is a snapshot, as the other KPIs are: later runs never change it.

Per group of closed audits: **hit rate** = audits with result ASSESSED / closed audits (Jeffreys 95% interval,
``kpi_tables.beta_interval``); **yield** = (assessed tax + penalty) / closed audits, PEN (95% percentile
bootstrap over audits, ``backtest.stats.paired_ratio``); **lift** = the group's hit rate / the hit rate of the
RANDOM program's audits of the same sector or office (Katz 95% interval, ``kpi_tables.ratio_interval``).
Groups (``selection``): every audit (ALL), the legacy programs RANDOM and RULES, and the audits of taxpayers the
pipeline's list had picked by risk (``list_risk``) or at random (``list_random``) the month before the audit
opened: the audits themselves were chosen by the administration, so the list groups are the overlap.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.backtest.stats import paired_ratio
from sunat_pipeline.reporting.kpi_tables import ALL, _div, beta_interval, ratio_interval
from sunat_pipeline.settings import Settings

TITLE = "Tax audits (monthly)"
NO_DATA = "No tax audits landed yet: no monthly tax run has published audit outcomes by this day."
HIT = "ASSESSED"
RANDOM = "RANDOM"
SELECTIONS = (ALL, RANDOM, "RULES", "list_risk", "list_random")
DIMENSIONS = {"all": None, "sector": "sector", "tax_office": "tax_office"}
COLUMNS = {"month": "str", "published_date": "str", "period": "str", "dimension": "str", "value": "str",
           "selection": "str", "audits": "int64", "assessed": "int64", "hit_rate": "float64",
           "hit_rate_low": "float64", "hit_rate_high": "float64", "assessed_pen": "float64", "yield_pen": "float64",
           "yield_pen_low": "float64", "yield_pen_high": "float64", "random_audits": "int64",
           "lift_vs_random": "float64", "lift_vs_random_low": "float64", "lift_vs_random_high": "float64"}


def empty() -> pd.DataFrame:
    # Text columns as object: an empty one is written as a null column, which every hive reader agrees on.
    return pd.DataFrame({c: pd.Series(dtype=object if t == "str" else t) for c, t in COLUMNS.items()})


def _selections(a: pd.DataFrame) -> dict[str, pd.Series]:
    listed = a.listed_reason.astype(object) if "listed_reason" in a else pd.Series(None, index=a.index, dtype=object)
    return {ALL: pd.Series(True, index=a.index), RANDOM: a.program == RANDOM, "RULES": a.program == "RULES",
            "list_risk": listed == "risk", "list_random": listed == "random"}


def _rows(a: pd.DataFrame, seed: int) -> list[dict]:
    """One row per selection of the audits ``a`` (one sector, office or all)."""
    hit = (a.result == HIT).to_numpy()
    amount = (a.assessed_tax_pen.astype(float).fillna(0) + a.penalty_pen.astype(float).fillna(0)).to_numpy()
    rows = []
    for sel, mask in _selections(a).items():
        m = mask.to_numpy(bool)
        n, k = int(m.sum()), int(hit[m].sum())
        lo, hi = beta_interval(k, n, level=0.95)
        y = paired_ratio(amount[m], np.ones(n), seed=seed) if n else {"ratio": None, "ci95": [None, None]}
        rows.append({"selection": sel, "audits": n, "assessed": k, "hit_rate": _div(k, n), "hit_rate_low": lo,
                     "hit_rate_high": hi, "assessed_pen": round(float(amount[m].sum()), 2),
                     "yield_pen": y["ratio"], "yield_pen_low": y["ci95"][0], "yield_pen_high": y["ci95"][1]})
    return rows


def audit_kpis(audits: pd.DataFrame, register: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """The KPI rows (``COLUMNS`` less the snapshot's month, published date and period) of closed ``audits``
    (audit_id, taxpayer_id, program, result, assessed_tax_pen, penalty_pen; listed_reason optional), by
    sector and tax office from ``register`` (taxpayer_id, sector, tax_office; missing: UNKNOWN)."""
    cols = [c for c in COLUMNS if c not in ("month", "published_date", "period")]
    if audits is None or audits.empty:
        return empty()[cols]
    a = audits.reset_index(drop=True)
    reg = register if register is not None and len(register) else pd.DataFrame(
        columns=["taxpayer_id", "sector", "tax_office"])
    info = reg.drop_duplicates("taxpayer_id", keep="last").set_index("taxpayer_id")
    for c in ("sector", "tax_office"):
        a[c] = a.taxpayer_id.map(info[c]).fillna("UNKNOWN").astype(str)
    rows = []
    for dim, col in DIMENSIONS.items():
        groups = [(ALL, a)] if col is None else list(a.groupby(col, sort=True))
        for value, g in groups:
            rows += [{"dimension": dim, "value": str(value), **r} for r in _rows(g, seed)]
    t = pd.DataFrame(rows)
    ref = t[t.selection == RANDOM].set_index(["dimension", "value"])
    key = pd.MultiIndex.from_frame(t[["dimension", "value"]])
    k2, n2 = ref.assessed.reindex(key).to_numpy(), ref.audits.reindex(key).to_numpy()
    t["random_audits"] = n2
    t["lift_vs_random"] = _div(t.hit_rate, _div(pd.Series(k2), pd.Series(n2))).to_numpy()
    lo, hi = ratio_interval(t.assessed, t.audits, k2, n2)
    t["lift_vs_random_low"], t["lift_vs_random_high"] = lo.to_numpy(), hi.to_numpy()
    return t[cols].astype({c: COLUMNS[c] for c in cols})


def _register(settings: Settings, cut: date) -> pd.DataFrame:
    """Each taxpayer's latest register version landed and dated before the cutoff."""
    from sunat_pipeline import ingest

    reg = ingest.silver(settings, "taxpayers", upto=cut)
    if reg.empty:
        return reg
    reg = reg[pd.to_datetime(reg.status_date) < pd.Timestamp(cut)]
    return reg.sort_values(["taxpayer_id", "effective_date", "status_date"], kind="stable").drop_duplicates(
        "taxpayer_id", keep="last")


def compute(settings: Settings, day: date) -> pd.DataFrame:
    """The ``tax_audits`` KPI table of day ``day``'s report: the latest run published by then (module docstring),
    every audit it knew (``period`` all) and those closed in its month (``period`` = the month); empty if none."""
    from sunat_pipeline.tax import store

    months = [m for m in store.months(settings, store.OUTCOMES) if store.published_date(settings, m) <= day]
    audits = store.read(settings, store.OUTCOMES, months[-1]) if months else None
    if audits is None or audits.empty:
        return empty()
    month = months[-1]
    cut = (pd.Period(month, "M") + 1).start_time.date()
    reg = _register(settings, cut)
    closed = pd.to_datetime(audits.closed_date).dt.to_period("M").astype(str) == month
    parts = [audit_kpis(x, reg, settings.seed).assign(period=p) for p, x in (("all", audits), (month, audits[closed]))]
    t = pd.concat(parts, ignore_index=True).assign(month=month,
                                                   published_date=store.published_date(settings, month).isoformat())
    return t[list(COLUMNS)].astype(COLUMNS)


def overview(t: pd.DataFrame) -> dict:
    """The section's headline: the snapshot's month and publication, audits known and closed in the month."""
    if t.empty:
        return {}
    r = t[(t.dimension == "all") & (t.selection == ALL)].set_index("period").audits
    month = str(t.month.iloc[0])
    return {"month": month, "published_date": str(t.published_date.iloc[0]), "audits": int(r.get("all", 0)),
            "closed_in_month": int(r.get(month, 0))}


def view(t: pd.DataFrame, dimension: str, pct, fmt, period: str = "all") -> pd.DataFrame:
    """The table for people, one row per value of ``dimension`` (selections side by side): audits, hit rate and
    yield with their intervals, the random audits' hit rate, and the lifts of RULES and the list's risk picks.
    ``pct`` and ``fmt`` format a rate and a number ("n/a" for a missing one)."""
    x = t[(t.dimension == dimension) & (t.period == period)]
    if x.empty:
        return pd.DataFrame()

    def cell(r, col, f, digits=None) -> str:
        g = (lambda v: f(v, digits)) if digits is not None else f
        v, lo, hi = r[col], r[f"{col}_low"], r[f"{col}_high"]
        return "" if pd.isna(v) and pd.isna(lo) else f"{g(v)} [{g(lo)}, {g(hi)}]"

    by = {s: x[x.selection == s].set_index("value") for s in SELECTIONS}
    rows = []
    for value, r in by[ALL].iterrows():
        row = {dimension.replace("_", " "): value, "closed audits": int(r.audits), "assessed": int(r.assessed),
               "hit rate [95%]": cell(r, "hit_rate", pct), "yield per audit, PEN [95%]": cell(r, "yield_pen", fmt, 0)}
        rnd = by[RANDOM].loc[value]
        row["random audits: hit rate"] = f"{pct(rnd.hit_rate)} of {int(rnd.audits)}" if rnd.audits else "none"
        for sel, name in (("RULES", "RULES"), ("list_risk", "list risk picks")):
            s = by[sel].loc[value]
            row[f"{name}: audits"] = int(s.audits)
            row[f"{name}: lift vs random [95%]"] = cell(s, "lift_vs_random", fmt, 2)
        rows.append(row)
    return pd.DataFrame(rows)
