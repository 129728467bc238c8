"""The legacy tax audit policy: each month it opens audits on taxpayers its rules flag (declared margin far
below the sector's, missed filings, a past assessment, size) plus a random share, within its capacity; each
audit examines the last months' returns and closes months later with what it found. Detection is imperfect
and depends on the mechanism; honest taxpayers are sometimes assessed a small technical adjustment. Like the
customs history, these outcomes are labels biased by the policy that chose whom to look at.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from sunat_sim.config import S_TAX_AUDIT, WorldConfig, rng

AUDIT_COLUMNS = ["audit_id", "taxpayer_id", "program", "period_from", "period_to", "opened_date", "closed_date",
                 "result", "assessed_tax_pen", "penalty_pen"]
RESULTS = ("ASSESSED", "NO_FINDINGS", "NOT_LOCATED")
WINDOW = 6  # months of returns the rules read


def _observed(igv: pd.DataFrame, months: pd.PeriodIndex, m: int, opened) -> pd.DataFrame:
    """What the administration knew when it selected: returns of the last ``WINDOW`` months filed by then."""
    per = [str(p) for p in months[max(0, m - WINDOW):m]]
    g = igv[igv.period.isin(per) & (igv.filing_date < opened)]
    return g.groupby("taxpayer_id").agg(filed=("period", "size"), sales=("sales_pen", "sum"),
                                        purchases=("purchases_pen", "sum"))


def legacy_audits(cfg: WorldConfig, tp: pd.DataFrame, months: pd.PeriodIndex, igv: pd.DataFrame,
                  monthly: pd.DataFrame, income_truth: pd.DataFrame) -> pd.DataFrame:
    a = cfg.k["tax"]["audit"]
    r = rng(cfg.seed, S_TAX_AUDIT)
    ids = tp.taxpayer_id.to_numpy()
    sector = pd.Series(tp.sector.to_numpy(), index=ids)
    mechs = pd.Series(tp.mechanisms.to_numpy(), index=ids)
    evader = pd.Series(tp.evader.to_numpy(), index=ids)
    nl_month = pd.Series(tp.not_located_m.to_numpy(), index=ids)
    first_m, last_m = pd.Series(tp.first_m.to_numpy(), index=ids), pd.Series(tp.last_m.to_numpy(), index=ids)
    evaded = monthly.pivot_table(index="taxpayer_id", columns="period", values="evaded_igv_pen", aggfunc="sum",
                                 fill_value=0.0)
    debit = igv.pivot_table(index="taxpayer_id", columns="period", values="igv_debit_pen", aggfunc="sum",
                            fill_value=0.0)
    income_of: dict[str, list[tuple[int, float]]] = {}  # evaded income tax per fiscal year
    for x, y, v in zip(income_truth.taxpayer_id, income_truth.fiscal_year, income_truth.evaded_income_tax_pen,
                       strict=True):
        income_of.setdefault(x, []).append((int(y), float(v)))
    last_audit: dict[str, int] = {}
    watch: list[tuple[str, pd.Timestamp]] = []  # (taxpayer, reported) of assessments
    rows = []
    for m in range(WINDOW, len(months)):
        opened = months[m].start_time
        obs = _observed(igv, months, m, opened.date())
        known = (first_m <= m - WINDOW) & (last_m >= m)
        cand = known[known].index
        cand = cand[[m - last_audit.get(x, -99) >= a["cooldown_months"] for x in cand]]
        if not len(cand):
            continue
        o = obs.reindex(cand).fillna({"filed": 0, "sales": 0.0, "purchases": 0.0})
        margin = np.where(o.sales > 0, 1 - o.purchases / o.sales.where(o.sales > 0), 0.0)
        med = pd.Series(margin, index=cand).groupby(sector.reindex(cand).to_numpy()).transform("median")
        low = np.clip((med.to_numpy() - margin) / 0.1, -2, 4)
        missed = WINDOW - o.filed.to_numpy()
        watched = {x for x, rep in watch if rep < opened}
        score = (low + 0.8 * missed + 1.5 * np.isin(cand, list(watched)) + 0.3 * np.log10(o.sales.to_numpy() + 1)
                 + r.normal(0, 1.0, len(cand)))
        cap = max(1, int(round(a["share_per_month"] * len(cand))))
        n_rand = int(round(a["random_share"] * cap))
        top = list(cand[np.argsort(-score, kind="stable")[: cap - n_rand]])
        rest = np.setdiff1d(cand, top)
        rand = list(r.choice(rest, min(n_rand, len(rest)), replace=False)) if len(rest) else []
        covered = [str(p) for p in months[max(0, m - a["months_covered"]):m]]
        for seq, (x, prog) in enumerate([(t, "RULES") for t in top] + [(t, "RANDOM") for t in rand]):
            last_audit[x] = m
            day = opened + timedelta(days=int(r.integers(0, 20)))
            closed = day + timedelta(days=int(r.integers(a["delay_days"][0], a["delay_days"][1] + 1)))
            ev = float(evaded.loc[x, evaded.columns.intersection(covered)].sum()) if x in evaded.index else 0.0
            ev += sum(v for y, v in income_of.get(x, ()) if str(y) in {c[:4] for c in covered} and y < day.year)
            base = float(debit.loc[x, debit.columns.intersection(covered)].sum()) if x in debit.index else 0.0
            found = 0.0
            if 0 <= nl_month[x] <= m:
                result = "NOT_LOCATED"
            else:
                if evader[x] and ev > 0:
                    p = max(a["detection"].get(k, 0.5) for k in mechs[x].split(","))
                    if r.random() < min(p * r.uniform(0.75, 1.1), 0.95):
                        found = ev * r.uniform(*a["recovery"])
                if found == 0 and r.random() < a["honest_adjustment"]:
                    found = base * r.uniform(0.005, 0.03)
                result = "ASSESSED" if found > 0 else "NO_FINDINGS"
            if result == "ASSESSED":
                watch.append((x, pd.Timestamp(closed)))
            rows.append({
                "audit_id": f"AUD-{months[m].year}{months[m].month:02d}-{seq:04d}", "taxpayer_id": x,
                "program": prog, "period_from": covered[0], "period_to": covered[-1], "opened_date": day.date(),
                "closed_date": closed.date(), "result": result, "assessed_tax_pen": round(found, 2),
                "penalty_pen": round(found * a["penalty_rate"], 2),
                "evader": bool(evader[x]), "mechanisms": mechs[x], "true_evaded_pen": round(ev, 2),
            })
    cols = [*AUDIT_COLUMNS, "evader", "mechanisms", "true_evaded_pen"]
    return pd.DataFrame(rows, columns=cols)
