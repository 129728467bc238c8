"""Point-in-time features for declaration items, and the feature catalog.

A declaration lodged on day D may use only what was known at the start of D:

* customs history lodged **before** D (unit-value statistics, importer activity, anomaly models);
* inspection outcomes whose extract was available on or before D (``reported_date <= D``; outcomes
  always come back at least a day after the inspection, so an item's own outcome never reaches its own
  features), counted once per item with the latest result reported by D;
* tax returns filed on or before D, exchange rates of months that ended before them;
* reference data as passed (callers bound it by their date: ``train.load_inputs``; the latest
  publication per HS10 and origin wins).

Every join is an as-of join on those dates (vectorised: integer-coded keys, counting sorts and binary
search; no per-row Python), so the same code builds features for training (many days at once) and for
one day's scoring, with identical values. ``build_features(..., profile_state=...)`` takes the entity
profiles from the persisted daily state (``sunat_pipeline.features.history``) instead of recomputing them.

The catalog (``CATALOG``) is the single description of every feature: ``python -m sunat_pipeline.features.build
--markdown > docs/features.md`` writes the modelers' page, and training logs it with every model.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from sunat_pipeline.features.history import (
    CROSSES,
    DAY_BITS,
    PROFILE_KEYS,
    SMOOTHING,
    ProfileState,
    counting_argsort,
    encode,
    index_in,
    labelled_outcomes,
    profile_features,
    state_features,
    to_days,
)
from sunat_pipeline.settings import TaxSettings

IGV_RATE, IPM_RATE = TaxSettings().igv_rate, TaxSettings().ipm_rate  # interim: threaded from settings next

__all__ = ["CATALOG", "FEATURES", "Feature", "PROFILE_KEYS", "SMOOTHING", "build_features", "catalog_frame",
           "catalog_markdown", "item_frame", "labelled_outcomes", "profile_features"]

# Valuation: robust statistics of past unit values per group, backing off to coarser groups.
UV_WINDOW = 100  # the most recent past items of the group
UV_MIN_GROUP = 20  # fewer past items than this: back off to the next level
UV_LEVELS = ("HS10 x origin", "HS6 x origin", "HS4 x origin", "HS4")
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
MAD_FLOOR = 0.05  # log units: a group of identical prices does not make every deviation infinite
RECENT_DAYS = 30
# Anomaly: Isolation Forest per calendar month, fit on the items lodged before the month started.
ANOMALY_FIT_ROWS = 20_000  # the most recent items before the month
ANOMALY_MIN_ROWS = 500  # fewer: no score (NaN)
ANOMALY_TREES = 100
ANOMALY_SEED = 0
ANOMALY_INPUTS = ("unit_value_robust_z", "unit_value_qty_robust_z", "log_cif", "cif_fob_ratio", "freight_share",
                  "insurance_share", "log_kg_per_unit", "duty_rate")


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    source: str
    type: str  # continuous, ratio, binary, count, ordinal, categorical code, days, score
    transformation: str
    risk_area: str


_PROFILE_NAMES = {"importer_id": "importer", "declarant_id": "declarant (customs broker)",
                  "supplier_id": "foreign supplier", "hs6": "HS6 subheading", "origin_country": "origin country",
                  "customs_office": "customs office", "office_importer": "office x importer pair",
                  "hs6_origin": "HS6 x origin pair"}
_KNOWN = "outcomes with reported_date <= D, each inspected item once with its latest result"
_WINDOW = (f"last {UV_WINDOW} items lodged strictly before D in the first group with >= {UV_MIN_GROUP} of them: "
           + " -> ".join(UV_LEVELS))


def _profile_catalog() -> list[Feature]:
    out = [Feature(f"{k}_n_insp", f"inspections of this {_PROFILE_NAMES[k]} with a known outcome", "enforcement",
                   "count", f"count of {_KNOWN}", "entity risk") for k in (*PROFILE_KEYS, *CROSSES)]
    out += [Feature(f"{k}_fraud_rate", f"smoothed fraud rate of this {_PROFILE_NAMES[k]}", "enforcement",
                    "ratio", f"(frauds + {SMOOTHING:g} * prior) / (inspections + {SMOOTHING:g}); prior = "
                    "(all frauds + 1) / (all inspections + 10); " + _KNOWN, "entity risk")
            for k in PROFILE_KEYS]
    out += [Feature(f"{c}_fraud_rate", f"smoothed fraud rate of this {_PROFILE_NAMES[c]}", "enforcement", "ratio",
                    f"(frauds + {SMOOTHING:g} * {p}_fraud_rate) / (inspections + {SMOOTHING:g}): shrunk towards "
                    f"the {_PROFILE_NAMES[p]}'s rate; " + _KNOWN, "entity risk")
            for c, (_, _, p) in CROSSES.items()]
    return out


CATALOG: list[Feature] = [
    # value
    Feature("log_cif", "declared CIF value", "customs", "continuous", "log(1 + cif_usd)", "revenue"),
    Feature("log_unit_value_kg", "declared FOB value per kg", "customs", "continuous",
            "log(max(fob_usd / max(net_weight_kg, 0.001), 1e-6))", "undervaluation"),
    Feature("log_unit_value_qty", "declared FOB value per declared unit", "customs", "continuous",
            "log(max(fob_usd / max(quantity, 1), 1e-6))", "undervaluation"),
    Feature("cif_fob_ratio", "CIF over FOB", "customs", "ratio", "cif_usd / max(fob_usd, 1e-6)", "undervaluation"),
    Feature("freight_share", "freight over FOB", "customs", "ratio", "freight_usd / max(fob_usd, 1e-6)",
            "undervaluation"),
    Feature("insurance_share", "insurance over FOB", "customs", "ratio", "insurance_usd / max(fob_usd, 1e-6)",
            "undervaluation"),
    Feature("duty_rate", "ad valorem duty rate declared", "customs", "ratio", "as declared", "misclassification"),
    Feature("taxes_over_cif", "duty, IGV and IPM over CIF", "customs", "ratio",
            f"(cif * duty_rate + (cif + cif * duty_rate) * {IGV_RATE + IPM_RATE:g}) / cif", "revenue"),
    Feature("kg_per_unit", "declared net kg per unit", "customs", "continuous",
            "max(net_weight_kg, 0.001) / max(quantity, 1)", "quantity"),
    # valuation
    Feature("log_ref_ratio", "unit value per kg against the published reference price for HS10 and origin",
            "reference", "continuous", "log((fob_usd / net_weight_kg) / ref_unit_price_usd_kg); NaN without a "
            "reference", "undervaluation"),
    Feature("unit_value_robust_z", "robust z-score of the unit value per kg against past declarations of the same "
            "goods and origin", "customs (past)", "continuous",
            f"(log_unit_value_kg - median) / max({MAD_SCALE} * MAD, {MAD_FLOOR}) over the {_WINDOW}; NaN if no "
            "group is large enough", "undervaluation"),
    Feature("unit_value_qty_robust_z", "robust z-score of the unit value per declared unit, same window",
            "customs (past)", "continuous",
            f"(log_unit_value_qty - median) / max({MAD_SCALE} * MAD, {MAD_FLOOR}) over the same window",
            "undervaluation / quantity"),
    Feature("unit_value_past_log_ratio", "unit value per kg against the median of past declarations",
            "customs (past)", "continuous", "log_unit_value_kg - median of the same window (log of the ratio)",
            "undervaluation"),
    Feature("unit_value_ref_level", "which group the past-price window comes from", "customs (past)", "ordinal",
            "0 HS10 x origin, 1 HS6 x origin, 2 HS4 x origin, 3 HS4 (any origin), 4 none large enough",
            "undervaluation"),
    Feature("unit_value_ref_n", "past items in the window used", "customs (past)", "count",
            f"min(past items of the group, {UV_WINDOW}); 0 if no group is large enough", "undervaluation"),
    # declared attributes
    Feature("has_permit", "a permit number is declared", "customs", "binary", "permit_no not empty",
            "prohibited goods"),
    Feature("origin_differs_supplier", "declared origin differs from the supplier's country", "customs", "binary",
            "origin_country != supplier_country", "origin"),
    Feature("hs2", "HS chapter", "customs", "categorical code", "first 2 digits of hs_code as a number",
            "classification"),
    Feature("hs4", "HS heading", "customs", "categorical code", "first 4 digits of hs_code as a number",
            "classification"),
    Feature("office_code", "customs office code", "customs", "categorical code", "customs_office as a number",
            "office"),
    Feature("n_items", "items in the declaration", "customs", "count", "items of the same declaration_id",
            "complexity"),
    # entity profiles
    *_profile_catalog(),
    # history
    Feature("importer_past_items", "items the importer lodged before the day", "customs (past)", "count",
            "items with declaration_date < D", "history"),
    Feature("importer_days_active", "days since the importer's first declaration", "customs (past)", "days",
            "D - first declaration_date before D; -1 if none", "history"),
    Feature("importer_is_new", "no declaration by this importer before the day", "customs (past)", "binary",
            "importer_past_items == 0", "history"),
    Feature("importer_items_30d", f"items the importer lodged in the {RECENT_DAYS} days before the day",
            "customs (past)", "count", f"items with D - {RECENT_DAYS} <= declaration_date < D", "history"),
    Feature("importer_days_since_last", "days since the importer's previous declaration", "customs (past)", "days",
            "D - last declaration_date before D; -1 if none", "history"),
    # tax-customs consistency
    Feature("tax_purchases_over_imports", "declared purchases in the importer's latest tax return over its customs "
            "imports (CIF) of that month", "tax + customs", "ratio",
            "purchases_pen / (sum cif_usd of the month * that month's median PEN/USD); latest return with "
            "filing_date <= D; NaN without imports", "tax-customs consistency"),
    Feature("tax_igv_credit_over_import_igv", "IGV credit claimed in the latest tax return over the IGV its imports of "
            "that month paid at customs", "tax + customs", "ratio",
            f"igv_credit_pen / (sum (cif + cif * duty_rate) * {IGV_RATE:g} of the month in PEN); latest return "
            "with filing_date <= D", "tax-customs consistency"),
    Feature("tax_sales_over_purchases", "sales over purchases in the latest tax return (margin)", "tax", "ratio",
            "sales_pen / purchases_pen; latest return with filing_date <= D", "tax-customs consistency"),
    # calendar
    Feature("day_of_week", "day of week of lodgement", "customs", "ordinal", "0 Monday .. 6 Sunday", "calendar"),
    Feature("month", "month of lodgement", "customs", "ordinal", "1 .. 12", "calendar"),
    # anomaly
    Feature("value_anomaly_score", "how unusual the item's values are (Isolation Forest)", "customs (past)",
            "score", f"-score_samples of an Isolation Forest ({ANOMALY_TREES} trees, seed {ANOMALY_SEED}) on "
            f"{', '.join(ANOMALY_INPUTS)}, fit per calendar month on the last {ANOMALY_FIT_ROWS} items lodged "
            f"before the month began; higher = more anomalous; NaN with < {ANOMALY_MIN_ROWS} such items",
            "undervaluation / unknown patterns"),
]
FEATURES = [f.name for f in CATALOG]


def catalog_frame() -> pd.DataFrame:
    return pd.DataFrame([asdict(f) for f in CATALOG])


def catalog_markdown() -> str:
    """docs/features.md: the catalog as a page (generated; ``python -m sunat_pipeline.features.build --markdown``)."""
    lines = [
        "# Feature catalog",
        "",
        "<!-- Generated by `python -m sunat_pipeline.features.build --markdown > docs/features.md`; do not edit "
        "by hand."
        " -->",
        "",
        "Every feature of a declaration item lodged on day **D**, as the model, the rules engine "
        "(`config/rules.yaml`) and the reasons see it. Point in time: customs history lodged strictly before D, "
        "outcomes reported on or before D, tax returns filed on or before D (see `sunat_pipeline/features/build.py`). "
        "Each trained model logs this catalog to MLflow (`feature_catalog.csv`) with its feature importances.",
        "",
        "## What day D can see",
        "",
        "- **customs (past)**: items lodged strictly before D. Unit-value statistics use the last "
        f"{UV_WINDOW} past items of the item's group (ordered by date, ties by a hash of the declared amounts), "
        f"backing off {' -> '.join(UV_LEVELS)} while a group has fewer than {UV_MIN_GROUP} past items.",
        "- **enforcement**: outcomes with `reported_date <= D` (an inspection before D reported after D is not "
        "known); each item counts once with its latest result; corrections reported later never change D.",
        "- **tax**: the importer's latest return with `filing_date <= D`, against its customs imports of the "
        "return's month (a month that ended before the filing).",
        "- **anomaly**: one Isolation Forest per calendar month, fit on the last "
        f"{ANOMALY_FIT_ROWS} items lodged before the month began (seed {ANOMALY_SEED}): no item's score depends "
        "on its own day or later.",
        "- **reference**: the latest published reference price per HS10 and origin among those passed in; "
        "scoring passes those published by D, a training set those published by its training date (applied "
        "to its earlier days too: reference prices are not dated per declaration).",
        "",
        "Incremental profiles: the daily run keeps the entity profile counts as of each day in "
        "`gold/profiles/reported_date=D/` and extends the previous day's state by the outcomes reported since; "
        "a full rebuild gives the same values (tested in `tests/test_features_incremental.py`).",
        "",
        f"{len(CATALOG)} features.",
        "",
        "| name | description | source | type | transformation | risk area |",
        "|---|---|---|---|---|---|",
    ]
    for f in CATALOG:
        cells = [f"`{f.name}`", f.description, f.source, f.type, f.transformation, f.risk_area]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# --- item values ---------------------------------------------------------------------------------------
_VALUE_COLUMNS = ("fob_usd", "cif_usd", "net_weight_kg", "quantity", "freight_usd", "insurance_usd", "duty_rate")


def _col(df: pd.DataFrame, c: str) -> np.ndarray:
    """A numeric column as float64 (a read-only view when it already is one: no copy of 10M rows)."""
    s = df[c]
    if s.dtype == np.float64:
        return s.to_numpy()
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _numeric(df: pd.DataFrame, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {c: _col(df, c) if rows is None else _col(df, c)[rows] for c in _VALUE_COLUMNS}


def _values(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Value features from the declared amounts (one definition for items and past items)."""
    fob, cif = c["fob_usd"], c["cif_usd"]
    kg = np.maximum(c["net_weight_kg"], 1e-3)
    qty = np.maximum(c["quantity"], 1.0)
    fob_pos = np.maximum(fob, 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = fob / kg
        duty = cif * c["duty_rate"]
        return {
            "log_cif": np.log1p(cif),
            "log_unit_value_kg": np.log(np.maximum(uv, 1e-6)),
            "log_unit_value_qty": np.log(np.maximum(fob / qty, 1e-6)),
            "cif_fob_ratio": cif / fob_pos,
            "freight_share": c["freight_usd"] / fob_pos,
            "insurance_share": c["insurance_usd"] / fob_pos,
            "duty_rate": c["duty_rate"],
            "taxes_over_cif": (duty + (cif + duty) * (IGV_RATE + IPM_RATE)) / np.maximum(cif, 1e-6),
            "kg_per_unit": kg / qty,
            "_uv": uv,
        }


def _by_unique(s: pd.Series, fn) -> np.ndarray:
    """Apply ``fn`` (Series of uniques -> float array) to the distinct values of a text column."""
    codes, uniq = encode(s)
    vals = np.asarray(fn(pd.Series(uniq, dtype="str")), dtype=float)
    return np.where(codes >= 0, vals[codes.clip(0)] if len(vals) else np.nan, np.nan)


def _num(s: pd.Series) -> np.ndarray:
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def base_features(items: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Features from the item itself, its declaration and reference prices (no history)."""
    v = _values(_numeric(items))
    f = pd.DataFrame({k: a for k, a in v.items() if not k.startswith("_")})
    hs_c, hs_u = encode(items.hs_code)
    or_c, or_u = encode(items.origin_country)
    r = np.full(len(items), np.nan)
    if len(reference) and len(items):
        ref = reference.drop_duplicates(["hs_code", "origin_country"], keep="last").set_index(
            ["hs_code", "origin_country"]).ref_unit_price_usd_kg
        pair = np.where((hs_c >= 0) & (or_c >= 0), hs_c * max(len(or_u), 1) + or_c, -1)
        up, inv = np.unique(pair, return_inverse=True)
        ok = up >= 0
        mi = pd.MultiIndex.from_arrays([hs_u[up[ok] // len(or_u)], or_u[up[ok] % len(or_u)]])
        ru = np.full(len(up), np.nan)
        ru[ok] = ref.reindex(mi).to_numpy(dtype=float)
        r = ru[inv.ravel()]
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


# --- past customs: unit-value windows and anomaly models -----------------------------------------------
_TIE_SEED, _TIE_MUL = np.uint64(0x243F6A8885A308D3), np.uint64(0x9E3779B97F4A7C15)


def _tie(cols: dict[str, np.ndarray]) -> np.ndarray:
    """A hash of an item's declared amounts: orders the items of one day independently of row order."""
    n = len(cols["fob_usd"])
    h = np.full(n, _TIE_SEED, dtype=np.uint64)
    tmp = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in _VALUE_COLUMNS:
            np.bitwise_xor(h, np.ascontiguousarray(cols[c], dtype=np.float64).view(np.uint64), out=h)
            np.multiply(h, _TIE_MUL, out=h)
            np.right_shift(h, np.uint64(29), out=tmp)
            np.bitwise_xor(h, tmp, out=h)
    return h


def _log_unit_values(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """log_unit_value_kg and log_unit_value_qty exactly as ``_values`` computes them, with two buffers."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v1 = np.maximum(c["net_weight_kg"], 1e-3)
        np.divide(c["fob_usd"], v1, out=v1)
        np.maximum(v1, 1e-6, out=v1)
        np.log(v1, out=v1)
        v2 = np.maximum(c["quantity"], 1.0)
        np.divide(c["fob_usd"], v2, out=v2)
        np.maximum(v2, 1e-6, out=v2)
        np.log(v2, out=v2)
    return v1, v2


@dataclass
class _Past:
    """Customs items lodged before the last query day, ordered by (day, tie)."""

    rows: np.ndarray  # positions in customs_history
    day: np.ndarray
    v1: np.ndarray  # log unit value per kg
    v2: np.ndarray  # log unit value per unit


def _day_tie_order(day: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Argsort by (day, top 47 bits of tie): one sort of a packed int64 key (days span < 2^16).

    Equal keys mean equal hashes of every declared amount: such items are interchangeable for the
    statistics, so the sort need not be stable."""
    d0 = int(day.min())
    if int(day.max()) - d0 >= 1 << 16:  # more than 179 years of history: sort on two keys
        return np.lexsort((tie, day))
    key = (tie >> np.uint64(17)).view(np.int64)
    key |= (day - d0) << 47
    return np.argsort(key)


def _past(customs_history: pd.DataFrame, last_day: int, h_day: np.ndarray) -> _Past:
    if not len(customs_history):
        z = np.zeros(0)
        return _Past(np.zeros(0, np.int64), np.zeros(0, np.int64), z, z)
    cols = _numeric(customs_history)  # views
    keep = h_day < last_day
    sub = None if keep.all() else np.flatnonzero(keep)
    t = _tie(cols)
    day = h_day
    if sub is not None:
        t, day = t[sub], h_day[sub]
    order = _day_tie_order(day, t) if len(day) else np.zeros(0, np.int64)
    del t
    rows = order if sub is None else sub[order]
    v1, v2 = _log_unit_values(cols)
    return _Past(rows, day[order], v1[rows], v2[rows])


def _mid(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    r = np.arange(len(s))
    lo, hi = ((c - 1) // 2).clip(0), (c // 2).clip(0, s.shape[1] - 1)
    return np.where(c > 0, (s[r, lo] + s[r, hi]) / 2, np.nan)


def _med_mad(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of each row, ignoring NaN (rows with no value: NaN)."""
    med = np.full(len(m), np.nan)
    mad = np.full(len(m), np.nan)
    gaps = np.isnan(m).any(axis=1)
    full = np.flatnonzero(~gaps)
    if len(full):  # full windows: two order statistics by partition, the same numbers as by sorting
        k = m.shape[1]
        kth = [(k - 1) // 2, k // 2]
        f = m[full]
        p = np.partition(f, kth, axis=1)
        md = (p[:, kth[0]] + p[:, kth[1]]) / 2
        p = np.partition(np.abs(f - md[:, None]), kth, axis=1)
        med[full], mad[full] = md, (p[:, kth[0]] + p[:, kth[1]]) / 2
    part = np.flatnonzero(gaps)
    if len(part):
        s = np.sort(m[part], axis=1)  # NaN last
        c = (~np.isnan(s)).sum(axis=1)
        md = _mid(s, c)
        med[part], mad[part] = md, _mid(np.sort(np.abs(s - md[:, None]), axis=1), c)
    return med, mad


def _window_stats(hg: np.ndarray, ngroups: int, day: np.ndarray, vals: list[np.ndarray], qg: np.ndarray,
                  qday: np.ndarray, d0: int):
    """Per query (group, day): past items of the group (count) and median/MAD of each value over the last
    UV_WINDOW of them lodged strictly before the day (``hg``, ``day``, ``vals`` in (day, tie) order)."""
    nq = len(qg)
    n = np.zeros(nq, dtype=np.int64)
    med = [np.full(nq, np.nan) for _ in vals]
    mad = [np.full(nq, np.nan) for _ in vals]
    ok = qg >= 0
    if not ok.any() or not len(hg):
        return n, med, mad
    need = np.zeros(ngroups + 1, dtype=bool)
    need[qg[ok] + 1] = True
    sel = np.flatnonzero(need[hg + 1])  # past items of the queried groups, still in (day, tie) order
    g = hg[sel]
    o = sel[counting_argsort(g, ngroups)]  # stable: each group's items stay in (day, tie) order
    keys = hg[o] << DAY_BITS
    keys |= day[o] - d0
    del sel, g
    uq, inv = np.unique((qg[ok] << DAY_BITS) | (qday[ok] - d0), return_inverse=True)
    inv = inv.ravel()
    end = np.searchsorted(keys, uq, side="left")
    start = np.searchsorted(keys, (uq >> DAY_BITS) << DAY_BITS, side="left")
    un = end - start
    umed = [np.full(len(uq), np.nan) for _ in vals]
    umad = [np.full(len(uq), np.nan) for _ in vals]
    ar = np.arange(UV_WINDOW)
    step = max(1, 2_000_000 // UV_WINDOW)
    has = np.flatnonzero(un > 0)
    for c0 in range(0, len(has), step):
        sel = has[c0:c0 + step]
        idx = end[sel, None] - UV_WINDOW + ar[None, :]
        inside = idx >= np.maximum(start[sel], end[sel] - UV_WINDOW)[:, None]
        rows = o[idx.clip(0)]
        for j, v in enumerate(vals):
            m = np.where(inside, v[rows], np.nan)
            umed[j][sel], umad[j][sel] = _med_mad(m)
    n[ok] = un[inv]
    for j in range(len(vals)):
        med[j][ok] = umed[j][inv]
        mad[j][ok] = umad[j][inv]
    return n, med, mad


def _valuation(hist_hs: pd.Series, hist_origin: pd.Series, past: _Past, q_hs: pd.Series, q_origin: pd.Series,
               q_day: np.ndarray, q_v1: np.ndarray, q_v2: np.ndarray) -> dict[str, np.ndarray]:
    """Robust z-scores of unit values against past items, backing off HS10 -> HS6 -> HS4 (x origin) -> HS4."""
    nq = len(q_day)
    out = {"unit_value_robust_z": np.full(nq, np.nan), "unit_value_qty_robust_z": np.full(nq, np.nan),
           "unit_value_past_log_ratio": np.full(nq, np.nan), "unit_value_ref_level": np.full(nq, 4.0),
           "unit_value_ref_n": np.zeros(nq)}
    if not nq or not len(past.rows):
        return out
    h10, hs_u = encode(hist_hs)
    h10 = h10[past.rows]
    h10[~np.isfinite(past.v1)] = -1  # no unit value: in no group
    o_u = pd.Index(pd.unique(q_origin.dropna().astype("str")), dtype="str")
    ho = index_in(hist_origin, o_u)[past.rows]
    hs_s = pd.Series(hs_u, dtype="str")
    p6, u6 = encode(hs_s.str[:6])
    p4, u4 = encode(hs_s.str[:4])
    p6, p4 = np.append(p6, -1), np.append(p4, -1)  # index -1 (no HS10 code) -> -1
    no = max(len(o_u), 1)
    q10, qo = index_in(q_hs, hs_u), index_in(q_origin, o_u)
    q6, q4 = index_in(q_hs.str[:6], u6), index_in(q_hs.str[:4], u4)

    def pair(a, b):
        out = a * no
        out += b
        out[(a < 0) | (b < 0)] = -1
        return out

    def level(lvl: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(past item group codes, query group codes, number of groups) of a back-off level."""
        if lvl == 0:
            return pair(h10, ho), pair(q10, qo), len(hs_u) * no
        if lvl == 1:
            return pair(p6[h10], ho), pair(q6, qo), len(u6) * no
        if lvl == 2:
            return pair(p4[h10], ho), pair(q4, qo), len(u4) * no
        return p4[h10], q4, len(u4)

    vals = [past.v1, past.v2]
    d0 = int(min(past.day.min(), q_day.min()))
    todo = np.ones(nq, dtype=bool)
    for lvl in range(len(UV_LEVELS)):
        if not todo.any():
            break
        hg, qg, ng = level(lvl)
        qsel = np.where(todo, qg, -1).astype(np.int64)
        n, med, mad = _window_stats(hg, max(int(ng), 1), past.day, vals, qsel, q_day, d0)
        use = todo & (n >= UV_MIN_GROUP)
        with np.errstate(invalid="ignore"):
            for name, x, j in (("unit_value_robust_z", q_v1, 0), ("unit_value_qty_robust_z", q_v2, 1)):
                scale = np.maximum(MAD_SCALE * mad[j], MAD_FLOOR)
                out[name] = np.where(use, (x - med[j]) / scale, out[name])
        out["unit_value_past_log_ratio"] = np.where(use, q_v1 - med[0], out["unit_value_past_log_ratio"])
        out["unit_value_ref_level"] = np.where(use, float(lvl), out["unit_value_ref_level"])
        out["unit_value_ref_n"] = np.where(use, np.minimum(n, UV_WINDOW).astype(float), out["unit_value_ref_n"])
        todo &= ~use
        del hg
    return out


def _anomaly_matrix(v: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> np.ndarray:
    cols = []
    for name in ANOMALY_INPUTS:
        if name in z:
            a = z[name]
        elif name == "log_kg_per_unit":
            a = np.log(v["kg_per_unit"])
        else:
            a = v[name]
        cols.append(np.clip(np.nan_to_num(np.asarray(a, dtype=float), nan=0.0, posinf=50.0, neginf=-50.0), -50, 50))
    return np.column_stack(cols) if cols else np.zeros((0, 0))


_MODELS: OrderedDict[str, object] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _iforest(x: np.ndarray):
    """Isolation Forest fit on ``x`` (cached by content: the same past data gives the same model)."""
    key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(n_estimators=ANOMALY_TREES, max_samples=256, random_state=ANOMALY_SEED,
                                n_jobs=1).fit(x)
    with _MODELS_LOCK:
        _MODELS[key] = model
        _MODELS.move_to_end(key)
        while len(_MODELS) > 24:
            _MODELS.popitem(last=False)
    return model


def valuation_and_anomaly(items: pd.DataFrame, customs_history: pd.DataFrame, base: pd.DataFrame,
                          h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Unit-value z-scores against past items, and the monthly Isolation Forest score."""
    n = len(items)
    q_day = to_days(items.declaration_date)
    out = pd.DataFrame(index=range(n))
    if not n:
        for name in ("unit_value_robust_z", "unit_value_qty_robust_z", "unit_value_past_log_ratio",
                     "unit_value_ref_level", "unit_value_ref_n", "value_anomaly_score"):
            out[name] = np.zeros(0)
        return out
    if h_day is None:
        h_day = to_days(customs_history.declaration_date)
    past = _past(customs_history, int(q_day.max()), h_day)
    # Anomaly windows: calendar months of the items; each fit on the last items lodged before the month.
    month0 = q_day.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    windows = np.unique(month0)
    samples = {}
    for w in windows:
        p = int(np.searchsorted(past.day, w, side="left"))
        if p >= ANOMALY_MIN_ROWS:
            samples[int(w)] = np.arange(max(0, p - ANOMALY_FIT_ROWS), p)
    spos = np.concatenate(list(samples.values())) if samples else np.zeros(0, dtype=np.int64)
    srows = past.rows[spos]
    hs_all = pd.concat([items.hs_code.reset_index(drop=True),
                        customs_history.hs_code.iloc[srows].reset_index(drop=True)], ignore_index=True)
    or_all = pd.concat([items.origin_country.reset_index(drop=True),
                        customs_history.origin_country.iloc[srows].reset_index(drop=True)], ignore_index=True)
    qd_all = np.concatenate([q_day, past.day[spos]])
    v1 = np.concatenate([base.log_unit_value_kg.to_numpy(float), past.v1[spos]])
    v2 = np.concatenate([base.log_unit_value_qty.to_numpy(float), past.v2[spos]])
    val = _valuation(customs_history.hs_code, customs_history.origin_country, past, hs_all.astype("str"),
                     or_all.astype("str"), qd_all, v1, v2)
    for k, a in val.items():
        out[k] = a[:n]
    score = np.full(n, np.nan)
    item_v = {k: base[k].to_numpy(float) for k in base.columns}
    item_z = {k: val[k][:n] for k in ("unit_value_robust_z", "unit_value_qty_robust_z")}
    off = n
    for w, pos in samples.items():
        sl = slice(off, off + len(pos))
        off += len(pos)
        sv = _values(_numeric(customs_history, past.rows[pos]))
        sz = {k: val[k][sl] for k in ("unit_value_robust_z", "unit_value_qty_robust_z")}
        model = _iforest(_anomaly_matrix(sv, sz))
        mine = np.flatnonzero(month0 == w)
        xi = _anomaly_matrix({k: a[mine] for k, a in item_v.items()}, {k: a[mine] for k, a in item_z.items()})
        score[mine] = -model.score_samples(xi)
    out["value_anomaly_score"] = score
    return out


# --- importer activity ---------------------------------------------------------------------------------
def _grouped_day_counts(code: np.ndarray, ngroups: int, day: np.ndarray, d0: int):
    """Sorted unique keys (code << DAY_BITS | day - d0), their counts and cumulative counts per code."""
    order = counting_argsort(day - d0, int(day.max() - d0) + 1) if len(day) else np.zeros(0, np.int64)
    order = order[counting_argsort(code[order], ngroups)]
    keys = (code[order] << DAY_BITS) | (day[order] - d0)
    if not len(keys):
        return keys, keys, keys
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    uk = keys[start]
    cnt = np.diff(np.r_[start, len(keys)])
    grp = uk >> DAY_BITS
    first = np.r_[True, grp[1:] != grp[:-1]]
    gfirst = np.maximum.accumulate(np.where(first, np.arange(len(uk)), 0))
    cs = np.cumsum(cnt)
    cum = cs - np.where(gfirst > 0, cs[gfirst - 1], 0)
    return uk, cnt, cum


def _importer_codes(items: pd.DataFrame, customs_history: pd.DataFrame):
    """(importers of the items, their codes, the history's codes against them: -1 for other importers)."""
    uq = pd.Index(pd.unique(items.importer_id.dropna().astype("str")), dtype="str")
    return uq, index_in(items.importer_id, uq), index_in(customs_history.importer_id, uq)


def history_features(items: pd.DataFrame, customs_history: pd.DataFrame, codes=None,
                     h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Importer activity from declarations lodged strictly before the item's day."""
    n = len(items)
    q_day = to_days(items.declaration_date)
    out = pd.DataFrame(index=range(n))
    uq, qc, hc = codes if codes is not None else _importer_codes(items, customs_history)
    past = np.zeros(n)
    c30 = np.zeros(n)
    first = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    if n and len(customs_history):
        hd = to_days(customs_history.declaration_date) if h_day is None else h_day
        keep = (hc >= 0) & (hd < q_day.max())
        hc, hd = hc[keep], hd[keep]
        if len(hd):
            d0 = int(min(hd.min(), q_day.min())) - RECENT_DAYS - 1
            uk, _, cum = _grouped_day_counts(hc, len(uq), hd, d0)
            grp = uk >> DAY_BITS
            base = qc << DAY_BITS
            pos = np.searchsorted(uk, base | (q_day - d0), side="left") - 1
            found = (qc >= 0) & (pos >= 0) & (grp[pos.clip(0)] == qc)
            pc = pos.clip(0)
            past = np.where(found, cum[pc], 0).astype(float)
            last = np.where(found, (uk[pc] & ((1 << DAY_BITS) - 1)) + d0, -1)
            g0 = np.searchsorted(uk, base, side="left").clip(0, len(uk) - 1)
            first = np.where(found, (uk[g0] & ((1 << DAY_BITS) - 1)) + d0, -1)
            p30 = np.searchsorted(uk, base | (q_day - RECENT_DAYS - d0), side="left") - 1
            f30 = found & (p30 >= 0) & (grp[p30.clip(0)] == qc)
            c30 = past - np.where(f30, cum[p30.clip(0)], 0)
    out["importer_past_items"] = past
    out["importer_days_active"] = np.where(found, q_day - first, -1).astype(float)
    out["importer_is_new"] = (~found).astype(float)
    out["importer_items_30d"] = np.asarray(c30, dtype=float)
    out["importer_days_since_last"] = np.where(found, q_day - last, -1).astype(float)
    return out


# --- tax returns against customs -----------------------------------------------------------------------
def _month_index(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def tax_features(items: pd.DataFrame, tax: pd.DataFrame, customs_history: pd.DataFrame,
                 fx: pd.DataFrame, codes=None, h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Latest tax return filed by the day against the importer's own customs imports of that month."""
    n = len(items)
    names = ("tax_purchases_over_imports", "tax_igv_credit_over_import_igv", "tax_sales_over_purchases")
    out = pd.DataFrame({k: np.full(n, np.nan) for k in names})
    if tax.empty or not n:
        return out
    q_day = to_days(items.declaration_date)
    uq, qc, hc = codes if codes is not None else _importer_codes(items, customs_history)
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
        cif = _col(customs_history, "cif_usd")[keep]
        duty = _col(customs_history, "duty_rate")[keep]
        imports = np.bincount(cell, weights=np.nan_to_num(cif), minlength=len(uq) * nmon).reshape(len(uq), nmon)
        igv_base = np.bincount(cell, weights=np.nan_to_num(cif * (1 + duty)),
                               minlength=len(uq) * nmon).reshape(len(uq), nmon)
    usd = fx[fx.currency == "USD"] if "currency" in fx.columns else fx
    rate = usd.groupby(_month_index(to_days(usd.rate_date))).pen_per_unit.median() if len(usd) else pd.Series()
    month_ok = (tm >= nm_lo) & (tm <= nm_hi) & (imports.shape[1] > 0)
    col = (tm - nm_lo).clip(0, max(imports.shape[1] - 1, 0))
    imp_usd = np.where(month_ok, imports[tc, col] if imports.shape[1] else 0.0, 0.0)
    igv_usd = np.where(month_ok, igv_base[tc, col] if igv_base.shape[1] else 0.0, 0.0) * IGV_RATE
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


# --- the feature matrix --------------------------------------------------------------------------------
def build_features(items: pd.DataFrame, *, customs_history: pd.DataFrame, outcomes: pd.DataFrame,
                   reference: pd.DataFrame, tax: pd.DataFrame, fx: pd.DataFrame,
                   profile_state: ProfileState | None = None) -> pd.DataFrame:
    """Feature matrix (columns FEATURES) aligned with ``items`` (reset index).

    ``customs_history`` and ``outcomes`` may hold data after the items' dates: the as-of joins keep
    only what each item's day could see, so features never depend on what came later.
    ``profile_state``: entity profiles as of the items' day (all items of that one day), e.g. from
    ``profiles.update_profiles``; by default they are rebuilt from ``outcomes``.
    """
    items = items.reset_index(drop=True)
    base = base_features(items, reference)
    h_day = to_days(customs_history.declaration_date)
    # Two independent halves on the two cores (numpy, Arrow and scikit-learn release the GIL).
    with ThreadPoolExecutor(max_workers=2) as pool:
        valuation = pool.submit(valuation_and_anomaly, items, customs_history, base, h_day)
        codes = _importer_codes(items, customs_history)
        parts = [
            history_features(items, customs_history, codes, h_day),
            tax_features(items, tax, customs_history, fx, codes, h_day),
        ]
        if profile_state is not None:
            parts.append(state_features(items, profile_state))
        else:
            parts.append(profile_features(items, labelled_outcomes(outcomes, customs_history)))
        parts += [base, valuation.result()]
    cols = {}
    for part in parts:
        cols.update({c: part[c].to_numpy(dtype="float64") for c in part.columns})
    return pd.DataFrame({name: cols[name] for name in FEATURES})


def item_frame(items: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """Declared columns and features side by side (what rules and reasons read); declared values win."""
    items = items.reset_index(drop=True)
    return pd.concat([items, X.drop(columns=list(items.columns.intersection(X.columns)))], axis=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sunat_pipeline.features.build", description="The feature catalog.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="print docs/features.md (default)")
    g.add_argument("--csv", action="store_true", help="print the catalog as CSV (what MLflow runs log)")
    a = p.parse_args(argv)
    sys.stdout.write(catalog_frame().to_csv(index=False) if a.csv else catalog_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
