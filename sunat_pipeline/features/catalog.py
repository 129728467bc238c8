"""The feature catalog: the single description of every feature, and which features a specification makes.

Each :class:`Feature` says what it is, where it comes from, how it is computed, and its ``inputs``: the sources
(``enforcement``, ``tax``, ``reference_prices``, ``exchange_rates``) and canonical customs columns
(``customs.<column>``) it needs. An extract without one of them (``sunat-pipeline evaluate`` on foreign data)
has the feature absent (:func:`absent_features`), not an error.

A :class:`FeatureSpec` says which configurable features exist: the entity profiles (keys, crosses, smoothing;
``features.history.ProfileSpec``) and peer-deviation groups (``features.valuation``). The default spec is the
daily pipeline's: ``CATALOG`` / ``FEATURES``, in this order. ``python -m sunat_pipeline.features.catalog
--markdown > docs/features.md`` writes the modelers' page, and training logs the catalog with every model.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

import pandas as pd

from sunat_pipeline.features.activity import RECENT_DAYS
from sunat_pipeline.features.anomaly import (
    ANOMALY_FIT_ROWS,
    ANOMALY_INPUTS,
    ANOMALY_MIN_ROWS,
    ANOMALY_SEED,
    ANOMALY_TREES,
)
from sunat_pipeline.features.arrays import HS_LEVELS
from sunat_pipeline.features.history import DEFAULT_PROFILES, ProfileSpec
from sunat_pipeline.features.valuation import (
    MAD_FLOOR,
    MAD_SCALE,
    PEER_VALUES,
    UV_LEVELS,
    UV_MIN_GROUP,
    UV_WINDOW,
    peer_name,
)


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    source: str
    type: str  # continuous, ratio, binary, count, ordinal, categorical code, days, score
    transformation: str
    risk_area: str
    inputs: tuple[str, ...]  # sources and customs.<column> it needs


@dataclass(frozen=True)
class FeatureSpec:
    """Which configurable features exist: entity profiles, and peer-deviation groups (none by default)."""

    profiles: ProfileSpec = DEFAULT_PROFILES
    peer_groups: tuple[tuple[str, ...], ...] = ()


DEFAULT_SPEC = FeatureSpec()


def C(*columns: str) -> tuple[str, ...]:  # noqa: N802 - reads as the catalog's shorthand for customs columns
    return tuple(f"customs.{c}" for c in columns)


def _key_inputs(key: str) -> tuple[str, ...]:
    return C("hs_code" if key in HS_LEVELS else key)


_UV = C("fob_usd", "net_weight_kg", "origin_country")
_IMP = C("importer_id")
_PROFILE_NAMES = {"importer_id": "importer", "declarant_id": "declarant (customs broker)",
                  "supplier_id": "foreign supplier", "hs6": "HS6 subheading", "origin_country": "origin country",
                  "customs_office": "customs office", "office_importer": "office x importer pair",
                  "hs6_origin": "HS6 x origin pair"}
_KNOWN = "outcomes with reported_date <= D, each inspected item once with its latest result"
_TAX_RUN = ("taxpayers", "igv_returns", *_IMP)  # what the monthly tax run needs to score and list
_PUBLISHED = "published on the run date, day tax_audit.run_day of M+1, strictly before D"
_WINDOW = (f"last {UV_WINDOW} items lodged strictly before D in the first group with >= {UV_MIN_GROUP} of them: "
           + " -> ".join(UV_LEVELS))


def _profile_name(kind: str, spec: ProfileSpec) -> str:
    if kind in _PROFILE_NAMES:
        return _PROFILE_NAMES[kind]
    cross = spec.cross_map.get(kind)
    if cross:
        return f"{_profile_name(cross[0], spec)} x {_profile_name(cross[1], spec)} pair"
    return kind.removeprefix("x_").replace("_", " ")


def _profile_catalog(spec: ProfileSpec) -> list[Feature]:
    s = f"{spec.smoothing:g}"
    inputs = {k: ("enforcement", *_key_inputs(k)) for k in spec.keys}
    inputs |= {c: ("enforcement", *dict.fromkeys([*_key_inputs(a), *_key_inputs(b)])) for c, a, b, _ in spec.crosses}
    out = [Feature(f"{k}_n_insp", f"inspections of this {_profile_name(k, spec)} with a known outcome", "enforcement",
                   "count", f"count of {_KNOWN}", "entity risk", inputs[k]) for k in spec.kinds]
    out += [Feature(f"{k}_fraud_rate", f"smoothed fraud rate of this {_profile_name(k, spec)}", "enforcement",
                    "ratio", f"(frauds + {s} * prior) / (inspections + {s}); prior = "
                    "(all frauds + 1) / (all inspections + 10); " + _KNOWN, "entity risk", inputs[k])
            for k in spec.keys]
    out += [Feature(f"{c}_fraud_rate", f"smoothed fraud rate of this {_profile_name(c, spec)}", "enforcement", "ratio",
                    f"(frauds + {s} * {p}_fraud_rate) / (inspections + {s}): shrunk towards "
                    f"the {_profile_name(p, spec)}'s rate; " + _KNOWN, "entity risk", inputs[c])
            for c, _, _, p in spec.crosses]
    return out


def _peer_catalog(groups: tuple[tuple[str, ...], ...]) -> list[Feature]:
    out = []
    for g in groups:
        members = " x ".join(g)
        cols = tuple(dict.fromkeys(c for k in g for c in _key_inputs(k)))
        for value, (formula, needs) in PEER_VALUES.items():
            out.append(Feature(
                peer_name(value, g), f"{value} against the items of the same {members} lodged before the day",
                "customs (past)", "continuous", f"{formula} - its median over the last {UV_WINDOW} items of the same "
                f"{members} lodged strictly before D; NaN if none", "valuation (peers)",
                tuple(dict.fromkeys([*C(*needs), *cols]))))
    return out


def _static(profiles: list[Feature]) -> list[Feature]:
    return [
        # value
        Feature("log_cif", "declared CIF value", "customs", "continuous", "log(1 + cif_usd)", "revenue",
                C("cif_usd")),
        Feature("log_unit_value_kg", "declared FOB value per kg", "customs", "continuous",
                "log(max(fob_usd / max(net_weight_kg, 0.001), 1e-6))", "undervaluation",
                C("fob_usd", "net_weight_kg")),
        Feature("log_unit_value_qty", "declared FOB value per declared unit", "customs", "continuous",
                "log(max(fob_usd / max(quantity, 1), 1e-6))", "undervaluation",
                C("fob_usd", "quantity")),
        Feature("cif_fob_ratio", "CIF over FOB", "customs", "ratio", "cif_usd / max(fob_usd, 1e-6)", "undervaluation",
                C("cif_usd", "fob_usd")),
        Feature("freight_share", "freight over FOB", "customs", "ratio", "freight_usd / max(fob_usd, 1e-6)",
                "undervaluation",
                C("freight_usd", "fob_usd")),
        Feature("insurance_share", "insurance over FOB", "customs", "ratio", "insurance_usd / max(fob_usd, 1e-6)",
                "undervaluation",
                C("insurance_usd", "fob_usd")),
        Feature("duty_rate", "ad valorem duty rate declared", "customs", "ratio", "as declared", "misclassification",
                C("duty_rate")),
        Feature("taxes_over_cif", "duty, IGV and IPM over CIF", "customs", "ratio",
                "(cif * duty_rate + (cif + cif * duty_rate) * (igv_rate + ipm_rate)) / cif; rates from settings.tax",
                "revenue",
                C("cif_usd", "duty_rate")),
        Feature("kg_per_unit", "declared net kg per unit", "customs", "continuous",
                "max(net_weight_kg, 0.001) / max(quantity, 1)", "quantity",
                C("net_weight_kg", "quantity")),
        # valuation
        Feature("log_ref_ratio", "unit value per kg against the published reference price for HS10 and origin",
                "reference", "continuous", "log((fob_usd / net_weight_kg) / ref_unit_price_usd_kg) with the price in "
                "force on D (latest issue with effective_date <= D); NaN without one", "undervaluation",
                ("reference_prices", *_UV, *C("declaration_date"))),
        Feature("unit_value_robust_z", "robust z-score of the unit value per kg against past declarations of the same "
                "goods and origin", "customs (past)", "continuous",
                f"(log_unit_value_kg - median) / max({MAD_SCALE} * MAD, {MAD_FLOOR}) over the {_WINDOW}; NaN if no "
                "group is large enough", "undervaluation",
                _UV),
        Feature("unit_value_qty_robust_z", "robust z-score of the unit value per declared unit, same window",
                "customs (past)", "continuous",
                f"(log_unit_value_qty - median) / max({MAD_SCALE} * MAD, {MAD_FLOOR}) over the same window",
                "undervaluation / quantity",
                C("fob_usd", "quantity", "origin_country")),
        Feature("unit_value_past_log_ratio", "unit value per kg against the median of past declarations",
                "customs (past)", "continuous", "log_unit_value_kg - median of the same window (log of the ratio)",
                "undervaluation",
                _UV),
        Feature("unit_value_ref_level", "which group the past-price window comes from", "customs (past)", "ordinal",
                "0 HS10 x origin, 1 HS6 x origin, 2 HS4 x origin, 3 HS4 (any origin), 4 none large enough",
                "undervaluation",
                _UV),
        Feature("unit_value_ref_n", "past items in the window used", "customs (past)", "count",
                f"min(past items of the group, {UV_WINDOW}); 0 if no group is large enough", "undervaluation",
                _UV),
        # declared attributes
        Feature("has_permit", "a permit number is declared", "customs", "binary", "permit_no not empty",
                "prohibited goods",
                C("permit_no")),
        Feature("permit_valid", "the declared permit is valid in the permit register as known before D",
                "permits", "binary",
                "1 if the quoted permit_no was registered before D, is the importer's, covers the HS10 code, "
                "valid_from <= D <= valid_to and not REVOKED with status_date < D (its latest version set before "
                "D); 0 if quoted but not; NaN if none is quoted or no register is loaded", "prohibited goods",
                ("permits", *C("permit_no", "importer_id", "hs_code"))),
        Feature("origin_differs_supplier", "declared origin differs from the supplier's country", "customs", "binary",
                "origin_country != supplier_country", "origin",
                C("origin_country", "supplier_country")),
        Feature("hs2", "HS chapter", "customs", "categorical code", "first 2 digits of hs_code as a number",
                "classification",
                C("hs_code")),
        Feature("hs4", "HS heading", "customs", "categorical code", "first 4 digits of hs_code as a number",
                "classification",
                C("hs_code")),
        Feature("office_code", "customs office code", "customs", "categorical code", "customs_office as a number",
                "office",
                C("customs_office")),
        Feature("n_items", "items in the declaration", "customs", "count", "items of the same declaration_id",
                "complexity",
                C("declaration_id")),
        # entity profiles
        *profiles,
        # history
        Feature("importer_past_items", "items the importer lodged before the day", "customs (past)", "count",
                "items with declaration_date < D", "history",
                _IMP),
        Feature("importer_days_active", "days since the importer's first declaration", "customs (past)", "days",
                "D - first declaration_date before D; -1 if none", "history",
                _IMP),
        Feature("importer_is_new", "no declaration by this importer before the day", "customs (past)", "binary",
                "importer_past_items == 0", "history",
                _IMP),
        Feature("importer_items_30d", f"items the importer lodged in the {RECENT_DAYS} days before the day",
                "customs (past)", "count", f"items with D - {RECENT_DAYS} <= declaration_date < D", "history",
                _IMP),
        Feature("importer_days_since_last", "days since the importer's previous declaration", "customs (past)", "days",
                "D - last declaration_date before D; -1 if none", "history",
                _IMP),
        # tax-customs consistency
        Feature("tax_purchases_over_imports", "declared purchases in the importer's latest tax return over its customs "
                "imports (CIF) of that month", "tax + customs", "ratio",
                "purchases_pen / (sum cif_usd of the month * that month's median PEN/USD); latest return with "
                "filing_date <= D; NaN without imports", "tax-customs consistency",
                ("tax", "exchange_rates", *C("importer_id", "cif_usd"))),
        Feature("tax_igv_credit_over_import_igv", "IGV credit claimed in the latest tax return over the IGV its "
                "imports of that month paid at customs", "tax + customs", "ratio",
                "igv_credit_pen / (sum (cif + cif * duty_rate) * igv_rate of the month in PEN); latest return "
                "with filing_date <= D", "tax-customs consistency",
                ("tax", "exchange_rates", *C("importer_id", "cif_usd", "duty_rate"))),
        Feature("tax_sales_over_purchases", "sales over purchases in the latest tax return (margin)", "tax", "ratio",
                "sales_pen / purchases_pen; latest return with filing_date <= D", "tax-customs consistency",
                ("tax", *_IMP)),
        # tax risk: the monthly tax run's tables published before D (features/taxrisk.py)
        Feature("tax_risk_score", "the importer's tax audit risk score in the latest monthly tax run",
                "tax audit run", "score", "combined_score in gold/tax_scores of the latest month M published "
                f"before D ({_PUBLISHED}); NaN if none, or the importer was not eligible that month",
                "tax risk", _TAX_RUN),
        Feature("tax_risk_rank_share", "the importer's rank by tax audit risk, as a share of the eligible",
                "tax audit run", "ratio", "population_rank / eligible taxpayers of the same month M (1 / eligible = "
                "riskiest); NaN as tax_risk_score", "tax risk", _TAX_RUN),
        Feature("tax_audit_listed", "the importer is a risk pick of the latest monthly tax audit list",
                "tax audit run", "binary", "1 if on gold/tax_audit_list of month M with selection_reason risk, 0 if "
                "not (a random pick counts 0: it says nothing of risk); NaN if no list published before D",
                "tax risk", _TAX_RUN),
        Feature("tax_audits_closed", "tax audits of the importer closed and known before the day", "tax audit run",
                "count", "audits in gold/tax_audit_outcomes of the runs published before D (each from the first run "
                "that knew it); NaN if no run published before D", "tax risk", ("tax_audits", *_IMP)),
        Feature("tax_audits_assessed", "those tax audits that assessed tax", "tax audit run", "count",
                "audits counted in tax_audits_closed with result ASSESSED; NaN as tax_audits_closed", "tax risk",
                ("tax_audits", *_IMP)),
        # calendar
        Feature("day_of_week", "day of week of lodgement", "customs", "ordinal", "0 Monday .. 6 Sunday", "calendar",
                C("declaration_date")),
        Feature("month", "month of lodgement", "customs", "ordinal", "1 .. 12", "calendar",
                C("declaration_date")),
        # anomaly
        Feature("value_anomaly_score", "how unusual the item's values are (Isolation Forest)", "customs (past)",
                "score", f"-score_samples of an Isolation Forest ({ANOMALY_TREES} trees, seed {ANOMALY_SEED}) on "
                f"{', '.join(ANOMALY_INPUTS)}, fit per calendar month on the last {ANOMALY_FIT_ROWS} items lodged "
                f"before the month began; higher = more anomalous; NaN with < {ANOMALY_MIN_ROWS} such items",
                "undervaluation / unknown patterns",
                C("fob_usd", "net_weight_kg")),
    ]


def catalog(spec: FeatureSpec = DEFAULT_SPEC) -> list[Feature]:
    """Every feature a specification makes, in the feature matrix's column order."""
    return [*_static(_profile_catalog(spec.profiles)), *_peer_catalog(spec.peer_groups)]


CATALOG: list[Feature] = catalog()
FEATURES = [f.name for f in CATALOG]


def feature_names(spec: FeatureSpec = DEFAULT_SPEC) -> list[str]:
    return FEATURES if spec == DEFAULT_SPEC else [f.name for f in catalog(spec)]


def absent_features(features: list[Feature], available: set[str]) -> dict[str, list[str]]:
    """Features whose inputs are not all available (sources and ``customs.<column>``), with the missing ones."""
    out = {}
    for f in features:
        missing = [i for i in f.inputs if i not in available]
        if missing:
            out[f.name] = missing
    return out


def catalog_frame(features: list[Feature] | None = None) -> pd.DataFrame:
    rows = [asdict(f) | {"inputs": ", ".join(f.inputs)} for f in (CATALOG if features is None else features)]
    return pd.DataFrame(rows)


def catalog_markdown() -> str:
    """docs/features.md: the catalog as a page (generated; ``python -m sunat_pipeline.features.catalog --markdown``)."""
    lines = [
        "# Feature catalog",
        "",
        "<!-- Generated by `python -m sunat_pipeline.features.catalog --markdown > docs/features.md`; do not edit "
        "by hand."
        " -->",
        "",
        "Every feature of a declaration item lodged on day **D**, as the model, the rules engine "
        "(`config/rules.yaml`) and the reasons see it. Point in time: customs history lodged strictly before D, "
        "outcomes reported on or before D, tax returns filed on or before D (see `sunat_pipeline/features/`). "
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
        "- **tax audit run**: the monthly tax run's tables (scores, audit list, audit outcomes) of the months "
        "published strictly before D; a month is published on its run date, day `tax_audit.run_day` of the next "
        "month (docs/tax.md, \"Customs and tax inform each other\"); NaN when none was published (no tax side). "
        "The other direction, customs offences and customs risk in the monthly tax features, is in docs/tax.md.",
        "- **anomaly**: one Isolation Forest per calendar month, fit on the last "
        f"{ANOMALY_FIT_ROWS} items lodged before the month began (seed {ANOMALY_SEED}): no item's score depends "
        "on its own day or later.",
        "- **reference**: the price in force on D: per HS10 and origin, the latest issue whose date "
        "(`effective_date`, the issue's `valid_from`) is on or before D; no issue in force yet gives NaN. "
        "Training and scoring share this as-of join, so a later issue never changes an earlier day's features.",
        "",
        "Incremental profiles: the daily run keeps the entity profile counts as of each day in "
        "`gold/profiles/reported_date=D/` and extends the previous day's state by the outcomes reported since; "
        "a full rebuild gives the same values (tested in `tests/test_features_incremental.py`).",
        "",
        "Inputs: the sources (`enforcement`, `tax`, `reference_prices`, `exchange_rates`) and canonical customs "
        "columns (`customs.<column>`) a feature needs. An extract that lacks one (`sunat-pipeline evaluate` on "
        "foreign data, docs/models.md) leaves the feature out and lists it in its results. `evaluate` may also "
        "ask for more entity profiles (keys, crosses, another smoothing) and peer deviations (a value against the "
        "median of its group's recent past items); the daily pipeline uses the catalog below.",
        "",
        f"{len(CATALOG)} features.",
        "",
        "| name | description | source | type | transformation | risk area | inputs |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in CATALOG:
        cells = [f"`{f.name}`", f.description, f.source, f.type, f.transformation, f.risk_area, ", ".join(f.inputs)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sunat_pipeline.features.catalog", description="The feature catalog.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--markdown", action="store_true", help="print docs/features.md (default)")
    g.add_argument("--csv", action="store_true", help="print the catalog as CSV (what MLflow runs log)")
    a = p.parse_args(argv)
    sys.stdout.write(catalog_frame().to_csv(index=False) if a.csv else catalog_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
