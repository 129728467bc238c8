"""Test helper: a day scored by hand (rules stand in for the model, no MLflow), written where scoring writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.features.build import build_features, item_frame
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.lake.store import atomic_write_bytes, write_partition
from sunat_pipeline.modeling import train
from sunat_pipeline.selection.output import KEY, manifest_path
from sunat_pipeline.selection.rules import evaluate, load_rules, summarise
from sunat_pipeline.selection.select import rollup, select_channels


def score_by_hand(settings, day) -> pd.DataFrame:
    """A stand-in for the model (no MLflow): item scores from the rules, channels by the real selection policy;
    written where scoring writes, with the contract's columns that feedback and KPIs read."""
    items = ingest.silver(settings, "customs", upto=day, since=day).sort_values(
        ["declaration_id", "item_no"]).reset_index(drop=True)
    X = build_features(items, **train.load_inputs(settings, day))
    frame = item_frame(items, X)
    rules = load_rules(settings.rules_path)
    wv = rule_weights.version_before(settings, day)
    rs = summarise(rules, evaluate(rules, frame), rule_weights.load_version(settings, wv)["weights"], frame)
    jitter = pd.util.hash_pandas_object(items[["declaration_id", "item_no"]], index=False).to_numpy() % 1000 / 1e4
    p = np.clip(0.03 + 0.5 * rs.rule_score.to_numpy() + jitter, 0, 0.95)
    rev = items.cif_usd.to_numpy() * 0.3
    scored = pd.concat([items, rs], axis=1).assign(
        fraud_probability=p, revenue_if_fraud_usd=rev, expected_revenue_usd=p * rev, uncertainty=p * (1 - p))
    decl = select_channels(rollup(scored), settings.selection, day, settings.seed)
    scored = scored.join(decl.set_index("declaration_id")[["channel", "selection_reason"]], on="declaration_id")
    out = scored.assign(declaration_date=pd.to_datetime(scored.declaration_date).dt.date, model_name="hand",
                        model_version="0", rule_weights_version=wv, run_id=f"hand-{day}",
                        scored_at=pd.Timestamp(datetime(2026, 1, 1, tzinfo=UTC)),
                        reasons=[["hand"]] * len(scored)).drop(columns=["rule_reasons"])
    write_partition(out, settings.scored_dir, KEY, day, replace=True)  # the date in the path only, as scoring
    counts = decl.channel.value_counts().reindex(["RED", "YELLOW", "GREEN"], fill_value=0)
    run = {"declaration_date": day.isoformat(), "model_version": "0", "rule_weights_version": wv,
           "items": len(out), "declarations": len(decl), "channels": {k: int(v) for k, v in counts.items()}}
    atomic_write_bytes(manifest_path(settings, day), json.dumps(run).encode())
    return out
