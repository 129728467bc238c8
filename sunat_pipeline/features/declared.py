"""Features of the item itself and its declaration: declared values and ratios, taxes, the published
reference price, declared attributes (permit, origin vs supplier, HS codes, office, items) and calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import DAY_BITS, encode, index_in, to_days
from sunat_pipeline.settings import TaxSettings

# The date a reference price issue is in force from: the silver partition of ``reference_prices`` (the issue's
# file date, which is its valid_from).
REF_DATE = "effective_date"
VALUE_COLUMNS = ("fob_usd", "cif_usd", "net_weight_kg", "quantity", "freight_usd", "insurance_usd", "duty_rate")


def column(df: pd.DataFrame, c: str) -> np.ndarray:
    """A numeric column as float64 (a read-only view when it already is one: no copy of 10M rows)."""
    s = df[c]
    if s.dtype == np.float64:
        return s.to_numpy()
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def numeric(df: pd.DataFrame, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {c: column(df, c) if rows is None else column(df, c)[rows] for c in VALUE_COLUMNS}


def values(c: dict[str, np.ndarray], taxes: TaxSettings | None = None) -> dict[str, np.ndarray]:
    """Value features from the declared amounts (one definition for items and past items); ``taxes_over_cif``
    only with the import tax rates (``settings.tax``)."""
    fob, cif = c["fob_usd"], c["cif_usd"]
    kg = np.maximum(c["net_weight_kg"], 1e-3)
    qty = np.maximum(c["quantity"], 1.0)
    fob_pos = np.maximum(fob, 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = fob / kg
        duty = cif * c["duty_rate"]
        out = {
            "log_cif": np.log1p(cif),
            "log_unit_value_kg": np.log(np.maximum(uv, 1e-6)),
            "log_unit_value_qty": np.log(np.maximum(fob / qty, 1e-6)),
            "cif_fob_ratio": cif / fob_pos,
            "freight_share": c["freight_usd"] / fob_pos,
            "insurance_share": c["insurance_usd"] / fob_pos,
            "duty_rate": c["duty_rate"],
            "kg_per_unit": kg / qty,
            "_uv": uv,
        }
        if taxes is not None:
            out["taxes_over_cif"] = (duty + (cif + duty) * (taxes.igv_rate + taxes.ipm_rate)) / np.maximum(cif, 1e-6)
    return out


def _by_unique(s: pd.Series, fn) -> np.ndarray:
    """Apply ``fn`` (Series of uniques -> float array) to the distinct values of a text column."""
    codes, uniq = encode(s)
    vals = np.asarray(fn(pd.Series(uniq, dtype="str")), dtype=float)
    return np.where(codes >= 0, vals[codes.clip(0)] if len(vals) else np.nan, np.nan)


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def reference_asof(items: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Per item, the reference price (USD/kg) of its HS10 code and origin in force on its declaration day: from
    the latest issue dated (``REF_DATE``) on or before that day; NaN when no issue is in force yet.

    Vectorised as-of join: pairs coded on the items' uniques, keys ``(pair << DAY_BITS) | day``, one binary
    search per item. Within one issue the last row of a pair wins; a row with an empty date is never in force.
    A frame without a ``REF_DATE`` column is one undated issue, in force on every day (its caller bounds it).
    """
    r = np.full(len(items), np.nan)
    if not len(reference) or not len(items):
        return r
    hs_c, hs_u = encode(items.hs_code)
    or_c, or_u = encode(items.origin_country)
    n_or = max(len(or_u), 1)
    pair = np.where((hs_c >= 0) & (or_c >= 0), hs_c * n_or + or_c, -1)
    rh, ro = index_in(reference.hs_code, hs_u), index_in(reference.origin_country, or_u)
    ok = (rh >= 0) & (ro >= 0)
    if REF_DATE in reference:
        ok &= reference[REF_DATE].notna().to_numpy()
        rday = to_days(reference[REF_DATE])
    else:
        rday = np.zeros(len(reference), dtype=np.int64)  # 1970-01-01: before every declaration
    key = ((rh * n_or + ro)[ok] << DAY_BITS) | rday[ok]
    order = np.argsort(key, kind="stable")  # equal keys keep frame order: side="right" finds the last
    ks, price = key[order], column(reference, "ref_unit_price_usd_kg")[ok][order]
    if not len(ks):
        return r
    day = to_days(items.declaration_date)
    valid = (pair >= 0) & items.declaration_date.notna().to_numpy()
    pos = np.searchsorted(ks, (pair << DAY_BITS) | np.where(valid, day, 0), side="right") - 1
    hit = valid & (pos >= 0)
    pos = pos.clip(0)
    hit &= (ks[pos] >> DAY_BITS) == pair
    return np.where(hit, price[pos], np.nan)


def base_features(items: pd.DataFrame, reference: pd.DataFrame, taxes: TaxSettings) -> pd.DataFrame:
    """Features from the item itself, its declaration and reference prices (no history)."""
    v = values(numeric(items), taxes)
    f = pd.DataFrame({k: a for k, a in v.items() if not k.startswith("_")})
    r = reference_asof(items, reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        f["log_ref_ratio"] = np.log(v["_uv"] / r)
    f["has_permit"] = (items.permit_no.fillna("") != "").to_numpy(dtype=float)
    f["origin_differs_supplier"] = (items.origin_country != items.supplier_country).to_numpy(dtype=float)
    f["hs2"] = _by_unique(items.hs_code, lambda u: _num(u.str[:2]))
    f["hs4"] = _by_unique(items.hs_code, lambda u: _num(u.str[:4]))
    f["office_code"] = _by_unique(items.customs_office, _num)
    dc, du = encode(items.declaration_id.astype("str"))
    has_item = items.item_no.notna().to_numpy()
    counts = np.bincount(dc[(dc >= 0) & has_item], minlength=len(du)).astype(float)
    f["n_items"] = np.where(dc >= 0, counts[dc.clip(0)] if len(counts) else np.nan, np.nan)
    days = to_days(items.declaration_date)
    f["day_of_week"] = ((days + 3) % 7).astype(float)  # 1970-01-01 was a Thursday (3)
    f["month"] = (days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(float)
    return f
