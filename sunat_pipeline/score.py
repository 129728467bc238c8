"""Score one day's declarations and assign channels; write the scored Parquet (the output contract).

Scoring never reads labels of the day or ground truth: features come from what was known at the start
of the day, the model is the registered ``champion`` and the rule weights are the latest version dated
before the day. The first run of a day records what it used in a run manifest; a re-run of the day
uses the same model and weights versions and writes byte-identical output.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from sunat_pipeline import feedback, ingest, train
from sunat_pipeline.features import CATALOG, build_features, item_frame
from sunat_pipeline.lake import atomic_write_bytes, partition, replace_partition
from sunat_pipeline.rules import evaluate, load_rules, summarise
from sunat_pipeline.select import rollup, select_channels
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

# The output contract (docs/output.md). Adding a column is a new schema version; never a silent change.
SCHEMA_VERSION = "1"
CONTRACT_COLUMNS = [
    "declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
    "hs_code", "origin_country", "fob_usd", "cif_usd", "fraud_probability", "expected_revenue_usd",
    "uncertainty", "rule_score", "rule_hits", "channel", "selection_reason", "reasons", "model_name",
    "model_version", "rule_weights_version", "run_id", "scored_at",
]
_DESCRIPTIONS = {f.name: f.description for f in CATALOG}


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f}%"


def explain(feature: str, value: float, item: dict) -> str:
    """One model contribution in words an officer can check against the declaration."""
    hs, origin = item.get("hs_code", "?"), item.get("origin_country", "?")
    if feature == "log_ref_ratio" and np.isfinite(value):
        r = float(np.exp(value)) - 1
        side = "below" if r < 0 else "above"
        return f"unit value {_pct(r)} {side} the reference for HS {hs} from {origin}"
    if feature.endswith("_fraud_rate"):
        who = feature.removesuffix("_fraud_rate").removesuffix("_id").replace("_", " ")
        n = item.get(feature.replace("_fraud_rate", "_n_insp"), 0)
        return f"{who} {item.get(feature.removesuffix('_fraud_rate'), '')} has an offence rate of " \
               f"{value * 100:.0f}% over {int(n)} past inspections".replace("  ", " ")
    if feature == "importer_is_new" and value >= 1:
        return "importer with no previous declarations"
    if feature == "importer_days_active":
        return f"importer first seen {value:.0f} days ago" if value >= 0 else "importer with no previous declarations"
    if feature == "origin_differs_supplier" and value >= 1:
        return f"origin {origin} differs from the supplier's country {item.get('supplier_country', '?')}"
    if feature == "tax_purchases_over_imports" and np.isfinite(value):
        return f"importer's declared purchases are {value:.2f}x its customs imports in its last tax return"
    if feature == "has_permit" and value < 1:
        return "no permit declared"
    desc = _DESCRIPTIONS.get(feature, feature)
    return f"{desc}: {value:.3g}"


def _model_reasons(model, X: pd.DataFrame, frame: pd.DataFrame, top: int = 2) -> list[list[str]]:
    """Top positive model contributions per item, phrased. Approximate contributions: fast and enough."""
    if not len(X):
        return []
    contrib = model.contributions(X)
    recs = frame.to_dict("records")
    out = []
    for i, (_, row) in enumerate(contrib.iterrows()):
        best = row[row > 0.05].sort_values(ascending=False).head(top)
        out.append([f"model: {explain(f, float(X.iloc[i][f]), recs[i])}" for f in best.index])
    return out


def _manifest_path(settings: Settings, day: date):
    return partition(settings.gold / "score_runs", "declaration_date", day) / "run.json"


def _checksum(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def score_day(settings: Settings, day: date) -> dict:
    items = ingest.silver(settings, "customs", upto=day, since=day)
    if items.empty:
        raise RuntimeError(f"no customs declarations in silver for {day}: was the day's extract ingested?")
    items = items.sort_values(["declaration_id", "item_no"], kind="stable").reset_index(drop=True)
    mpath = _manifest_path(settings, day)
    previous = json.loads(mpath.read_text()) if mpath.exists() else None

    # What this run uses: pinned by the first run of the day, so re-runs reproduce it exactly.
    if previous:
        model_version, weights_version = previous["model_version"], previous["rule_weights_version"]
        model = train.load_version(settings, model_version)
    else:
        mv, model = train.champion(settings)
        if mv is None:
            raise RuntimeError(f"no '{settings.registered_model}@champion' in the MLflow registry: "
                               "run the training task first")
        model_version = str(mv.version)
        weights_version = feedback.version_before(settings, day)
    weights = feedback.load_version(settings, weights_version)["weights"]

    inp = train.load_inputs(settings, day)
    X = build_features(items, **inp)
    pred = model.predict(X)
    frame = item_frame(items, X)
    rules = load_rules(settings.rules_path)
    rs = summarise(rules, evaluate(rules, frame), weights, frame)
    scored = pd.concat([items, pred, rs], axis=1)

    decl = select_channels(rollup(scored), settings.selection, day, settings.seed)
    ch = decl.set_index("declaration_id")[["channel", "selection_reason"]]
    scored = scored.join(ch, on="declaration_id")

    # Reasons: rules that hit, top model contributions of the selected items, or the random/exploration note.
    reasons = [list(r) for r in scored.rule_reasons]
    sel = np.flatnonzero(scored.channel.isin(["RED", "YELLOW"]).to_numpy())
    for i, rr in zip(sel, _model_reasons(model, X.iloc[sel], frame.iloc[sel]), strict=True):
        reasons[i] = reasons[i] + rr
    note = {"random": "random quality-control selection",
            "exploration": "exploration: model uncertain about a high-value declaration"}
    for i in sel:
        sr = scored.selection_reason.iat[i]
        if sr in note:
            reasons[i] = [note[sr], *reasons[i]]
        elif not reasons[i]:
            reasons[i] = [f"model: expected revenue at stake {scored.expected_revenue_usd.iat[i]:.0f} USD"]
    # A declaration is selected as a whole: items without reasons of their own point to the ones with.
    scored["reasons"] = reasons

    batches = sorted(items._batch_sha256.unique()) if "_batch_sha256" in items else []
    config_sha = _checksum({"selection": settings.selection.model_dump(), "seed": settings.seed,
                            "rules": settings.rules_path.read_text()})
    run_id = _checksum({"day": day, "model": model_version, "weights": weights_version, "batches": batches,
                        "config": config_sha})[:16]
    scored_at = previous["scored_at"] if previous else datetime.now(UTC).replace(microsecond=0).isoformat()
    out = scored.assign(
        declaration_date=pd.to_datetime(scored.declaration_date).dt.date,
        model_name=settings.registered_model, model_version=model_version,
        rule_weights_version=weights_version, run_id=run_id, scored_at=pd.Timestamp(scored_at),
    )
    extra = ["mandatory", "revenue_if_fraud_usd"]
    out = out[CONTRACT_COLUMNS + extra]
    path = replace_partition(out, partition(settings.scored_dir, "declaration_date", day))
    counts = decl.channel.value_counts().reindex(["RED", "YELLOW", "GREEN"], fill_value=0)
    run = {"declaration_date": day.isoformat(), "run_id": run_id, "scored_at": scored_at,
           "model_name": settings.registered_model, "model_version": model_version,
           "rule_weights_version": weights_version, "config_sha256": config_sha, "input_batches": batches,
           "schema_version": SCHEMA_VERSION, "items": len(out), "declarations": len(decl),
           "channels": {k: int(v) for k, v in counts.items()},
           "selection_reasons": {k: int(v) for k, v in decl.selection_reason.value_counts().sort_index().items()}}
    if previous is None or previous != run:
        atomic_write_bytes(mpath, json.dumps(run, indent=2).encode())
    log.info("scored %s: %d items in %d declarations with model v%s and weights %s -> RED %d, YELLOW %d, "
             "GREEN %d; written to %s", day, len(out), len(decl), model_version, weights_version,
             counts.RED, counts.YELLOW, counts.GREEN, path)
    return {**run, "path": str(path)}
