"""Point-in-time features for declaration items.

A declaration lodged on day D may use only what was known at the start of D:
customs history lodged before D, inspection outcomes whose extract was available on or before D
(``reported_date <= D``; outcomes always come back at least a day after the inspection, so an item's
own outcome can never reach its own features), tax returns filed on or before D, and reference data
published on or before D. Every join here is an as-of join on those dates, so the same code builds
features for training (many days at once) and for a single day's scoring, with identical values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sunat_pipeline.world import IGV_RATE, IPM_RATE

PROFILE_KEYS = ("importer_id", "declarant_id", "supplier_id", "hs6", "origin_country", "customs_office")
SMOOTHING = 20.0  # pseudo-inspections at the global rate: a new entity starts at the prior


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    source: str
    risk_area: str


CATALOG: list[Feature] = [
    Feature("log_cif", "log(1 + CIF value in USD)", "customs", "revenue"),
    Feature("log_unit_value_kg", "log of FOB USD per kg", "customs", "undervaluation"),
    Feature("log_unit_value_qty", "log of FOB USD per declared unit", "customs", "undervaluation"),
    Feature("cif_fob_ratio", "CIF / FOB", "customs", "undervaluation"),
    Feature("freight_share", "freight / FOB", "customs", "undervaluation"),
    Feature("duty_rate", "ad valorem duty rate declared", "customs", "misclassification"),
    Feature("taxes_over_cif", "(duty + IGV + IPM) / CIF", "customs", "revenue"),
    Feature("log_ref_ratio", "log(unit value per kg / reference price for HS10 and origin)", "reference",
            "undervaluation"),
    Feature("kg_per_unit", "declared net kg per unit", "customs", "quantity"),
    Feature("has_permit", "a permit number is declared", "customs", "prohibited goods"),
    Feature("origin_differs_supplier", "declared origin differs from the supplier's country", "customs",
            "origin"),
    Feature("hs2", "HS chapter", "customs", "classification"),
    Feature("hs4", "HS heading", "customs", "classification"),
    Feature("office_code", "customs office code", "customs", "office"),
    Feature("n_items", "items in the declaration", "customs", "complexity"),
    *[Feature(f"{k}_n_insp", f"inspections of this {k} with outcome known before the day", "enforcement",
              "entity risk") for k in PROFILE_KEYS],
    *[Feature(f"{k}_fraud_rate", f"smoothed fraud rate of this {k} from known outcomes", "enforcement",
              "entity risk") for k in PROFILE_KEYS],
    Feature("importer_past_items", "items the importer lodged before the day", "customs", "history"),
    Feature("importer_days_active", "days since the importer's first declaration (-1 if new)", "customs",
            "history"),
    Feature("importer_is_new", "no declaration by this importer before the day", "customs", "history"),
    Feature("tax_purchases_over_imports", "last tax return's purchases / customs CIF of that month (PEN)",
            "tax", "tax-customs consistency"),
    Feature("day_of_week", "day of week of lodgement", "customs", "calendar"),
    Feature("month", "month of lodgement", "customs", "calendar"),
]
FEATURES = [f.name for f in CATALOG]


def catalog_frame() -> pd.DataFrame:
    return pd.DataFrame([f.__dict__ for f in CATALOG])


def _code(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


def base_features(items: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Features from the item itself and reference prices (no history)."""
    f = pd.DataFrame(index=items.index)
    fob = items.fob_usd.astype(float)
    cif = items.cif_usd.astype(float)
    kg = items.net_weight_kg.astype(float).clip(lower=1e-3)
    qty = items.quantity.astype(float).clip(lower=1)
    uv = fob / kg
    f["log_cif"] = np.log1p(cif)
    f["log_unit_value_kg"] = np.log(uv.clip(lower=1e-6))
    f["log_unit_value_qty"] = np.log((fob / qty).clip(lower=1e-6))
    f["cif_fob_ratio"] = cif / fob.clip(lower=1e-6)
    f["freight_share"] = items.freight_usd.astype(float) / fob.clip(lower=1e-6)
    f["duty_rate"] = items.duty_rate.astype(float)
    duty = cif * f.duty_rate
    f["taxes_over_cif"] = (duty + (cif + duty) * (IGV_RATE + IPM_RATE)) / cif.clip(lower=1e-6)
    ref = reference.drop_duplicates(["hs_code", "origin_country"], keep="last").set_index(
        ["hs_code", "origin_country"]).ref_unit_price_usd_kg
    r = ref.reindex(pd.MultiIndex.from_arrays([items.hs_code, items.origin_country])).to_numpy()
    f["log_ref_ratio"] = np.log(uv.to_numpy() / r)
    f["kg_per_unit"] = kg / qty
    f["has_permit"] = (items.permit_no.fillna("") != "").astype(float)
    f["origin_differs_supplier"] = (items.origin_country != items.supplier_country).astype(float)
    f["hs2"] = _code(items.hs_code.str[:2])
    f["hs4"] = _code(items.hs_code.str[:4])
    f["office_code"] = _code(items.customs_office)
    f["n_items"] = items.groupby("declaration_id").item_no.transform("count").astype(float)
    d = pd.to_datetime(items.declaration_date)
    f["day_of_week"] = d.dt.dayofweek.astype(float)
    f["month"] = d.dt.month.astype(float)
    return f


def _asof(left: pd.DataFrame, right: pd.DataFrame, on_left: str, on_right: str, by: str | None,
          strict: bool) -> pd.DataFrame:
    """merge_asof keeping the left order; ``strict`` excludes right rows dated on the left date."""
    left = left.assign(_pos=np.arange(len(left)))
    ls = left.sort_values(on_left, kind="stable")
    rs = right.sort_values(on_right, kind="stable")
    out = pd.merge_asof(ls, rs, left_on=on_left, right_on=on_right, by=by, allow_exact_matches=not strict,
                        direction="backward")
    return out.sort_values("_pos").drop(columns="_pos").reset_index(drop=True)


def labelled_outcomes(outcomes: pd.DataFrame, customs: pd.DataFrame) -> pd.DataFrame:
    """Outcome reports of inspected items, joined to the item's entities: one row per item and report date.

    An item reported again later (a correction) has several rows. ``n_delta`` (1 on the item's first
    report, else 0) and ``fraud_delta`` (change of its result) make cumulative sums up to a day count
    each item once with the latest result reported by that day, so a later report never changes
    what an earlier day knew.
    """
    cols = ["declaration_id", "item_no", "reported_date", "fraud", "revenue", "n_delta", "fraud_delta"]
    if outcomes.empty:
        return pd.DataFrame(columns=[*cols, *PROFILE_KEYS])
    o = outcomes.sort_values(["reported_date", "record_id"]).drop_duplicates(
        ["declaration_id", "item_no", "reported_date"], keep="last")
    o = o.assign(fraud=(o.result == "FRAUD").astype(float), revenue=o.revenue_recovered_usd.astype(float))
    before = o.groupby(["declaration_id", "item_no"]).fraud.shift()
    o = o.assign(n_delta=before.isna().astype(float), fraud_delta=o.fraud - before.fillna(0.0))
    c = customs.assign(hs6=customs.hs_code.str[:6])
    keys = ["declaration_id", "item_no", *PROFILE_KEYS]
    return o[cols].merge(c[keys], on=["declaration_id", "item_no"], how="inner")


def profile_features(items: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Smoothed fraud rates per entity from outcomes reported on or before each item's date."""
    it = items.assign(hs6=items.hs_code.str[:6], _d=pd.to_datetime(items.declaration_date))
    out = pd.DataFrame(index=range(len(items)))
    if labelled.empty:  # no outcome known yet: every entity sits at the prior
        for k in PROFILE_KEYS:
            out[f"{k}_n_insp"] = 0.0
            out[f"{k}_fraud_rate"] = 0.1
        return out
    lab = labelled.assign(_r=pd.to_datetime(labelled.reported_date))
    g = lab.groupby("_r").agg(n=("n_delta", "sum"), k=("fraud_delta", "sum")).sort_index().cumsum().reset_index()
    if len(g):
        prior = _asof(it[["_d"]], g, "_d", "_r", None, strict=False)
        prior_rate = ((prior.k.fillna(0) + 1) / (prior.n.fillna(0) + 10)).to_numpy()
    else:
        prior_rate = np.full(len(it), 0.1)
    for k in PROFILE_KEYS:
        agg = lab.groupby([k, "_r"]).agg(n=("n_delta", "sum"), f=("fraud_delta", "sum")).reset_index()
        agg[["n", "f"]] = agg.groupby(k)[["n", "f"]].cumsum()
        agg = agg.rename(columns={"n": "_n", "f": "_f"})
        m = _asof(it[[k, "_d"]].astype({k: "str"}), agg.astype({k: "str"}), "_d", "_r", k, strict=False)
        n = m["_n"].fillna(0).to_numpy()
        fr = m["_f"].fillna(0).to_numpy()
        out[f"{k}_n_insp"] = n
        out[f"{k}_fraud_rate"] = (fr + SMOOTHING * prior_rate) / (n + SMOOTHING)
    return out


def history_features(items: pd.DataFrame, customs_history: pd.DataFrame) -> pd.DataFrame:
    """Importer activity from declarations lodged strictly before the item's day."""
    it = items.assign(_d=pd.to_datetime(items.declaration_date))
    h = customs_history.assign(_h=pd.to_datetime(customs_history.declaration_date))
    daily = h.groupby(["importer_id", "_h"]).size().rename("_c").reset_index()
    daily["_c"] = daily.groupby("importer_id")["_c"].cumsum()
    daily["_first"] = daily.groupby("importer_id")["_h"].transform("min")
    m = _asof(it[["importer_id", "_d"]], daily, "_d", "_h", "importer_id", strict=True)
    out = pd.DataFrame(index=range(len(items)))
    out["importer_past_items"] = m["_c"].fillna(0).to_numpy(dtype=float)
    days = (m["_d"] - m["_first"]).dt.days
    out["importer_days_active"] = days.fillna(-1).to_numpy(dtype=float)
    out["importer_is_new"] = m["_first"].isna().to_numpy(dtype=float)
    return out


def tax_features(items: pd.DataFrame, tax: pd.DataFrame, customs_history: pd.DataFrame,
                 fx: pd.DataFrame) -> pd.DataFrame:
    """Latest tax return filed by the day vs. the importer's own customs imports that month."""
    out = pd.DataFrame(index=range(len(items)))
    if tax.empty:
        out["tax_purchases_over_imports"] = np.nan
        return out
    h = customs_history.assign(period=pd.to_datetime(customs_history.declaration_date).dt.strftime("%Y-%m"))
    # Each month at its own median rate: a return filed by the day covers a month that ended before it,
    # so later rates never reach the day (a median over all rates would).
    usd = fx[fx.currency == "USD"] if "currency" in fx.columns else fx
    rate = usd.groupby(pd.to_datetime(usd.rate_date).dt.strftime("%Y-%m")).pen_per_unit.median()
    imports = h.groupby(["importer_id", "period"]).cif_usd.sum().rename("imports_pen").reset_index()
    imports["imports_pen"] *= imports.period.map(rate).fillna(3.75).to_numpy(dtype=float)
    t = tax.rename(columns={"taxpayer_id": "importer_id"}).merge(imports, on=["importer_id", "period"], how="left")
    t = t.assign(_f=pd.to_datetime(t.filing_date),
                 ratio=t.purchases_pen / t.imports_pen.where(t.imports_pen > 0))
    it = items.assign(_d=pd.to_datetime(items.declaration_date))
    m = _asof(it[["importer_id", "_d"]], t[["importer_id", "_f", "ratio"]], "_d", "_f", "importer_id",
              strict=False)
    out["tax_purchases_over_imports"] = m["ratio"].to_numpy(dtype=float)
    return out


def build_features(items: pd.DataFrame, *, customs_history: pd.DataFrame, outcomes: pd.DataFrame,
                   reference: pd.DataFrame, tax: pd.DataFrame, fx: pd.DataFrame) -> pd.DataFrame:
    """Feature matrix (columns FEATURES) aligned with ``items`` (reset index).

    ``customs_history`` and ``outcomes`` may hold data after the items' dates: the as-of joins keep
    only what each item's day could see, so features never depend on what came later.
    """
    items = items.reset_index(drop=True)
    lab = labelled_outcomes(outcomes, customs_history)
    parts = [
        base_features(items, reference).reset_index(drop=True),
        profile_features(items, lab),
        history_features(items, customs_history),
        tax_features(items, tax, customs_history, fx),
    ]
    return pd.concat(parts, axis=1)[FEATURES].astype("float64")


def item_frame(items: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """Declared columns and features side by side (what rules and reasons read); declared values win."""
    items = items.reset_index(drop=True)
    return pd.concat([items, X.drop(columns=list(items.columns.intersection(X.columns)))], axis=1)
