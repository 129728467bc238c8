"""Taxpayer-month features, point in time (inputs.py): a taxpayer's returns against the e-invoices it issued
and received, its customs imports and the IGV paid on them, its margins and deductions against its sector and
its own history, its filing behaviour, its suppliers, and its customs record (docs/tax.md).

The window is the ``window_months`` return periods ending the month before the processed one (the processed
month's returns are filed after the cutoff); the previous window of the same length is the taxpayer's own
history. Sector medians are taken over the month's population. Every feature has a direction: the side where
a high value looks like evasion (``SUSPICIOUS``), which the reasons and the anomaly score read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.settings import Settings
from sunat_pipeline.tax.inputs import TaxInputs

ID = "taxpayer_id"
INFO = ["sector", "region", "tax_office", "status", "domicile_condition", "eligible"]
SMOOTH = 1000.0  # PEN added to both sides of an amount ratio: a small firm's few soles say little
GHOST_GAP = np.log(2.0)  # a seller that invoiced more than twice the sales it declared looks like a ghost
NEW_SUPPLIER_MONTHS = 12  # a supplier registered this recently before the cutoff is new
INCOME_SEASON_END = 5  # annual returns of year Y are due by April of Y+1: from May 1 a missing one counts


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    suspicious: int  # +1: a high value looks like evasion; -1: a low one; 0: context only


FEATURES = [
    Feature("log_sales", "log of the average monthly sales declared in the window", 0),
    Feature("invoiced_over_declared_sales", "log ratio of e-invoices issued to declared sales (months filed)", 1),
    Feature("unbacked_purchases_share", "share of declared purchases backed by no e-invoice received nor "
            "customs import (months filed)", 1),
    Feature("ghost_purchase_share", "share of invoiced purchases from suppliers that look like ghosts "
            "(invoiced over twice their declared sales, suspended, deregistered or not located)", 1),
    Feature("supplier_gap", "purchase-weighted log ratio of the suppliers' invoiced to declared sales", 1),
    Feature("new_supplier_share", "share of invoiced purchases from suppliers registered in the last 12 months", 1),
    Feature("imports_over_purchases", "customs imports (CIF, PEN) over declared purchases", 0),
    Feature("unbooked_imports_share", "share of customs imports and invoices received missing from declared "
            "purchases (importers)", 1),
    Feature("credit_over_supported_igv", "log ratio of the IGV credit claimed to the IGV on invoices received "
            "plus the IGV paid at import", 1),
    Feature("import_igv_over_credit", "IGV paid at import over the IGV credit claimed (importers)", 1),
    Feature("margin", "declared gross margin of the window (1 - purchases / sales)", -1),
    Feature("margin_vs_sector", "declared margin minus the sector's median", -1),
    Feature("margin_vs_own_history", "declared margin minus the taxpayer's own in the previous window", -1),
    Feature("payable_share", "IGV paid over IGV debit in the window", -1),
    Feature("carried_credit_months", "credit carried forward, in months of average IGV debit", 1),
    Feature("income_margin_vs_sector", "gross margin of the latest annual return minus the sector's median", -1),
    Feature("deductions_vs_sector", "log ratio of deductions / revenue to the sector's median", 1),
    Feature("income_return_missing", "no annual return for the last fiscal year (after its season)", 1),
    Feature("missed_share", "share of the window's periods without a return filed by the cutoff", 1),
    Feature("late_share", "share of the window's returns filed after the due day", 1),
    Feature("months_registered", "months since registration", -1),
    Feature("log_suppliers", "log of 1 + e-invoicing suppliers in the window", 0),
    Feature("log_customers", "log of 1 + e-invoiced customers in the window", 0),
    Feature("customs_offences", "customs offences (declarations) reported before the cutoff", 1),
    Feature("customs_offence_rate", "customs offences per inspection (smoothed) before the cutoff", 1),
    Feature("customs_risk", "mean customs fraud probability of its items scored before the cutoff", 1),
]
NAMES = [f.name for f in FEATURES]
SUSPICIOUS = {f.name: f.suspicious for f in FEATURES}
DESCRIPTIONS = {f.name: f.description for f in FEATURES}


def _periods(month: pd.Period, n: int, skip: int = 0) -> list[str]:
    """The ``n`` periods ending ``1 + skip`` months before ``month``, oldest first."""
    end = month - 1 - skip
    return [str(end - i) for i in range(n - 1, -1, -1)]


def _sum(df: pd.DataFrame, key: str, col: str, name: str) -> pd.Series:
    return df.groupby(key)[col].sum().rename(name) if len(df) else pd.Series(dtype=float, name=name)


def _log_ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    return np.log((a.fillna(0) + SMOOTH) / (b.fillna(0) + SMOOTH))


def build(settings: Settings, inp: TaxInputs) -> pd.DataFrame:
    """One row per registered taxpayer not deregistered: ``taxpayer_id``, ``INFO`` and ``NAMES``."""
    ta = settings.tax_audit
    rate = settings.tax.igv_rate + settings.tax.ipm_rate
    win = _periods(inp.month, ta.window_months)
    prev = _periods(inp.month, ta.window_months, skip=ta.window_months)
    reg = inp.register
    if reg.empty:
        return pd.DataFrame(columns=[ID, *INFO, *NAMES])
    reg = reg[reg.status != "DEREGISTERED"].set_index(ID)
    out = pd.DataFrame(index=reg.index)
    for c in INFO[:-1]:
        out[c] = reg[c].astype(str)
    registered = pd.to_datetime(reg.registered_date)
    out["eligible"] = (reg.status == "ACTIVE") & (reg.domicile_condition == "LOCATED")

    r = inp.returns
    rw = r[r.period.astype(str).isin(win)] if len(r) else r
    rp = r[r.period.astype(str).isin(prev)] if len(r) else r
    n_filed = rw.groupby(ID).size().reindex(out.index).fillna(0) if len(rw) else pd.Series(0.0, index=out.index)
    sales = _sum(rw, ID, "sales_pen", "s").reindex(out.index)
    purch = _sum(rw, ID, "purchases_pen", "p").reindex(out.index)
    debit = _sum(rw, ID, "igv_debit_pen", "d").reindex(out.index)
    credit = _sum(rw, ID, "igv_credit_pen", "c").reindex(out.index)
    payable = _sum(rw, ID, "igv_payable_pen", "y").reindex(out.index)
    out["log_sales"] = np.log1p(sales.fillna(0) / n_filed.clip(lower=1))

    # E-invoices of the window, matched to the months the taxpayer filed (a missed month is missed_share's).
    inv = inp.einvoices
    inv = inv[inv.period.astype(str).isin(win)] if len(inv) else inv
    filed_keys = set(zip(rw[ID], rw.period.astype(str), strict=True)) if len(rw) else set()
    if len(inv):
        inv = inv.assign(period=inv.period.astype(str), taxable_amount_pen=inv.taxable_amount_pen.astype(float))
        s_filed = [(s, p) in filed_keys for s, p in zip(inv.seller_id, inv.period, strict=True)]
        b_filed = [(b, p) in filed_keys for b, p in zip(inv.buyer_id, inv.period, strict=True)]
        sold = _sum(inv[s_filed], "seller_id", "taxable_amount_pen", "sold").reindex(out.index)
        bought = _sum(inv[b_filed], "buyer_id", "taxable_amount_pen", "bought").reindex(out.index)
    else:
        sold = bought = pd.Series(np.nan, index=out.index)
    # An importer: any customs declaration before the cutoff (its window may hold none).
    is_importer = out.index.isin(inp.imports.importer_id.unique()) if len(inp.imports) else np.zeros(len(out), bool)
    imp = inp.imports
    imp = imp[imp.period.isin(win)] if len(imp) else imp
    if len(imp):
        imp_keys = [(i, p) in filed_keys for i, p in zip(imp.importer_id, imp.period, strict=True)]
        cif = _sum(imp[imp_keys], "importer_id", "cif_pen", "cif").reindex(out.index)
        imp_igv = _sum(imp[imp_keys], "importer_id", "import_igv_pen", "ii").reindex(out.index)
    else:
        cif = imp_igv = pd.Series(np.nan, index=out.index)
    has_ret = n_filed > 0
    out["invoiced_over_declared_sales"] = _log_ratio(sold, sales).where(has_ret)
    backed = bought.fillna(0) + cif.fillna(0)
    out["unbacked_purchases_share"] = ((purch - backed) / purch.where(purch > 0)).clip(-2, 1).where(has_ret)
    out["imports_over_purchases"] = (cif / purch.where(purch > 0)).clip(0, 10).where(is_importer & has_ret)
    out["unbooked_imports_share"] = ((backed - purch.fillna(0)) / cif.where(cif > 0)).clip(-2, 1).where(
        is_importer & has_ret)
    supported = bought.fillna(0) * rate + imp_igv.fillna(0)
    out["credit_over_supported_igv"] = _log_ratio(credit, supported).where(has_ret)
    out["import_igv_over_credit"] = (imp_igv / credit.where(credit > 0)).clip(0, 10).where(is_importer & has_ret)
    _suppliers(out, inv, inp.returns, reg, win, inp.cutoff)

    margin = 1 - purch / sales.where(sales > 0)
    out["margin"] = margin.clip(-2, 1)
    out["margin_vs_sector"] = out.margin - out.groupby("sector").margin.transform("median")
    if len(rp):
        m_prev = 1 - _sum(rp, ID, "purchases_pen", "p") / _sum(rp, ID, "sales_pen", "s").where(lambda x: x > 0)
        out["margin_vs_own_history"] = out.margin - m_prev.clip(-2, 1).reindex(out.index)
    else:
        out["margin_vs_own_history"] = np.nan
    out["payable_share"] = (payable / debit.where(debit > 0)).clip(0, 2)
    if len(rw):
        latest = rw.sort_values(["period", "filing_date"]).drop_duplicates(ID, keep="last").set_index(ID)
        carried = latest.credit_carried_forward_pen.reindex(out.index)
        out["carried_credit_months"] = (carried / (debit / n_filed.clip(lower=1) + SMOOTH)).clip(0, 60)
    else:
        out["carried_credit_months"] = np.nan
    _income(out, inp, registered)
    expected = pd.Series(0, index=out.index)
    for p in win:
        expected += (registered < pd.Period(p, "M").end_time).astype(int)
    out["missed_share"] = (1 - n_filed / expected.where(expected > 0)).clip(0, 1)
    if len(rw):
        due = rw.period.astype(str).map(lambda p: (pd.Period(p, "M") + 1).start_time) + pd.Timedelta(
            days=ta.filing_due_day - 1)
        late = (pd.to_datetime(rw.filing_date) > due).groupby(rw[ID]).mean()
        out["late_share"] = late.reindex(out.index)
    else:
        out["late_share"] = np.nan
    out["months_registered"] = ((pd.Timestamp(inp.cutoff) - registered).dt.days / 30.44).clip(lower=0)
    off = inp.offences.set_index("importer_id").reindex(out.index)
    out["customs_offences"] = off.customs_offences.where(is_importer, np.nan).fillna(0).where(is_importer)
    out["customs_offence_rate"] = ((off.customs_offences.fillna(0) + 0.1) / (off.customs_inspections.fillna(0) + 1)
                                   ).where(is_importer)
    out["customs_risk"] = inp.customs_risk.set_index("importer_id").customs_risk.reindex(out.index)
    out = out.reset_index().rename(columns={"index": ID})
    return out[[ID, *INFO, *NAMES]].sort_values(ID, kind="stable").reset_index(drop=True)


def _suppliers(out: pd.DataFrame, inv: pd.DataFrame, returns: pd.DataFrame, reg: pd.DataFrame, win: list[str],
               cut: date) -> None:
    """Network features: what each buyer bought from suppliers that look like ghosts, point in time."""
    names = ("ghost_purchase_share", "supplier_gap", "new_supplier_share", "log_suppliers", "log_customers")
    if inv.empty:
        for c in names:
            out[c] = np.nan
        return
    sold_all = inv.groupby("seller_id").taxable_amount_pen.sum()
    rw = returns[returns.period.astype(str).isin(win)] if len(returns) else returns
    declared = rw.groupby(ID).sales_pen.sum() if len(rw) else pd.Series(dtype=float)
    gap = _log_ratio(sold_all, declared.reindex(sold_all.index))
    st = reg.reindex(sold_all.index)
    gone = st.status.isin(["SUSPENDED", "DEREGISTERED"]) | (st.domicile_condition == "NOT_LOCATED")
    ghost = (gap > GHOST_GAP) | gone
    new = (pd.Timestamp(cut) - pd.to_datetime(st.registered_date)).dt.days < NEW_SUPPLIER_MONTHS * 30.44
    amt = inv.taxable_amount_pen
    s = inv.seller_id
    total = amt.groupby(inv.buyer_id).sum()
    out["ghost_purchase_share"] = ((amt * s.map(ghost).fillna(False).astype(float)).groupby(inv.buyer_id).sum()
                                   / total).reindex(out.index)
    out["supplier_gap"] = ((amt * s.map(gap).fillna(0)).groupby(inv.buyer_id).sum() / total).reindex(out.index)
    out["new_supplier_share"] = ((amt * s.map(new).fillna(False).astype(float)).groupby(inv.buyer_id).sum()
                                 / total).reindex(out.index)
    out["log_suppliers"] = np.log1p(inv.groupby("buyer_id").seller_id.nunique().reindex(out.index).fillna(0))
    out["log_customers"] = np.log1p(inv.groupby("seller_id").buyer_id.nunique().reindex(out.index).fillna(0))


def _income(out: pd.DataFrame, inp: TaxInputs, registered: pd.Series) -> None:
    """The latest fiscal year anyone filed for: margin and deductions against the sector; missing returns."""
    inc = inp.income
    if inc.empty:
        out["income_margin_vs_sector"] = out["deductions_vs_sector"] = out["income_return_missing"] = np.nan
        return
    fy = int(inc.fiscal_year.max())
    g = inc[inc.fiscal_year == fy].set_index(ID).reindex(out.index)
    rev = g.revenue_pen.astype(float).where(lambda x: x > 0)
    m = ((rev - g.cost_of_sales_pen.astype(float)) / rev).clip(-2, 1)
    out["income_margin_vs_sector"] = m - m.groupby(out.sector).transform("median")
    ded = (g.deductions_pen.astype(float) / rev).clip(lower=0)
    med = ded.groupby(out.sector).transform("median")
    out["deductions_vs_sector"] = np.log((ded + 0.01) / (med + 0.01))
    season_over = inp.cutoff >= date(fy + 1, INCOME_SEASON_END, 1)
    before_year = registered < pd.Timestamp(date(fy, 1, 1))
    missing = (g.revenue_pen.isna() & before_year).astype(float)
    out["income_return_missing"] = missing.where(before_year) if season_over else np.nan
