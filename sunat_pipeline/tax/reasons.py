"""Reasons in words for a listed taxpayer: the features that pushed its score most, each phrased so an auditor
can check it against the returns, the e-invoices and the customs record (like the customs reasons,
``selection/reasons.py``). The contributions are the supervised model's SHAP values where it scored the month,
else the anomaly model's one-sided z-scores; only contributions towards audit, of values on the suspicious side
of the population's median, are told."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sunat_pipeline.tax.features import DESCRIPTIONS


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f}%"


def _times(x: float) -> str:
    return f"{math.exp(x):.1f} times"


def explain(feature: str, v: float, row: dict) -> str:
    """One feature's value in words (``row``: the taxpayer's features and register fields)."""
    sector = str(row.get("sector", "?")).lower()
    if v is None or not math.isfinite(float(v)):
        return f"{DESCRIPTIONS.get(feature, feature)}: not available"
    v = float(v)
    phrases = {
        "invoiced_over_declared_sales": lambda: f"e-invoices it issued are {_times(v)} the sales it declared "
                                                "in the same months",
        "unbacked_purchases_share": lambda: f"{_pct(v)} of its declared purchases are backed by no e-invoice "
                                            "received and no customs import",
        "ghost_purchase_share": lambda: f"{_pct(v)} of its invoiced purchases come from suppliers that look like "
                                        "ghosts (invoicing far more than they declare, suspended or not located)",
        "supplier_gap": lambda: f"its suppliers invoiced on average {_times(v)} the sales they declared",
        "new_supplier_share": lambda: f"{_pct(v)} of its invoiced purchases come from suppliers registered in "
                                      "the last 12 months",
        "unbooked_imports_share": lambda: f"{_pct(v)} of its customs imports and invoiced purchases are missing "
                                          "from its declared purchases",
        "credit_over_supported_igv": lambda: f"the IGV credit it claimed is {_times(v)} the IGV on its invoices "
                                             "received plus the IGV it paid at import",
        "import_igv_over_credit": lambda: f"the IGV it paid at import is {_pct(v)} of the IGV credit it claimed",
        "margin": lambda: f"declared gross margin of {v * 100:.0f}%",
        "margin_vs_sector": lambda: f"declared gross margin {abs(v) * 100:.0f} points {'below' if v < 0 else 'above'} "
                                    f"the {sector} sector's median",
        "margin_vs_own_history": lambda: f"declared gross margin {abs(v) * 100:.0f} points "
                                         f"{'below' if v < 0 else 'above'} its own in the previous months",
        "payable_share": lambda: f"it paid {_pct(v)} of its IGV debit",
        "carried_credit_months": lambda: f"it carries forward an IGV credit worth {v:.1f} months of its debit",
        "income_margin_vs_sector": lambda: f"annual return's gross margin {abs(v) * 100:.0f} points "
                                           f"{'below' if v < 0 else 'above'} the {sector} sector's median",
        "deductions_vs_sector": lambda: f"deductions of {_times(v)} the {sector} sector's median share of revenue",
        "income_return_missing": lambda: "no annual income return for the last fiscal year" if v > 0 else
                                         "annual income return filed",
        "missed_share": lambda: f"no IGV return for {_pct(v)} of the last months",
        "late_share": lambda: f"{_pct(v)} of its IGV returns filed late",
        "months_registered": lambda: f"registered {v:.0f} months ago",
        "customs_offences": lambda: f"{v:.0f} customs offences found at import" if v != 1 else
                                    "1 customs offence found at import",
        "customs_offence_rate": lambda: f"customs offences in {_pct(min(v, 1))} of its inspected imports",
        "customs_risk": lambda: f"its imports score a mean customs fraud probability of {_pct(v)}",
        "imports_over_purchases": lambda: f"customs imports are {_pct(v)} of its declared purchases",
        "log_sales": lambda: f"average declared monthly sales of PEN {math.expm1(v):,.0f}",
        "log_suppliers": lambda: f"{math.expm1(v):.0f} e-invoicing suppliers",
        "log_customers": lambda: f"{math.expm1(v):.0f} e-invoiced customers",
    }
    f = phrases.get(feature)
    return f() if f else f"{DESCRIPTIONS.get(feature, feature)}: {v:.3g}"


# How a typical value is told beside a reason's: a ratio or share means little to an auditor without the usual one
# (e-invoices cover only sales to businesses, so "0.8 times the declared sales" is high where the median taxpayer
# sits at 0.46, as on the default world's June 2026).
TYPICAL = {"invoiced_over_declared_sales": _times, "supplier_gap": _times, "credit_over_supported_igv": _times,
           "deductions_vs_sector": _times, "unbacked_purchases_share": _pct, "ghost_purchase_share": _pct,
           "new_supplier_share": _pct, "unbooked_imports_share": _pct, "missed_share": _pct, "late_share": _pct,
           "carried_credit_months": lambda v: f"{v:.1f} months"}


def with_typical(text: str, feature: str, center: pd.Series | None) -> str:
    """``text`` with the typical taxpayer's value (the anomaly model's median) where it helps to read it."""
    if center is None or feature not in TYPICAL or feature not in center or not np.isfinite(center[feature]):
        return text
    return f"{text} (typical taxpayer: {TYPICAL[feature](float(center[feature]))})"


def reasons(frame: pd.DataFrame, contributions: pd.DataFrame, unusual: pd.DataFrame, top: int,
            center: pd.Series | None = None) -> list[list[str]]:
    """The ``top`` positive contributions of each row of ``frame`` (aligned with ``contributions``), in words,
    told only where the value is on the suspicious side of the population's median (``unusual``: the anomaly
    model's one-sided z-scores; context features are never a reason); rows with none get the plain statement
    that no single feature stands out. ``center``: the typical value of each feature, told beside ratios and
    shares."""
    out = []
    c = contributions.to_numpy(dtype=float).copy()
    names = list(contributions.columns)
    ok = np.column_stack([unusual[n].to_numpy() > 0 if n in unusual else np.zeros(len(c), bool) for n in names])
    c[~ok] = 0.0
    for i, row in enumerate(frame.to_dict("records")):
        order = np.argsort(-c[i], kind="stable")
        said = [with_typical(explain(names[j], row.get(names[j]), row), names[j], center)
                for j in order[:top] if c[i, j] > 0]
        out.append(said or ["no single feature stands out: ranked by the combination of its features"])
    return out
