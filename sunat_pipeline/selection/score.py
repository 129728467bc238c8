"""Score one day's declarations and assign channels; write the scored Parquet (the output contract).

Scoring never reads labels of the day or ground truth: features come from what was known at the start
of the day, the model is the registered ``champion`` and the rule weights are the latest version dated
before the day. The first run of a day records what it used in a run manifest; a re-run of the day
uses the same model and weights versions and writes byte-identical output.

Every decision (one per declaration) also goes to the append-only audit trail (``audit``); the reasons
in words come from ``reasons``; the output's columns and its reader from ``output``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.features.build import build_features, item_frame
from sunat_pipeline.features.history import update_profiles
from sunat_pipeline.feedback import stacking
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.feedback.offences import offences
from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.selection.audit import audit_frame, write_audit
from sunat_pipeline.selection.capacity import capacity_record, office_capacities, office_volumes
from sunat_pipeline.selection.exploration import adaptive_share, novelty
from sunat_pipeline.selection.output import COLUMNS, RULES_ONLY, SCHEMA_VERSION, manifest_path, write_scored
from sunat_pipeline.selection.reasons import item_reasons
from sunat_pipeline.selection.rules import evaluate, load_rules, rules_prediction, summarise
from sunat_pipeline.selection.select import item_embedding, rollup, select_channels
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


# --- provenance ----------------------------------------------------------------------------------

def _checksum(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _batches(df: pd.DataFrame) -> list[str]:
    return sorted(df._batch_sha256.dropna().astype(str).unique()) if "_batch_sha256" in df else []


# --- the day -------------------------------------------------------------------------------------

def score_day(settings: Settings, day: date) -> dict:
    items = ingest.silver(settings, "customs", upto=day, since=day)
    if items.empty:
        raise RuntimeError(f"no customs declarations in silver for {day}: was the day's extract ingested?")
    items = items.sort_values(["declaration_id", "item_no"], kind="stable").reset_index(drop=True)
    mpath = manifest_path(settings, day)
    previous = json.loads(mpath.read_text()) if mpath.exists() else None

    # What this run uses: pinned by the first run of the day, so re-runs reproduce it exactly.
    by_rules = settings.selection.scorer == "rules"  # a rules-only policy: no model
    if previous:
        model_version, weights_version = previous["model_version"], previous["rule_weights_version"]
        model = None if by_rules else registry.load_version(settings, model_version)
    else:
        if by_rules:
            model_version, model = RULES_ONLY, None
        else:
            mv, model = registry.champion(settings)
            if mv is None:
                raise RuntimeError(f"no '{settings.registered_model}@champion' in the MLflow registry: "
                                   "run the training task first")
            model_version = str(mv.version)
        weights_version = rule_weights.version_before(settings, day) if settings.selection.rule_weights == "learned" \
            else rule_weights.INITIAL
    wrec = rule_weights.load_version(settings, weights_version)
    weights = wrec["weights"]

    inp = train.load_inputs(settings, day)
    # Entity profiles from the daily state (gold/profiles/), extended by the outcomes reported since.
    X = build_features(items, **inp, taxes=settings.tax, profile_state=update_profiles(settings, day, inp["outcomes"],
                                                                   inp["customs_history"]))
    frame = item_frame(items, X)
    rules = load_rules(settings.rules_path)
    hits = evaluate(rules, frame)
    rs = summarise(rules, hits, weights, frame)
    if model is None:
        pred = rules_prediction(rules, hits, weights, frame).assign(model_fraud_probability=float("nan"),
                                                                    documentary_blind_share=float("nan"))
    elif settings.selection.combine == "stacked":  # the learned rule weights steer the ranking
        stack = wrec.get("stack") or stacking.prior(settings, rules)
        pred = stacking.combine(model.predict(X), stack, stacking.area_evidence(rules, rs.rule_hits.tolist(), weights))
    else:
        pred = model.predict(X).pipe(lambda p: p.assign(model_fraud_probability=p.fraud_probability))
    scored = pd.concat([items, pred, rs, novelty(X).set_axis(items.index)], axis=1)

    # Each office's capacity (explicit, else from its volume before the day), then channels per declaration
    # (docs/selection.md), then back on every item.
    sel = settings.selection
    volumes = office_volumes(inp["customs_history"], day, sel.capacity_window_days)
    capacities = office_capacities(sel, items.customs_office, volumes)
    # The evidence is read only where the share adapts (a policy without exploration never needs it).
    adapts = sel.exploration_adaptive and sel.exploration_share > 0
    explore = adaptive_share(sel, offences(settings, asof=day - timedelta(days=1)) if adapts else None, day,
                             settings.monitoring.exploration_window_days)
    decl = select_channels(rollup(scored, embedding=item_embedding(X, items)), sel, day, settings.seed,
                           capacity=capacities, explore_share=explore["share"])
    mand_ids = {r.id for r in rules.rules if r.mandatory}
    mand_hits = scored.groupby("declaration_id", sort=True).rule_hits.agg(
        lambda s: sorted({h for hl in s for h in hl if h in mand_ids}))
    decl = decl.assign(mandatory_hits=decl.declaration_id.map(mand_hits))
    ch = decl.set_index("declaration_id")[["channel", "selection_reason", "selection_basis", "fraud_probability",
                                           "expected_revenue_usd", "workload_units", "selection_probability"]]
    ch = ch.rename(columns={"fraud_probability": "declaration_fraud_probability",
                            "expected_revenue_usd": "declaration_expected_revenue_usd"})
    scored = scored.join(ch, on="declaration_id")
    scored["reasons"] = item_reasons(scored, decl, model, X, frame, rules)

    batches = _batches(items)
    inputs_sha = {k: _checksum(_batches(v)) for k, v in sorted(inp.items())}
    rules_sha = hashlib.sha256(settings.rules_path.read_bytes()).hexdigest()
    config_sha = _checksum({"selection": settings.selection.model_dump(), "seed": settings.seed,
                            "rules": settings.rules_path.read_text()})
    run_id = _checksum({"day": day, "model": model_version, "weights": weights_version, "batches": batches,
                        "config": config_sha, "inputs": inputs_sha})[:16]
    scored_at = previous["scored_at"] if previous else datetime.now(UTC).replace(microsecond=0).isoformat()
    out = scored.assign(
        declaration_date=pd.to_datetime(scored.declaration_date).dt.date,
        model_name=settings.registered_model, model_version=model_version,
        rule_weights_version=weights_version, run_id=run_id, scored_at=pd.Timestamp(scored_at),
    )
    out = out[COLUMNS]
    path = write_scored(settings, day, out)
    counts = decl.channel.value_counts().reindex(["RED", "YELLOW", "GREEN"], fill_value=0)
    run = {"declaration_date": day.isoformat(), "run_id": run_id, "scored_at": scored_at,
           "model_name": settings.registered_model, "model_version": model_version,
           "rule_weights_version": weights_version, "rules_sha256": rules_sha, "config_sha256": config_sha,
           "input_batches": batches, "inputs_sha256": inputs_sha,
           "schema_version": SCHEMA_VERSION, "items": len(out), "declarations": len(decl),
           "channels": {k: int(v) for k, v in counts.items()},
           "capacity": capacity_record(sel, capacities, volumes), "exploration": explore,
           "selection_reasons": {k: int(v) for k, v in decl.selection_reason.value_counts().sort_index().items()}}
    audit_path, _ = write_audit(settings, day, audit_frame(out, decl, run, inputs_sha))
    run["audit_path"] = str(audit_path.relative_to(settings.lake))
    if previous is None or previous != run:
        atomic_write_bytes(mpath, json.dumps(run, indent=2).encode())
    log.info("scored %s: %d items in %d declarations with model v%s and weights %s -> RED %d, YELLOW %d, "
             "GREEN %d; written to %s", day, len(out), len(decl), model_version, weights_version,
             counts.RED, counts.YELLOW, counts.GREEN, path)
    return {**run, "path": str(path)}
