"""Tax-customs consistency: the importer's latest tax return filed by the day against its own customs imports
of the return's month (in PEN at that month's median USD rate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_pipeline.features.activity import importer_codes
from sunat_pipeline.features.arrays import DAY_BITS, index_in, to_days
from sunat_pipeline.features.declared import column
from sunat_pipeline.settings import TaxSettings


def _month_index(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def tax_features(items: pd.DataFrame, tax: pd.DataFrame, customs_history: pd.DataFrame,
                 fx: pd.DataFrame, rates: TaxSettings, codes=None, h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Latest tax return filed by the day against the importer's own customs imports of that month."""
    n = len(items)
    names = ("tax_purchases_over_imports", "tax_igv_credit_over_import_igv", "tax_sales_over_purchases")
    out = pd.DataFrame({k: np.full(n, np.nan) for k in names})
    if tax.empty or not n:
        return out
    q_day = to_days(items.declaration_date)
    uq, qc, hc = codes if codes is not None else importer_codes(items, customs_history)
    tc = index_in(tax.taxpayer_id, uq)
    fd = to_days(tax.filing_date)
    t_ok = (tc >= 0) & (fd <= q_day.max())
    if not t_ok.any():
        return out
    t = tax[t_ok]
    tc, fd = tc[t_ok], fd[t_ok]
    per = pd.to_datetime(t.period.astype("str"), format="%Y-%m", errors="coerce")
    tm = np.where(per.isna(), -10**6, per.to_numpy().astype("datetime64[M]").astype(np.int64))
    # The month's customs imports of each importer, in PEN at that month's median USD rate. A return's
    # period ended before it was filed, so these sums only hold items lodged before the day.
    nm_lo, nm_hi = int(tm[tm > -10**6].min()) if (tm > -10**6).any() else 0, int(tm.max())
    imports = np.zeros((len(uq), 0))
    igv_base = imports
    if len(customs_history) and nm_hi >= nm_lo:
        hd = to_days(customs_history.declaration_date) if h_day is None else h_day
        hm = _month_index(hd)
        keep = np.flatnonzero((hc >= 0) & (hm >= nm_lo) & (hm <= nm_hi))
        nmon = nm_hi - nm_lo + 1
        cell = hc[keep] * nmon + (hm[keep] - nm_lo)
        del hm
        cif = column(customs_history, "cif_usd")[keep]
        duty = column(customs_history, "duty_rate")[keep]
        imports = np.bincount(cell, weights=np.nan_to_num(cif), minlength=len(uq) * nmon).reshape(len(uq), nmon)
        igv_base = np.bincount(cell, weights=np.nan_to_num(cif * (1 + duty)),
                               minlength=len(uq) * nmon).reshape(len(uq), nmon)
    usd = fx[fx.currency == "USD"] if "currency" in fx.columns else fx
    rate = usd.groupby(_month_index(to_days(usd.rate_date))).pen_per_unit.median() if len(usd) else pd.Series()
    month_ok = (tm >= nm_lo) & (tm <= nm_hi) & (imports.shape[1] > 0)
    col = (tm - nm_lo).clip(0, max(imports.shape[1] - 1, 0))
    imp_usd = np.where(month_ok, imports[tc, col] if imports.shape[1] else 0.0, 0.0)
    igv_usd = np.where(month_ok, igv_base[tc, col] if igv_base.shape[1] else 0.0, 0.0) * rates.igv_rate
    pen = pd.Series(tm).map(rate).fillna(3.75).to_numpy(float)
    # A return filed before its period ended would count imports after its filing: never use those.
    period_end = (tm + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - 1
    closed = period_end < fd
    imp_pen, igv_pen = imp_usd * pen, igv_usd * pen
    with np.errstate(divide="ignore", invalid="ignore"):
        purchases = t.purchases_pen.to_numpy(float, na_value=np.nan)
        r1 = np.where(closed & (imp_pen > 0), purchases / np.where(imp_pen > 0, imp_pen, 1), np.nan)
        r2 = np.where(closed & (igv_pen > 0), t.igv_credit_pen.to_numpy(float, na_value=np.nan)
                      / np.where(igv_pen > 0, igv_pen, 1), np.nan)
        r3 = np.where(purchases > 0, t.sales_pen.to_numpy(float, na_value=np.nan)
                      / np.where(purchases > 0, purchases, 1), np.nan)
    # Latest return filed on or before the day (ties: the later period).
    d0 = int(min(fd.min(), q_day.min()))
    order = np.lexsort((tm, fd, tc))
    keys = (tc[order] << DAY_BITS) | (fd[order] - d0)
    pos = np.searchsorted(keys, (qc << DAY_BITS) | (q_day - d0), side="right") - 1
    hit = (qc >= 0) & (pos >= 0) & ((keys[pos.clip(0)] >> DAY_BITS) == qc)
    src = order[pos.clip(0)]
    for name, r in zip(names, (r1, r2, r3), strict=True):
        out[name] = np.where(hit, r[src], np.nan)
    return out
