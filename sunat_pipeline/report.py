"""Summaries for people: the per-day table the demo prints."""

from __future__ import annotations

import json

import pandas as pd

from sunat_pipeline import feedback
from sunat_pipeline.settings import Settings


def day_table(settings: Settings) -> pd.DataFrame:
    """Per scored day: items, channels (declarations), and what the inspections that came back found."""
    runs = sorted((settings.gold / "score_runs").glob("declaration_date=*/run.json"))
    off = feedback.offences(settings)
    if len(off):
        off = off[off.selection_reason != "legacy"].assign(day=pd.to_datetime(off.inspection_date).dt.date)
    rows = []
    for p in runs:
        r = json.loads(p.read_text())
        d = pd.Timestamp(r["declaration_date"]).date()
        o = off[off.day == d] if len(off) else off
        rows.append({
            "date": r["declaration_date"], "items": r["items"], "declarations": r["declarations"],
            "RED": r["channels"]["RED"], "YELLOW": r["channels"]["YELLOW"], "GREEN": r["channels"]["GREEN"],
            "outcomes_back": len(o), "frauds_found": int((o.result == "FRAUD").sum()) if len(o) else 0,
            "revenue_recovered_usd": round(float(o.revenue_recovered_usd.sum()), 2) if len(o) else 0.0,
            "model_version": r["model_version"], "rule_weights": r["rule_weights_version"],
        })
    return pd.DataFrame(rows)


def registry_summary(settings: Settings) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{settings.registered_model}'")
        champ = client.get_model_version_by_alias(settings.registered_model, "champion").version
    except Exception:
        return {"versions": [], "champion": None}
    return {"versions": sorted(int(v.version) for v in versions), "champion": champ}
