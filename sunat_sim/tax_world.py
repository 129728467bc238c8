"""The tax side of the world: monthly IGV returns, annual income tax returns, e-invoice aggregates per
seller-buyer pair and month, the taxpayer register, and a legacy audit policy's outcomes (``tax_audit``).

True activity comes first (sales, purchases from e-invoicing suppliers, imports from the customs world,
purchases from informal suppliers); declared returns then depart from it through each evader's mechanisms,
on top of the noise honest returns carry (timing differences, missed and late filings, address problems).
Every extract lands monthly, on the first day of the month after its rows became known, so a monthly run
sees only what had landed (docs/tax.md). The truth (who evades, how, how much) goes to ``world_truth`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.lake.store import write_parquet_atomic
from sunat_pipeline.settings import TaxSettings
from sunat_sim.config import S_TAX_FILING, S_TAX_MONTHS, WorldConfig, rng
from sunat_sim.tax_audit import AUDIT_COLUMNS, legacy_audits
from sunat_sim.tax_people import (
    ghost_links,
    has,
    import_matrix,
    make_taxpayers,
    supplier_links,
    tax_months,
)

TAX_SOURCES = ("taxpayers", "igv_returns", "income_returns", "einvoices", "tax_audits")
REGISTER_COLUMNS = ["taxpayer_id", "sector", "tax_regime", "region", "tax_office", "status", "domicile_condition",
                    "registered_date", "status_date"]
IGV_COLUMNS = ["taxpayer_id", "period", "filing_date", "sales_pen", "purchases_pen", "igv_debit_pen",
               "igv_credit_pen", "credit_carried_forward_pen", "igv_payable_pen"]
INCOME_COLUMNS = ["taxpayer_id", "fiscal_year", "filing_date", "revenue_pen", "cost_of_sales_pen", "deductions_pen",
                  "taxable_profit_pen", "income_tax_pen"]
EINVOICE_COLUMNS = ["seller_id", "buyer_id", "period", "invoices", "taxable_amount_pen", "igv_pen"]
LEGACY_TAX_COLUMNS = ["taxpayer_id", "period", "filing_date", "sales_pen", "purchases_pen", "igv_debit_pen",
                      "igv_credit_pen"]  # the customs-facing ``tax`` extract (importers' returns)


def vat_rate() -> float:
    """IGV on domestic sales: the same rates as at import (IGV plus IPM), from the product's settings."""
    t = TaxSettings()
    return t.igv_rate + t.ipm_rate


@dataclass
class TaxWorld:
    months: pd.PeriodIndex
    taxpayers: pd.DataFrame  # population and evasion truth
    register: pd.DataFrame  # register versions (REGISTER_COLUMNS), one per change
    igv: pd.DataFrame  # filed returns (IGV_COLUMNS)
    income: pd.DataFrame  # filed annual returns (INCOME_COLUMNS)
    einvoices: pd.DataFrame  # EINVOICE_COLUMNS + fake (truth)
    audits: pd.DataFrame  # AUDIT_COLUMNS + truth columns
    monthly_truth: pd.DataFrame  # per taxpayer and month: true and declared amounts, evaded IGV
    income_truth: pd.DataFrame


def simulate_tax(cfg: WorldConfig, importers: pd.DataFrame, items: pd.DataFrame, fx: pd.DataFrame,
                 taken: set) -> TaxWorld:
    k = cfg.k["tax"]
    months = tax_months(cfg)
    nm = len(months)
    imports = import_matrix(items, importers.importer_id.tolist(), months, fx)
    tp = make_taxpayers(cfg, importers, imports, set(taken), months)
    n = len(tp)
    r = rng(cfg.seed, S_TAX_MONTHS)
    I = np.zeros((n, nm))  # noqa: E741 - imports, as in the returns' notation
    I[: len(importers)] = imports
    m_idx = np.arange(nm)
    active = (m_idx >= tp.first_m.to_numpy()[:, None]) & (m_idx <= tp.last_m.to_numpy()[:, None])
    season = np.array(cfg.k["volume"]["month_of_year"])[months.month - 1]
    s0 = tp.scale.to_numpy()[:, None] * season / season.mean() * np.exp(r.normal(0, k["monthly_sigma"], (n, nm)))
    s0 *= active
    margin = tp.margin.to_numpy()[:, None]
    target = s0 * (1 - margin) * np.exp(r.normal(0, 0.08, (n, nm)))
    informal = target * r.uniform(*k["informal_purchases"], n)[:, None] * np.exp(r.normal(0, 0.2, (n, nm)))
    need = np.maximum(target - I - informal, 0)  # what the firm buys from e-invoicing suppliers

    mean_need = need.sum(1) / np.maximum(active.sum(1), 1)
    links = supplier_links(tp, k, r, mean_need)
    b, s = links.buyer.to_numpy(), links.seller.to_numpy()
    # A pair's month follows the buyer's needs that month; a seller not trading that month sells nothing.
    month_f = need[b] / np.maximum(mean_need[b], 1e-9)[:, None]
    amt = links.base.to_numpy()[:, None] * month_f * np.exp(r.normal(0, 0.2, (len(links), nm))) * active[s]
    glinks = ghost_links(tp, r)
    gb, gs = glinks.buyer.to_numpy(), glinks.seller.to_numpy()
    inten = tp.intensity.to_numpy()
    b2c = s0 * (1 - tp.b2b.to_numpy()[:, None])
    sold = np.zeros((n, nm))
    np.add.at(sold, s, amt)
    sales = b2c + sold
    fake = sales[gb] * inten[gb, None] * r.uniform(0.15, 0.4, (len(glinks), 1)) * active[gs] * active[gb]
    bought = np.zeros((n, nm))
    np.add.at(bought, b, amt)
    faked = np.zeros((n, nm))
    np.add.at(faked, gb, fake)
    ghost_sold = np.zeros((n, nm))
    np.add.at(ghost_sold, gs, fake)
    purchases = I + informal + bought

    # Declared: honest timing noise, then each mechanism.
    t = k["timing_sigma"]
    ds = sales * (1 + r.normal(0, t, (n, nm)))
    dp = purchases * (1 + r.normal(0, t, (n, nm)))
    u = np.clip(inten * r.uniform(0.4, 1.0, n), 0, 0.9)[:, None] * r.uniform(0.7, 1.3, (n, nm))
    ds = np.where(has(tp, "underreported_sales")[:, None], ds * (1 - np.clip(u, 0, 0.92)), ds)
    unbacked = sales * inten[:, None] * r.uniform(0.3, 0.7, (n, 1)) * r.uniform(0.6, 1.4, (n, nm))
    dp = dp + faked + np.where((tp.fict_variant == "unbacked").to_numpy()[:, None], unbacked, 0)
    hide = has(tp, "unrecorded_imports")[:, None] * np.clip(inten * r.uniform(0.6, 1.2, n), 0, 0.95)[:, None]
    dp = dp - hide * I
    ds = np.maximum(ds - hide * I / (1 - margin), 0)
    ghost = (tp.kind == "ghost").to_numpy()
    ds[ghost] = ghost_sold[ghost] * r.uniform(0, 0.1, (ghost.sum(), 1))
    dp[ghost] = ds[ghost] * r.uniform(0.8, 1.1, (ghost.sum(), 1))
    nonfile = has(tp, "non_filing")
    ds = np.where(nonfile[:, None], ds * (1 - 0.5 * inten[:, None]), ds)
    ds, dp = np.maximum(ds, 0).round(2), np.maximum(dp, 0).round(2)

    rf = rng(cfg.seed, S_TAX_FILING)
    miss = np.array([k["honest_missed_filing"].get(x, 0.02) for x in tp["size"]])[:, None]
    miss = np.where(nonfile[:, None], 0.1 + 0.5 * inten[:, None], miss)
    miss = np.where(ghost[:, None], 0.5, miss)
    filed = active & (rf.random((n, nm)) >= miss)
    rate = vat_rate()
    debit, credit = (ds * rate).round(2), (dp * rate).round(2)
    carried = np.zeros((n, nm))
    payable = np.zeros((n, nm))
    prev = np.zeros(n)
    for m in range(nm):
        f = filed[:, m]
        net = debit[:, m] - credit[:, m] - prev
        payable[:, m] = np.where(f, np.maximum(net, 0), 0)
        prev = np.where(f, np.maximum(-net, 0), prev)
        carried[:, m] = prev
    due = _due_dates(tp, months, rf, tp.evader.to_numpy(), k["late_filing"])
    ii, mm = np.nonzero(filed)
    igv = pd.DataFrame({
        "taxpayer_id": tp.taxpayer_id.to_numpy()[ii], "period": months.astype(str)[mm],
        "filing_date": due[ii, mm], "sales_pen": ds[ii, mm], "purchases_pen": dp[ii, mm],
        "igv_debit_pen": debit[ii, mm], "igv_credit_pen": credit[ii, mm],
        "credit_carried_forward_pen": carried[ii, mm].round(2), "igv_payable_pen": payable[ii, mm].round(2),
    })
    true_net = np.maximum((sales - purchases) * rate, 0)
    evaded = np.where(tp.evader.to_numpy()[:, None] & active,
                      np.maximum(true_net - np.where(filed, payable, 0), 0), 0)
    ai, am = np.nonzero(active)
    monthly_truth = pd.DataFrame({
        "taxpayer_id": tp.taxpayer_id.to_numpy()[ai], "period": months.astype(str)[am],
        "true_sales_pen": sales[ai, am].round(2), "true_purchases_pen": purchases[ai, am].round(2),
        "imports_pen": I[ai, am].round(2), "invoiced_sales_pen": (sold + ghost_sold)[ai, am].round(2),
        "invoiced_purchases_pen": (bought + faked)[ai, am].round(2), "declared_sales_pen": ds[ai, am],
        "declared_purchases_pen": dp[ai, am], "filed": filed[ai, am], "evaded_igv_pen": evaded[ai, am].round(2),
    })
    einv = _einvoices(tp, months, links, amt, glinks, fake, rate, r)
    income, income_truth = _income(cfg, tp, months, sales, purchases, ds, dp, active, rf)
    audits = legacy_audits(cfg, tp, months, igv, monthly_truth, income_truth)
    return TaxWorld(months, tp, _register(tp, months), igv, income, einv, audits, monthly_truth, income_truth)


def _due_dates(tp: pd.DataFrame, months: pd.PeriodIndex, r: np.random.Generator, evader: np.ndarray,
               late: dict) -> np.ndarray:
    """Filing dates: the schedule gives each last digit of the tax id its due day in the next month; most
    file in the days before it, some late (evaders more often)."""
    n, nm = len(tp), len(months)
    nxt = np.array([(p + 1).start_time.to_datetime64() for p in months], dtype="datetime64[D]")
    digit = tp.taxpayer_id.str[-1].astype(int).to_numpy()
    due = nxt[None, :] + (11 + digit)[:, None]
    p_late = np.where(evader, late["evader"], late["honest"])[:, None]
    offset = np.where(r.random((n, nm)) < p_late, 1 + r.geometric(1 / 20, (n, nm)), -r.integers(0, 9, (n, nm)))
    return (due + offset).astype("datetime64[D]").astype(object)


def _einvoices(tp, months, links, amt, glinks, fake, rate, r) -> pd.DataFrame:
    ids = tp.taxpayer_id.to_numpy()
    parts = []
    for lk, a, is_fake in ((links, amt, False), (glinks, fake, True)):
        li, mi = np.nonzero(a > 0.5)
        if not len(li):
            continue
        v = a[li, mi].round(2)
        ticket = np.exp(r.normal(np.log(4000), 0.9, len(li)))
        parts.append(pd.DataFrame({
            "seller_id": ids[lk.seller.to_numpy()[li]], "buyer_id": ids[lk.buyer.to_numpy()[li]],
            "period": months.astype(str)[mi], "invoices": np.maximum(1, np.round(v / ticket)).astype(int),
            "taxable_amount_pen": v, "igv_pen": (v * rate).round(2), "fake": is_fake}))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*EINVOICE_COLUMNS, "fake"])
    # A pair with real and fake invoices in a month is one aggregate (what the seller reported).
    agg = out.groupby(["seller_id", "buyer_id", "period"], as_index=False, sort=True).agg(
        invoices=("invoices", "sum"), taxable_amount_pen=("taxable_amount_pen", "sum"), igv_pen=("igv_pen", "sum"),
        fake=("fake", "any"))
    return agg.round({"taxable_amount_pen": 2, "igv_pen": 2})


def _income(cfg, tp, months, sales, purchases, ds, dp, active, r):
    """Annual returns for each calendar year wholly simulated, filed in March-April of the next year."""
    k = cfg.k["tax"]
    rate = k["income_tax_rate"]
    inten = tp.intensity.to_numpy()
    rows, truth = [], []
    for year in sorted(set(months.year)):
        sel = np.flatnonzero(months.year == year)
        if len(sel) < 12:
            continue
        on = active[:, sel].any(1)
        rev_t = sales[:, sel].sum(1)
        cost_t = purchases[:, sel].sum(1) * (1 + r.normal(0, 0.03, len(tp)))
        ded_t = rev_t * tp.deduction_ratio.to_numpy() * np.exp(r.normal(0, 0.3, len(tp)))
        rev = ds[:, sel].sum(1) * (1 + r.normal(0, 0.01, len(tp)))
        cost = dp[:, sel].sum(1) * (1 + r.normal(0, 0.03, len(tp)))
        cost *= 1 + has(tp, "low_margin") * inten * r.uniform(0.3, 0.9, len(tp))
        ded = ded_t * (1 + has(tp, "excess_deductions") * inten * r.uniform(1.5, 4.0, len(tp)))
        profit = rev - cost - ded
        skip = np.where(has(tp, "non_filing"), 0.4 + 0.4 * inten, 0.03)
        skip = np.where((tp.kind == "ghost").to_numpy(), 0.8, skip)
        filed = on & (r.random(len(tp)) >= skip)
        digit = tp.taxpayer_id.str[-1].astype(int).to_numpy()
        fdate = np.datetime64(f"{year + 1}-03-20") + digit + r.integers(-6, 10, len(tp))
        for i in np.flatnonzero(filed):
            rows.append((tp.taxpayer_id.iat[i], int(year), fdate[i].astype(object), round(rev[i], 2),
                         round(cost[i], 2), round(ded[i], 2), round(profit[i], 2), round(max(profit[i], 0) * rate, 2)))
        true_tax = np.maximum(rev_t - cost_t - ded_t, 0) * rate
        decl_tax = np.where(filed, np.maximum(profit, 0) * rate, 0)
        for i in np.flatnonzero(on):
            truth.append((tp.taxpayer_id.iat[i], int(year), round(rev_t[i], 2), round(true_tax[i], 2),
                          round(float(max(true_tax[i] - decl_tax[i], 0) if tp.evader.iat[i] else 0.0), 2)))
    return (pd.DataFrame(rows, columns=INCOME_COLUMNS),
            pd.DataFrame(truth, columns=["taxpayer_id", "fiscal_year", "true_revenue_pen", "true_income_tax_pen",
                                         "evaded_income_tax_pen"]))


def _register(tp: pd.DataFrame, months: pd.PeriodIndex) -> pd.DataFrame:
    """Register versions: the state at registration, then one version per change (address not located,
    deregistration or suspension), each dated when it happened."""
    base = tp[["taxpayer_id", "sector", "tax_regime", "region", "tax_office", "registered_date"]]
    out = [base.assign(status="ACTIVE", domicile_condition="LOCATED", status_date=tp.registered_date)]
    nl = tp.not_located_m >= 0
    when = [months[m].start_time.date() + timedelta(days=int(d)) for m, d in
            zip(tp.not_located_m[nl], tp.taxpayer_id[nl].str[-2:].astype(int) % 27, strict=True)]
    out.append(base[nl].assign(status="ACTIVE", domicile_condition="NOT_LOCATED", status_date=when))
    gone = tp.closed.to_numpy()
    end = [(months[m] + 1).start_time.date() + timedelta(days=int(d)) for m, d in
           zip(tp.last_m[gone], tp.taxpayer_id[gone].str[-2:].astype(int) % 20, strict=True)]
    status = np.where(tp.kind[gone] == "ghost", "SUSPENDED", "DEREGISTERED")
    out.append(base[gone].assign(status=status, domicile_condition=np.where(nl[gone], "NOT_LOCATED", "LOCATED"),
                                 status_date=end))
    reg = pd.concat(out, ignore_index=True)
    reg["registered_date"] = pd.to_datetime(reg.registered_date).dt.date
    reg["status_date"] = pd.to_datetime(reg.status_date).dt.date
    return reg.sort_values(["status_date", "taxpayer_id"], kind="stable")[REGISTER_COLUMNS].reset_index(drop=True)


def landing_date(d) -> date:
    """Monthly extracts land on the first day of the month after their rows became known."""
    p = pd.Period(pd.Timestamp(d), "M") + 1
    return p.start_time.date()


def extracts(tw: TaxWorld, last_day: date) -> dict[str, list[tuple[date, str, pd.DataFrame]]]:
    """Each tax source's monthly files (landing date, tag, rows), up to the world's last day. The register's
    first file (dated the first simulated month, tagged ``history``: a bulk extract) holds every taxpayer
    registered before it."""
    first = tw.months[0].start_time.date()
    reg = tw.register
    def when(col: pd.Series, f=landing_date) -> pd.Series:  # per distinct value: a row-wise map is slow
        return col.map({v: f(v) for v in col.unique()})

    by = {
        "taxpayers": reg.assign(_d=when(reg.status_date, lambda d: landing_date(d) if d >= first else first)),
        "igv_returns": tw.igv.assign(_d=when(tw.igv.filing_date)),
        "income_returns": tw.income.assign(_d=when(tw.income.filing_date)),
        "einvoices": tw.einvoices[EINVOICE_COLUMNS].assign(
            _d=when(tw.einvoices.period, lambda p: landing_date(pd.Period(p, "M").start_time))),
        "tax_audits": tw.audits[AUDIT_COLUMNS].assign(_d=when(tw.audits.closed_date)),
    }
    out = {}
    for source, df in by.items():
        files = []
        for d, g in df[df._d <= last_day].groupby("_d", sort=True):
            g = g.drop(columns="_d")
            if source == "taxpayers":  # two changes in one month: the file holds the latest state
                g = g.drop_duplicates("taxpayer_id", keep="last")
            tag = "history" if source == "taxpayers" and d == first else ""
            files.append((d, tag, g.reset_index(drop=True)))
        out[source] = files
    return out


def customs_view(tw: TaxWorld, cfg: WorldConfig) -> pd.DataFrame:
    """The customs-facing ``tax`` extract: importers' IGV returns for the months of the customs world."""
    imp = tw.taxpayers.taxpayer_id[tw.taxpayers.kind == "importer"]
    first = str(pd.Period(cfg.start_date, "M"))
    g = tw.igv[tw.igv.taxpayer_id.isin(imp) & (tw.igv.period >= first)]
    return g[LEGACY_TAX_COLUMNS].reset_index(drop=True)


def write_tax_truth(tw: TaxWorld, tdir: Path) -> None:
    tp = tw.taxpayers[["taxpayer_id", "kind", "sector", "size", "region", "evader", "mechanisms", "intensity",
                       "fict_variant", "margin", "scale", "first_m", "last_m"]]
    write_parquet_atomic(tp.reset_index(drop=True), tdir / "tax_taxpayers.parquet")
    write_parquet_atomic(tw.monthly_truth, tdir / "tax_monthly.parquet")
    write_parquet_atomic(tw.income_truth, tdir / "tax_income.parquet")
    write_parquet_atomic(tw.einvoices[["seller_id", "buyer_id", "period", "fake"]], tdir / "tax_einvoices.parquet")
    write_parquet_atomic(tw.audits.reset_index(drop=True), tdir / "tax_audits.parquet")
