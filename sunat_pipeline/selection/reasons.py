"""Reasons in words: why a declaration was selected, which rules hit an item, and the model's top
contributions phrased so an officer can check them against the declaration (docs/selection.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sunat_pipeline.features.catalog import CATALOG
from sunat_pipeline.selection.rules import RuleSet

_DESCRIPTIONS = {f.name: f.description for f in CATALOG}
_ENTITY = {"importer_id": "importer {importer_id}", "declarant_id": "customs broker {declarant_id}",
           "supplier_id": "supplier {supplier_id}", "hs6": "HS subheading {hs6}",
           "origin_country": "origin {origin_country}",
           "customs_office": "customs office {customs_office}",
           "office_importer": "importer {importer_id} at customs office {customs_office}",
           "hs6_origin": "HS subheading {hs6} from {origin_country}"}
_SUBJECT = {"importer_id": "importer {importer_id}", "declarant_id": "declarations by customs broker {declarant_id}",
            "supplier_id": "goods from supplier {supplier_id}", "hs6": "goods of HS subheading {hs6}",
            "origin_country": "goods from origin {origin_country}",
            "customs_office": "declarations at customs office {customs_office}",
            "office_importer": "importer {importer_id} at customs office {customs_office}",
            "hs6_origin": "goods of HS subheading {hs6} from {origin_country}"}
_UV_LEVELS = ("the same HS10 code and origin", "the same HS6 subheading and origin", "the same HS4 heading and origin",
              "the same HS4 heading (any origin)")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f}%"


def _prob(x: float) -> str:
    """A probability as officers read it: whole percents, one decimal under 10%, never a bare 0%."""
    x = float(x)
    if x < 0.0005:
        return "<0.1%"
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def _entity(key: str, item: dict, template: str = "") -> str:
    vals = {}
    for k in ("importer_id", "declarant_id", "supplier_id", "origin_country", "customs_office"):
        v = item.get(k)
        vals[k] = "?" if v in (None, "") or (isinstance(v, float) and math.isnan(v)) else v
    vals["hs6"] = item.get("hs6") or (str(item["hs_code"])[:6] if item.get("hs_code") else "?")
    return (template or _ENTITY[key]).format(**vals)


def _side(x: float) -> str:
    return "below" if x < 0 else "above"


def _times(n: float, what: str) -> str:
    n = int(n)
    return f"{n} {what}{'' if n == 1 else 's'}"


def explain(feature: str, value: float, item: dict) -> str:
    """One model contribution in words an officer can check against the declaration.

    Every feature of ``features.CATALOG`` has its own phrase; ``item`` holds the item's declared columns
    and features (for the HS code, origin, entities and the counts behind a rate). A feature unknown here
    reads "<its catalogue description>: <value>".
    """
    hs, origin = item.get("hs_code", "?"), item.get("origin_country", "?")
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    fin = math.isfinite(v)
    base = feature.removesuffix("_fraud_rate").removesuffix("_n_insp")
    if base in _ENTITY and feature != base:
        if feature.endswith("_n_insp"):
            who = _entity(base, item, _SUBJECT[base])
            n = int(v) if fin else 0
            return f"no past inspection of {who}" if n == 0 else f"{_times(n, 'past inspection')} of {who} " \
                "with known outcome"
        if not fin:
            return f"no offence rate known for {_entity(base, item)}"
        n = item.get(f"{base}_n_insp", 0)
        n = int(n) if n is not None and math.isfinite(float(n)) else 0
        if n > 0:
            return f"{_entity(base, item)} has an offence rate of {v * 100:.0f}% over {n} past inspections"
        return f"{_entity(base, item)} has no inspection history yet (overall offence rate of {v * 100:.0f}% assumed)"
    missing = {
        "log_ref_ratio": f"no reference price for HS {hs} from {origin}",
        "unit_value_robust_z": f"too few past declarations of HS {hs} to compare its unit value",
        "unit_value_qty_robust_z": f"too few past declarations of HS {hs} to compare its value per unit",
        "unit_value_past_log_ratio": f"too few past declarations of HS {hs} to compare its unit value",
        "tax_purchases_over_imports": "no tax return to compare with the importer's customs imports",
        "tax_igv_credit_over_import_igv": "no tax return to compare with the IGV the importer paid at customs",
        "tax_sales_over_purchases": "no tax return with purchases for the importer",
        "value_anomaly_score": "too little history to score how unusual the declared values are",
        **dict.fromkeys(("tax_risk_score", "tax_risk_rank_share", "tax_audit_listed", "tax_audits_closed",
                         "tax_audits_assessed"), "no monthly tax audit run published before the day"),
    }
    if not fin:
        return missing.get(feature, f"{_DESCRIPTIONS.get(feature, feature)}: not available")
    if feature == "log_ref_ratio":
        r = math.exp(v) - 1
        if abs(r) < 0.005:
            return f"unit value at the reference for HS {hs} from {origin}"
        return f"unit value {_pct(r)} {_side(r)} the reference for HS {hs} from {origin}"
    if feature == "unit_value_past_log_ratio":
        r = math.exp(v) - 1
        return f"unit value {_pct(r)} {_side(r)} the median of past declarations of HS {hs} from {origin}"
    if feature in ("unit_value_robust_z", "unit_value_qty_robust_z"):
        per = "per kg" if feature == "unit_value_robust_z" else "per declared unit"
        return f"unit value {per} {abs(v):.1f} robust standard deviations {_side(v)} past declarations of " \
               f"HS {hs} from {origin}"
    if feature == "unit_value_ref_level":
        k = int(v)
        return f"unit value compared with past declarations of {_UV_LEVELS[k]}" if 0 <= k < len(_UV_LEVELS) else \
            f"too few past declarations of HS {hs} to compare its unit value"
    if feature == "unit_value_ref_n":
        return f"unit value compared with {_times(v, 'past declaration')} of the same goods"
    if feature == "value_anomaly_score":
        return f"declared values unusual against past declarations (anomaly score {v:.2f}; higher is stranger)"
    if feature == "log_cif":
        return f"declared CIF value of {math.expm1(v):,.0f} USD"
    if feature == "log_unit_value_kg":
        return f"declared unit value of {math.exp(v):,.2f} USD per kg for HS {hs}"
    if feature == "log_unit_value_qty":
        return f"declared unit value of {math.exp(v):,.2f} USD per unit for HS {hs}"
    if feature == "cif_fob_ratio":
        return f"freight and insurance add {_pct(v - 1)} to the FOB value"
    if feature == "freight_share":
        return f"freight is {_pct(v)} of the FOB value"
    if feature == "insurance_share":
        return f"insurance is {v * 100:.1f}% of the FOB value"
    if feature == "duty_rate":
        return f"declared duty rate of {v * 100:.0f}% for HS {hs} from {origin}"
    if feature == "taxes_over_cif":
        return f"duties and import taxes are {_pct(v)} of the CIF value"
    if feature == "kg_per_unit":
        return f"declared net weight of {v:.3g} kg per unit for HS {hs}"
    if feature == "has_permit":
        return "no permit declared" if v < 1 else "a permit number is declared"
    if feature == "permit_valid":
        return "the declared permit is valid in the register" if v >= 1 else \
            "the declared permit is not valid in the permit register"
    if feature == "origin_differs_supplier":
        sup = item.get("supplier_country", "?")
        return f"origin {origin} differs from the supplier's country {sup}" if v >= 1 else \
            f"origin {origin} is the supplier's country"
    if feature == "hs2":
        return f"goods of HS chapter {int(v):02d}"
    if feature == "hs4":
        return f"goods of HS heading {int(v):04d}"
    if feature == "office_code":
        return f"lodged at customs office {item.get('customs_office') or f'{int(v):03d}'}"
    if feature == "n_items":
        return "a single-item declaration" if int(v) == 1 else f"a declaration of {int(v)} items"
    if feature == "importer_past_items":
        return "importer with no previous declarations" if v < 1 else f"importer lodged {_times(v, 'item')} before"
    if feature == "importer_items_30d":
        return "importer lodged nothing in the last 30 days" if v < 1 else \
            f"importer lodged {_times(v, 'item')} in the last 30 days"
    if feature == "importer_is_new":
        return "importer with no previous declarations" if v >= 1 else "importer with previous declarations"
    if feature == "importer_days_active":
        return f"importer first seen {v:.0f} days ago" if v >= 0 else "importer with no previous declarations"
    if feature == "importer_days_since_last":
        return f"importer's previous declaration was {v:.0f} days ago" if v >= 0 else \
            "importer with no previous declarations"
    if feature == "tax_purchases_over_imports":
        return f"importer's declared purchases are {v:.2f}x its customs imports in its last tax return"
    if feature == "tax_igv_credit_over_import_igv":
        return f"importer's IGV credit is {v:.2f}x the IGV its imports paid at customs, in its last tax return"
    if feature == "tax_sales_over_purchases":
        return f"importer's declared sales are {v:.2f}x its purchases in its last tax return"
    if feature == "tax_risk_score":
        return f"importer's tax audit risk score is {min(v, 1):.2f} of 1 in the latest monthly tax run"
    if feature == "tax_risk_rank_share":
        return f"importer ranks among the riskiest {min(v, 1) * 100:.1f}% of taxpayers in the latest monthly tax run"
    if feature == "tax_audit_listed":
        return "importer is a risk pick of the latest monthly tax audit list" if v >= 1 else \
            "importer is not a risk pick of the latest monthly tax audit list"
    if feature == "tax_audits_closed":
        return f"importer has {_times(v, 'closed tax audit')} on record"
    if feature == "tax_audits_assessed":
        return f"{_times(v, 'tax audit')} of the importer assessed tax"
    if feature == "day_of_week":
        return f"lodged on a {_DAYS[int(v) % 7]}"
    if feature == "month":
        return f"lodged in {_MONTHS[(int(v) - 1) % 12]}"
    return f"{_DESCRIPTIONS.get(feature, feature)}: {v:.3g}"


def _model_reasons(model, X: pd.DataFrame, frame: pd.DataFrame, top: int = 2) -> list[list[str]]:
    """Top positive model contributions per item, phrased. Approximate contributions: fast and enough."""
    if model is None:  # scored by the rules alone: their reasons are the words
        return [[] for _ in range(len(X))]
    if not len(X):
        return []
    contrib = model.contributions(X)
    names = np.array(contrib.columns)
    c = contrib.to_numpy()
    vals = X[list(names)].to_numpy(dtype=float)
    recs = frame.to_dict("records")
    order = np.argsort(-c, axis=1, kind="stable")[:, :top]
    out = []
    for i in range(len(c)):
        out.append([f"model: {explain(names[k], vals[i, k], recs[i])}" for k in order[i] if c[i, k] > 0.05])
    return out


def _stacked(r) -> bool:
    m = getattr(r, "model_fraud_probability", None)
    return m is not None and pd.notna(m) and abs(float(m) - float(r.fraud_probability)) > 5e-7


def _scorer(r) -> str:
    """Who ranked an exploitation pick: the model alone, or the model and the rules stacked (stacking.py)."""
    return "model and rules" if _stacked(r) else "model"


def _model_alone(r) -> str:
    return f"; model alone {_prob(r.model_fraud_probability)}" if _stacked(r) else ""


def _selection_notes(decl: pd.DataFrame, rules: RuleSet, scored_by: str = "model") -> dict[str, str]:
    """The first reason of every item of a selected declaration: why the declaration was selected."""
    by_id = rules.by_id()
    notes = {}
    office = decl.groupby("customs_office")
    decl = decl.assign(n_office=office.declaration_id.transform("size"), scored_by=scored_by,
                       rank_er=office.expected_revenue_usd.rank(ascending=False, method="min"),
                       rank_p=office.fraud_probability.rank(ascending=False, method="min"))
    sel = decl[decl.channel.isin(["RED", "YELLOW"])]
    for r in sel.itertuples(index=False):
        p, er, rev, u = _prob(r.fraud_probability), r.expected_revenue_usd, r.revenue_if_fraud_usd, r.uncertainty
        if r.selection_basis == "mandatory_rule":
            hits = [by_id[i] for i in r.mandatory_hits if i in by_id]
            names = "; ".join(f"{h.id} ({h.name})" for h in hits) or "a mandatory rule"
            notes[r.declaration_id] = f"mandatory rule {names}: always selected"
        elif r.selection_basis == "random":
            notes[r.declaration_id] = "random quality-control selection"
        elif r.selection_basis.startswith("exploitation") and r.scored_by == "rules":
            notes[r.declaration_id] = (f"rules: fraud probability {p} from the rules it hits, ranked "
                                       f"{r.rank_p:.0f} of {r.n_office} at office {r.customs_office} today")
        elif r.selection_basis == "exploration":
            nov = float(getattr(r, "novelty", 0.0) or 0.0)
            thin = f"; thin history: fraud rate known to +/- {_prob(nov)}" if nov > 0 else ""
            notes[r.declaration_id] = (
                f"exploration: model uncertain (fraud probability {p} +/- {_prob(u)}{thin}) about a declaration "
                f"with {rev:,.0f} USD at stake if fraudulent")
        elif r.selection_basis == "exploitation:fraud_probability":
            notes[r.declaration_id] = (f"{_scorer(r)}: fraud probability {p}{_model_alone(r)} for the declaration, "
                                       f"ranked {r.rank_p:.0f} of {r.n_office} at office {r.customs_office} today")
        else:
            notes[r.declaration_id] = (f"{_scorer(r)}: expected revenue at stake {er:,.0f} USD (fraud probability "
                                       f"{p}{_model_alone(r)}), ranked {r.rank_er:.0f} of {r.n_office} at office "
                                       f"{r.customs_office} today")
    return notes


def item_reasons(scored: pd.DataFrame, decl: pd.DataFrame, model, X: pd.DataFrame, frame: pd.DataFrame,
                 rules: RuleSet) -> list[list[str]]:
    """Per item: the declaration's selection note (selected only), the rules that hit, the model's words."""
    reasons = [list(r) for r in scored.rule_reasons]
    notes = _selection_notes(decl, rules, "model" if model is not None else "rules")
    sel = np.flatnonzero(scored.channel.isin(["RED", "YELLOW"]).to_numpy())
    ids = scored.declaration_id.to_numpy()
    for i, mr in zip(sel, _model_reasons(model, X.iloc[sel], frame.iloc[sel]), strict=True):
        reasons[i] = [notes[ids[i]], *reasons[i], *mr]
    return reasons
