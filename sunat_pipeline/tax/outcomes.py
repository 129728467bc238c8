"""Audit outcomes folded back: closed audits become labels, and the lists learn which of their taxpayers were
audited.

A label is an audit closed before the cutoff with a result (ASSESSED or NO_FINDINGS; a NOT_LOCATED audit found
nobody to examine and teaches nothing about the returns). It is positive when the assessment is material: at
least ``tax_audit.material_share`` of the IGV debit declared for the audited periods, so the small technical
adjustments honest taxpayers receive do not read as evasion. The features of a label are those of the month
before the audit opened: what was known when the taxpayer was chosen (``features_month``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sunat_pipeline.settings import Settings
from sunat_pipeline.tax import store
from sunat_pipeline.tax.inputs import TaxInputs

log = logging.getLogger(__name__)
RESULTS_WITH_LABEL = ("ASSESSED", "NO_FINDINGS")


def audits(settings: Settings, inp: TaxInputs) -> pd.DataFrame:
    """Every audit closed before the cutoff with ``opened_month``, ``features_month``, ``declared_debit_pen``
    and ``label`` (1 material assessment, 0 none, NaN no result)."""
    a = inp.audits.copy()
    if a.empty:
        return a.assign(opened_month=[], features_month=[], declared_debit_pen=[], label=[])
    opened = pd.to_datetime(a.opened_date).dt.to_period("M")
    a["opened_month"] = opened.astype(str)
    a["features_month"] = (opened - 1).astype(str)
    r = inp.returns[["taxpayer_id", "period", "igv_debit_pen"]].astype({"period": str})
    j = a[["audit_id", "taxpayer_id", "period_from", "period_to"]].merge(r, on="taxpayer_id", how="left")
    inside = (j.period >= j.period_from.astype(str)) & (j.period <= j.period_to.astype(str))
    debit = j.igv_debit_pen.where(inside, 0.0).fillna(0.0).groupby(j.audit_id).sum()
    a["declared_debit_pen"] = a.audit_id.map(debit).fillna(0.0)
    share = settings.tax_audit.material_share
    material = a.assessed_tax_pen.astype(float) >= share * a.declared_debit_pen.clip(lower=1)
    a["label"] = np.where(a.result.isin(RESULTS_WITH_LABEL),
                          ((a.result == "ASSESSED") & material).astype(float), np.nan)
    return a.sort_values(["closed_date", "audit_id"], kind="stable").reset_index(drop=True)


def fold(settings: Settings, month: str, inp: TaxInputs) -> dict:
    """Write ``gold/tax_audit_outcomes/month=M``: every audit known by the month's cutoff, its label, and
    whether the pipeline had listed the taxpayer the month before the audit opened (and why)."""
    a = audits(settings, inp)
    lists = store.read_all(settings, store.LIST, before=str(month))
    if len(a) and len(lists):
        on = lists[["month", "taxpayer_id", "selection_reason"]].rename(
            columns={"month": "features_month", "selection_reason": "listed_reason"})
        a = a.merge(on, on=["features_month", "taxpayer_id"], how="left")
    else:
        a["listed_reason"] = pd.Series(dtype=object, index=a.index)
    a["listed"] = a.listed_reason.notna()
    cols = ["audit_id", "taxpayer_id", "program", "period_from", "period_to", "opened_date", "closed_date", "result",
            "assessed_tax_pen", "penalty_pen", "opened_month", "features_month", "declared_debit_pen", "label",
            "listed", "listed_reason"]
    a = a[cols] if len(a) else pd.DataFrame(columns=cols)
    store.write(settings, store.OUTCOMES, month, a)
    new = a[pd.to_datetime(a.closed_date).dt.to_period("M").astype(str) == str(month)] if len(a) else a
    out = {"audits_known": len(a), "closed_in_month": len(new), "labels": int(a.label.notna().sum()),
           "positives": int((a.label == 1).sum()), "listed_and_audited": int(a.listed.sum()),
           "listed_audited_positive": int((a.listed & (a.label == 1)).sum())}
    log.info("tax outcomes %s: %d audits known (%d closed in the month), %d labels (%d positive); %d listed "
             "taxpayers were audited (%d positive)", month, out["audits_known"], out["closed_in_month"],
             out["labels"], out["positives"], out["listed_and_audited"], out["listed_audited_positive"])
    return out
