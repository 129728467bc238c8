"""Score one day's declarations and assign channels; write the scored Parquet (the output contract).

Scoring never reads labels of the day or ground truth: features come from what was known at the start
of the day, the model is the registered ``champion`` and the rule weights are the latest version dated
before the day. The first run of a day records what it used in a run manifest; a re-run of the day
uses the same model and weights versions and writes byte-identical output.

Every decision (one per declaration) also goes to an append-only audit trail,
``gold/audit/declaration_date=D/run-<run_id>.parquet``, with the model and weights versions, the
configuration checksum, the checksums of the input batches and the run id. A run id is recorded once: a
re-run with the same run id leaves the trail untouched; a run with another id (new configuration, new
inputs) adds its own file beside the earlier ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.features.build import CATALOG, build_features, item_frame
from sunat_pipeline.features.history import update_profiles
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.ingest import pipeline as ingest
from sunat_pipeline.lake.store import (
    atomic_write_bytes,
    partition,
    read_partitions,
    replace_partition,
    write_parquet_atomic,
)
from sunat_pipeline.modeling import train
from sunat_pipeline.selection.rules import RuleSet, evaluate, load_rules, summarise
from sunat_pipeline.selection.select import item_embedding, rollup, select_channels
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

# The output contract (docs/output.md). Adding a column is a new schema version; never a silent change.
SCHEMA_VERSION = "2"
CONTRACT_COLUMNS = [
    "declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
    "hs_code", "origin_country", "fob_usd", "cif_usd", "fraud_probability", "expected_revenue_usd",
    "uncertainty", "rule_score", "rule_hits", "channel", "selection_reason", "reasons", "model_name",
    "model_version", "rule_weights_version", "run_id", "scored_at",
]
# Extra columns after the contract ones (docs/output.md lists them with the version that added them).
EXTRA_COLUMNS = [
    "mandatory", "revenue_if_fraud_usd",  # 1
    "selection_basis", "declaration_fraud_probability", "declaration_expected_revenue_usd", "workload_units",  # 2
]
AUDIT_COLUMNS = [
    "decision_id", "run_id", "declaration_id", "declaration_date", "customs_office", "importer_id",
    "declarant_id", "n_items", "channel", "selection_reason", "selection_basis", "fraud_probability",
    "expected_revenue_usd", "revenue_if_fraud_usd", "uncertainty", "rule_score", "rule_hits", "mandatory",
    "workload_units", "reasons", "model_name", "model_version", "rule_weights_version", "rules_sha256",
    "config_sha256", "input_batches", "inputs_sha256", "schema_version", "scored_at", "recorded_at",
]
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


# --- reasons in words ----------------------------------------------------------------------------

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
    if feature == "day_of_week":
        return f"lodged on a {_DAYS[int(v) % 7]}"
    if feature == "month":
        return f"lodged in {_MONTHS[(int(v) - 1) % 12]}"
    return f"{_DESCRIPTIONS.get(feature, feature)}: {v:.3g}"


def _model_reasons(model, X: pd.DataFrame, frame: pd.DataFrame, top: int = 2) -> list[list[str]]:
    """Top positive model contributions per item, phrased. Approximate contributions: fast and enough."""
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


def _selection_notes(decl: pd.DataFrame, rules: RuleSet) -> dict[str, str]:
    """The first reason of every item of a selected declaration: why the declaration was selected."""
    by_id = rules.by_id()
    notes = {}
    office = decl.groupby("customs_office")
    decl = decl.assign(n_office=office.declaration_id.transform("size"),
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
        elif r.selection_basis == "exploration":
            notes[r.declaration_id] = (
                f"exploration: model uncertain (fraud probability {p} +/- {_prob(u)}) about a declaration "
                f"with {rev:,.0f} USD at stake if fraudulent")
        elif r.selection_basis == "exploitation:fraud_probability":
            notes[r.declaration_id] = (f"model: fraud probability {p} for the declaration, ranked {r.rank_p:.0f} "
                                       f"of {r.n_office} at office {r.customs_office} today")
        else:
            notes[r.declaration_id] = (f"model: expected revenue at stake {er:,.0f} USD (fraud probability {p}), "
                                       f"ranked {r.rank_er:.0f} of {r.n_office} at office {r.customs_office} today")
    return notes


def _reasons(scored: pd.DataFrame, decl: pd.DataFrame, model, X: pd.DataFrame, frame: pd.DataFrame,
             rules: RuleSet) -> list[list[str]]:
    """Per item: the declaration's selection note (selected only), the rules that hit, the model's words."""
    reasons = [list(r) for r in scored.rule_reasons]
    notes = _selection_notes(decl, rules)
    sel = np.flatnonzero(scored.channel.isin(["RED", "YELLOW"]).to_numpy())
    ids = scored.declaration_id.to_numpy()
    for i, mr in zip(sel, _model_reasons(model, X.iloc[sel], frame.iloc[sel]), strict=True):
        reasons[i] = [notes[ids[i]], *reasons[i], *mr]
    return reasons


# --- provenance and audit ------------------------------------------------------------------------

def _manifest_path(settings: Settings, day: date):
    return partition(settings.gold / "score_runs", "declaration_date", day) / "run.json"


def audit_dir(settings: Settings) -> Path:
    return settings.gold / "audit"


def _checksum(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _batches(df: pd.DataFrame) -> list[str]:
    return sorted(df._batch_sha256.dropna().astype(str).unique()) if "_batch_sha256" in df else []


def read_audit(settings: Settings, day: date | None = None) -> pd.DataFrame:
    """The audit trail: every decision of every scoring run (of ``day``, or all days), oldest run first."""
    a = read_partitions(audit_dir(settings), "declaration_date", upto=day, since=day)
    if len(a):
        a = a.sort_values(["declaration_date", "recorded_at", "run_id", "declaration_id"], kind="stable")
    return a.reset_index(drop=True)


def write_audit(settings: Settings, day: date, decisions: pd.DataFrame) -> tuple[Path, bool]:
    """Append the decisions of one run (all with the same ``run_id``) to the trail; a no-op when that run is
    already recorded. Returns (path, written)."""
    run_ids = decisions.run_id.unique()
    if len(run_ids) != 1:
        raise ValueError(f"one run per audit append, got {list(run_ids)}")
    path = partition(audit_dir(settings), "declaration_date", day) / f"run-{run_ids[0]}.parquet"
    if path.exists():
        log.info("audit of run %s for %s already recorded: left as is", run_ids[0], day)
        return path, False
    recorded_at = pd.Timestamp(datetime.now(UTC).replace(microsecond=0))
    write_parquet_atomic(decisions.assign(recorded_at=recorded_at)[AUDIT_COLUMNS], path)
    return path, True


def _audit_frame(scored: pd.DataFrame, decl: pd.DataFrame, run: dict, inputs_sha: dict) -> pd.DataFrame:
    g = scored.groupby("declaration_id", sort=True)
    first = g.first()
    hits = g.rule_hits.agg(lambda s: sorted({h for hl in s for h in hl}))
    reasons = g.reasons.agg(lambda s: list(dict.fromkeys(r for rl in s for r in rl)))
    d = decl.set_index("declaration_id")
    out = pd.DataFrame({
        "run_id": run["run_id"], "declaration_id": d.index, "declaration_date": first.declaration_date,
        "customs_office": d.customs_office, "importer_id": d.importer_id, "declarant_id": first.declarant_id,
        "n_items": d.n_items.astype("int64"), "channel": d.channel, "selection_reason": d.selection_reason,
        "selection_basis": d.selection_basis, "fraud_probability": d.fraud_probability.round(6),
        "expected_revenue_usd": d.expected_revenue_usd.round(2), "revenue_if_fraud_usd": d.revenue_if_fraud_usd,
        "uncertainty": d.uncertainty, "rule_score": d.rule_score, "rule_hits": hits, "mandatory": d.mandatory,
        "workload_units": d.workload_units, "reasons": reasons, "model_name": run["model_name"],
        "model_version": run["model_version"], "rule_weights_version": run["rule_weights_version"],
        "rules_sha256": run["rules_sha256"], "config_sha256": run["config_sha256"],
        "input_batches": [run["input_batches"]] * len(d), "inputs_sha256": json.dumps(inputs_sha, sort_keys=True),
        "schema_version": run["schema_version"], "scored_at": pd.Timestamp(run["scored_at"]),
    })
    out.insert(0, "decision_id", out.run_id + ":" + out.declaration_id)
    return out.reset_index(drop=True)


# --- the day -------------------------------------------------------------------------------------

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
    # Entity profiles from the daily state (gold/profiles/), extended by the outcomes reported since.
    X = build_features(items, **inp, profile_state=update_profiles(settings, day, inp["outcomes"],
                                                                   inp["customs_history"]))
    pred = model.predict(X)
    frame = item_frame(items, X)
    rules = load_rules(settings.rules_path)
    rs = summarise(rules, evaluate(rules, frame), weights, frame)
    scored = pd.concat([items, pred, rs], axis=1)

    # Channels per declaration (docs/selection.md), then back on every item.
    decl = select_channels(rollup(scored, embedding=item_embedding(X, items)), settings.selection, day,
                           settings.seed)
    mand_ids = {r.id for r in rules.rules if r.mandatory}
    mand_hits = scored.groupby("declaration_id", sort=True).rule_hits.agg(
        lambda s: sorted({h for hl in s for h in hl if h in mand_ids}))
    decl = decl.assign(mandatory_hits=decl.declaration_id.map(mand_hits))
    ch = decl.set_index("declaration_id")[["channel", "selection_reason", "selection_basis", "fraud_probability",
                                           "expected_revenue_usd", "workload_units"]].rename(columns={
        "fraud_probability": "declaration_fraud_probability",
        "expected_revenue_usd": "declaration_expected_revenue_usd"})
    scored = scored.join(ch, on="declaration_id")
    scored["reasons"] = _reasons(scored, decl, model, X, frame, rules)

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
    out = out[CONTRACT_COLUMNS + EXTRA_COLUMNS]
    path = replace_partition(out, partition(settings.scored_dir, "declaration_date", day))
    counts = decl.channel.value_counts().reindex(["RED", "YELLOW", "GREEN"], fill_value=0)
    run = {"declaration_date": day.isoformat(), "run_id": run_id, "scored_at": scored_at,
           "model_name": settings.registered_model, "model_version": model_version,
           "rule_weights_version": weights_version, "rules_sha256": rules_sha, "config_sha256": config_sha,
           "input_batches": batches, "inputs_sha256": inputs_sha,
           "schema_version": SCHEMA_VERSION, "items": len(out), "declarations": len(decl),
           "channels": {k: int(v) for k, v in counts.items()},
           "selection_reasons": {k: int(v) for k, v in decl.selection_reason.value_counts().sort_index().items()}}
    audit_path, _ = write_audit(settings, day, _audit_frame(out, decl, run, inputs_sha))
    run["audit_path"] = str(audit_path.relative_to(settings.lake))
    if previous is None or previous != run:
        atomic_write_bytes(mpath, json.dumps(run, indent=2).encode())
    log.info("scored %s: %d items in %d declarations with model v%s and weights %s -> RED %d, YELLOW %d, "
             "GREEN %d; written to %s", day, len(out), len(decl), model_version, weights_version,
             counts.RED, counts.YELLOW, counts.GREEN, path)
    return {**run, "path": str(path)}
