"""Features for measuring the world (evaluation only; the product never reads this).

``observables``: what an analyst could compute from the declarations and the published reference data,
with no label: the declared columns, simple ratios (value per kg, per unit, kg per unit, value against the
reference price in force, against the history's median for the goods...) and flags (origin differs from
the seller's country, a restricted code without a permit valid in the register known that day).

``entity_rates``: the full-label fraud rate of an entity (importer, broker, supplier...) over the days
before each item's day, up to a cutoff: what a model trained on the truth could learn about it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_sim.catalogue import PREFERENTIAL_ORIGINS
from sunat_sim.prices import in_force

NUMERIC = ["quantity", "net_weight_kg", "fob_usd", "cif_usd", "freight_usd", "insurance_usd", "duty_rate",
           "fob_invoice"]
RATIOS = ["value_per_kg", "value_per_unit", "kg_per_unit", "cif_over_fob", "freight_over_fob",
          "insurance_over_fob", "freight_per_kg", "value_over_reference", "value_per_kg_over_median",
          "value_per_unit_over_median", "kg_per_unit_over_median", "items_in_declaration", "importer_past_declarations"]
FLAGS = ["origin_differs_supplier", "preferential_origin", "permit_quoted", "restricted_permit_problem",
         "reference_missing"]
CATEGORICAL = ["customs_office", "importer_id", "declarant_id", "supplier_id", "supplier_country", "origin_country",
               "hs_code", "hs_chapter", "transport_mode", "invoice_currency", "permit_no", "origin_supplier_pair"]
ENTITIES = ["importer_id", "declarant_id", "supplier_id", "hs_code", "origin_supplier_pair", "customs_office"]


def day_index(items: pd.DataFrame, start) -> np.ndarray:
    return (pd.to_datetime(items.declaration_date) - pd.Timestamp(start)).dt.days.to_numpy()


def observables(w) -> pd.DataFrame:
    """Label-free features of every item of the world (``w``: a simulated ``World``)."""
    it, cfg = w.items, w.cfg
    day = day_index(it, cfg.start_date)
    kg = it.net_weight_kg.to_numpy(dtype=float)
    qty = it.quantity.to_numpy(dtype=float)
    fob = it.fob_usd.to_numpy(dtype=float)
    f = pd.DataFrame({c: it[c].to_numpy(dtype=float) for c in NUMERIC})
    with np.errstate(divide="ignore", invalid="ignore"):
        f["value_per_kg"] = fob / kg
        f["value_per_unit"] = fob / qty
        f["kg_per_unit"] = kg / qty
        f["cif_over_fob"] = it.cif_usd.to_numpy(dtype=float) / fob
        f["freight_over_fob"] = it.freight_usd.to_numpy(dtype=float) / fob
        f["insurance_over_fob"] = it.insurance_usd.to_numpy(dtype=float) / fob
        f["freight_per_kg"] = it.freight_usd.to_numpy(dtype=float) / kg
        ref = in_force(w.publications, it.hs_code, it.origin_country, it.declaration_date)
        f["value_over_reference"] = f.value_per_kg.to_numpy() / ref
        for col, keys in (("value_per_kg", ["hs_code", "origin_country"]), ("value_per_unit", ["hs_code"]),
                          ("kg_per_unit", ["hs_code"])):
            f[f"{col}_over_median"] = f[col].to_numpy() / _past_median(f[col], it, keys, day)
    f["items_in_declaration"] = it.groupby("declaration_id").item_no.transform("count").to_numpy(dtype=float)
    f["importer_past_declarations"] = _past_declarations(it, day)
    f["origin_differs_supplier"] = (it.origin_country != it.supplier_country).to_numpy(dtype=float)
    f["preferential_origin"] = it.origin_country.isin(PREFERENTIAL_ORIGINS).to_numpy(dtype=float)
    f["permit_quoted"] = (it.permit_no != "").to_numpy(dtype=float)
    prefixes = tuple(cfg.k["administration"]["legacy"]["restricted_prefixes"])
    restricted = it.hs_code.str.startswith(prefixes).to_numpy()
    valid = np.zeros(len(it), dtype=bool)
    for d in np.unique(day[restricted]):
        rows = np.flatnonzero(restricted & (day == d))
        valid[rows] = w.permits.known_valid(it.permit_no.to_numpy()[rows], it.importer_id.to_numpy()[rows],
                                            it.hs_code.to_numpy()[rows], int(d))
    f["restricted_permit_problem"] = (restricted & ~valid).astype(float)
    f["reference_missing"] = np.isnan(ref).astype(float)
    for c in CATEGORICAL:
        f[c] = categorical(it, c)
    return f


def _past_median(x: pd.Series, it: pd.DataFrame, keys: list[str], day: np.ndarray) -> np.ndarray:
    """Median of the goods' past declarations: over the items lodged in the calendar months before the item's
    month (NaN for goods never declared before)."""
    month = pd.to_datetime(it.declaration_date).dt.to_period("M").to_numpy()
    out = np.full(len(it), np.nan)
    key = it[keys[0]].astype(str).to_numpy()
    for k in keys[1:]:
        key = key + "|" + it[k].astype(str).to_numpy()
    for mth in np.unique(month):
        past, now = month < mth, month == mth
        if past.any():
            med = x[past].groupby(key[past]).median()
            out[now] = med.reindex(key[now]).to_numpy()
    return out


def categorical(it: pd.DataFrame, c: str) -> pd.Series:
    if c == "hs_chapter":
        return it.hs_code.str[:2].reset_index(drop=True)
    if c == "origin_supplier_pair":
        return (it.origin_country + ">" + it.supplier_country).reset_index(drop=True)
    return it[c].astype(str).reset_index(drop=True)


def _past_declarations(it: pd.DataFrame, day: np.ndarray) -> np.ndarray:
    """Declarations the importer lodged before the item's day."""
    d = pd.DataFrame({"imp": it.importer_id.to_numpy(), "day": day, "decl": it.declaration_id.to_numpy()})
    per = d.drop_duplicates("decl").groupby(["imp", "day"]).size().rename("n").reset_index()
    per["before"] = per.groupby("imp").n.cumsum() - per.n
    return d.merge(per, on=["imp", "day"], how="left").before.to_numpy(dtype=float)


def _rates_before(values: pd.Series, day: np.ndarray, ev_values, ev_day, ev_n, ev_f, upto: np.ndarray,
                  smoothing: float) -> np.ndarray:
    """Smoothed rate sum(ev_f) / sum(ev_n) of each item's value over the events dated <= ``upto`` (per item)."""
    codes, uniq = pd.factorize(values)
    ev_codes = pd.Index(uniq).get_indexer(pd.Series(ev_values).astype(values.dtype))
    keep = ev_codes >= 0
    prior = (np.sum(ev_f) + 1) / (np.sum(ev_n) + 10)
    t = pd.DataFrame({"c": ev_codes[keep], "d": np.asarray(ev_day)[keep], "n": np.asarray(ev_n)[keep],
                      "f": np.asarray(ev_f)[keep]}).groupby(["c", "d"])[["n", "f"]].sum()
    t = t.groupby(level=0).cumsum().reset_index().sort_values("d")
    q = pd.DataFrame({"c": codes, "d": upto, "pos": np.arange(len(codes))}).sort_values("d")
    m = pd.merge_asof(q, t, on="d", by="c", direction="backward")
    out = np.empty(len(codes))
    out[m.pos.to_numpy()] = (m.f.fillna(0).to_numpy() + smoothing * prior) / (m.n.fillna(0).to_numpy() + smoothing)
    return out


def entity_rates(values: pd.Series, y: np.ndarray, day: np.ndarray, cutoff: int, smoothing: float = 10.0) -> np.ndarray:
    """Full-label: the fraud rate of each item's entity (e.g. its importer) over every item lodged before its day,
    using labels of days < ``cutoff`` only (items on or after the cutoff see the rate as of the cutoff)."""
    known = day < cutoff
    return _rates_before(values, day, values[known], day[known], np.ones(known.sum()), y[known],
                         np.minimum(day, cutoff) - 1, smoothing)


def observed_rates(values: pd.Series, day: np.ndarray, items: pd.DataFrame, enforcement: pd.DataFrame,
                   start, smoothing: float = 10.0) -> np.ndarray:
    """What an administration knows: the share of its inspections of the entity found fraudulent, over the
    outcomes reported before the item's day (each inspected item once; an overturned finding stops counting)."""
    pos = pd.Series(np.arange(len(items)), index=pd.MultiIndex.from_arrays([items.declaration_id, items.item_no]))
    e = enforcement.assign(row=pos.reindex(pd.MultiIndex.from_arrays([enforcement.declaration_id,
                                                                       enforcement.item_no])).to_numpy())
    corr = e.record_id.str.endswith("-C").to_numpy()
    fraud = (e.result == "FRAUD").to_numpy(dtype=float)
    ev_day = (pd.to_datetime(e.reported_date) - pd.Timestamp(start)).dt.days.to_numpy()
    # An inspection adds one inspection and its finding; a correction retracts the finding it overturns.
    return _rates_before(values, day, values.to_numpy()[e.row.to_numpy(dtype=int)], ev_day,
                         np.where(corr, 0.0, 1.0), np.where(corr, -1.0, fraud), day - 1, smoothing)
