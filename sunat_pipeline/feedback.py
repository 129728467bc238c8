"""Feedback: inspection outcomes -> offence database -> a new, versioned set of rule weights.

Day D's feedback takes every enforcement record reported after the previous weights version and up to
D, joins it to the decision that caused it (the scored output, or ``legacy`` for history), writes the
offence database partitions (``gold/offences/reported_date=R``), and derives version ``rw-D``.

Rule weights are Beta-Bernoulli estimates of each rule's precision (share of inspected items hitting
the rule that turned out fraudulent). The rules file's weight is the prior mean, worth
``prior_hits + prior_misses`` pseudo-inspections; past evidence decays by ``decay`` per version so the
weights follow changing behaviour, and one version moves a weight by at most ``max_step``.
Scoring on day D uses the latest version dated before D. Everything here is a pure function of the
silver data and the previous version, so re-running a day rewrites identical files.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.features import build_features, item_frame
from sunat_pipeline.lake import atomic_write_bytes, partition, read_partitions, replace_partition, write_parquet_atomic
from sunat_pipeline.rules import evaluate, load_rules
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
INITIAL = "rw-initial"


def _weights_dir(settings: Settings) -> Path:
    return settings.gold / "rule_weights"


def _version_date(version: str) -> date:
    return date.fromisoformat(version.removeprefix("rw-"))


def versions(settings: Settings) -> list[str]:
    """Dated versions, oldest first."""
    d = _weights_dir(settings)
    return sorted(p.stem for p in d.glob("rw-????-??-??.json")) if d.exists() else []


def load_version(settings: Settings, version: str) -> dict:
    if version == INITIAL:
        rules = load_rules(settings.rules_path)
        n0 = settings.feedback.prior_hits + settings.feedback.prior_misses
        return {"version": INITIAL, "date": None, "previous": None, "weights": rules.initial_weights(),
                "evidence": {r: {"alpha": w * n0, "beta": (1 - w) * n0, "inspected": 0, "frauds": 0}
                             for r, w in rules.initial_weights().items()}, "outcomes_used": 0}
    return json.loads((_weights_dir(settings) / f"{version}.json").read_text())


def version_before(settings: Settings, day: date) -> str:
    """The latest weights version dated strictly before ``day`` (what scoring on ``day`` uses)."""
    older = [v for v in versions(settings) if _version_date(v) < day]
    return older[-1] if older else INITIAL


def weights_history(settings: Settings) -> pd.DataFrame:
    """One row per (version, rule): the queryable history of the weights and their evidence."""
    rows = []
    for v in versions(settings):
        rec = load_version(settings, v)
        for rule, w in rec["weights"].items():
            ev = rec["evidence"].get(rule, {})
            rows.append({"version": v, "date": rec["date"], "rule_id": rule, "weight": w,
                         "inspected_in_version": ev.get("new_inspected", 0),
                         "frauds_in_version": ev.get("new_frauds", 0)})
    return pd.DataFrame(rows)


def _decisions(settings: Settings, dates: list[date]) -> pd.DataFrame:
    """Channel decisions of the pipeline for the given declaration dates (empty for history days)."""
    cols = ["declaration_id", "item_no", "selection_reason", "model_version", "rule_weights_version", "run_id"]
    frames = []
    for d in sorted(set(dates)):
        p = partition(settings.scored_dir, "declaration_date", d) / "part-0.parquet"
        if p.exists():
            frames.append(pd.read_parquet(p, columns=cols))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def offences(settings: Settings, upto: date | None = None) -> pd.DataFrame:
    return read_partitions(settings.gold / "offences", "reported_date", upto=upto)


def update(settings: Settings, day: date) -> dict:
    """Run day ``day``'s feedback; returns a summary. Idempotent."""
    prev = version_before(settings, day)
    since = None if prev == INITIAL else date.fromisoformat(prev.removeprefix("rw-"))
    enf = ingest.silver(settings, "enforcement", upto=day)
    if since is not None:
        enf = enf[pd.to_datetime(enf.reported_date).dt.date > since]
    enf = enf.sort_values(["reported_date", "record_id"], kind="stable").reset_index(drop=True)
    customs = ingest.silver(settings, "customs", upto=day)
    items = customs.merge(enf[["declaration_id", "item_no"]].drop_duplicates(), on=["declaration_id", "item_no"])

    # Offence database: every outcome with the decision that caused it.
    dec = _decisions(settings, list(pd.to_datetime(items.declaration_date).dt.date.unique()))
    db = enf.drop(columns=["_batch_sha256"], errors="ignore").merge(
        items[["declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "hs_code"]],
        on=["declaration_id", "item_no"], how="left").merge(dec, on=["declaration_id", "item_no"], how="left")
    db["selection_reason"] = db.selection_reason.fillna("legacy")
    for r, part in db.groupby(pd.to_datetime(db.reported_date).dt.date, sort=True):
        replace_partition(part.reset_index(drop=True), partition(settings.gold / "offences", "reported_date", r))

    # Rule evidence: the rules evaluated on each outcome's item as of its declaration date.
    rules = load_rules(settings.rules_path)
    new = {r: {"inspected": 0, "frauds": 0} for r in rules.ids}
    if len(items):
        inp = {k: ingest.silver(settings, s, upto=day) for k, s in
               [("outcomes", "enforcement"), ("reference", "reference_prices"), ("tax", "tax"),
                ("fx", "exchange_rates")]}
        X = build_features(items, customs_history=customs, **inp)
        hits = evaluate(rules, item_frame(items, X))
        latest = enf.drop_duplicates(["declaration_id", "item_no"], keep="last")
        y = items[["declaration_id", "item_no"]].merge(latest, on=["declaration_id", "item_no"], how="left")
        fraud = (y.result == "FRAUD").to_numpy()
        for r in rules.ids:
            h = hits[r].to_numpy()
            new[r] = {"inspected": int(h.sum()), "frauds": int((h & fraud).sum())}

    fb = settings.feedback
    old = load_version(settings, prev)
    weights, evidence = {}, {}
    n0 = fb.prior_hits + fb.prior_misses
    for r, w0 in rules.initial_weights().items():
        pe = old["evidence"].get(r, {"alpha": w0 * n0, "beta": (1 - w0) * n0, "inspected": 0, "frauds": 0})
        # Decay only the observed part of the evidence, never below the prior.
        a = w0 * n0 + fb.decay * (pe["alpha"] - w0 * n0) + new[r]["frauds"]
        b = (1 - w0) * n0 + fb.decay * (pe["beta"] - (1 - w0) * n0) + new[r]["inspected"] - new[r]["frauds"]
        target = a / (a + b)
        prev_w = old["weights"].get(r, w0)
        step = max(-fb.max_step, min(fb.max_step, target - prev_w))
        weights[r] = round(prev_w + step, 6)
        evidence[r] = {"alpha": round(a, 6), "beta": round(b, 6), "posterior_precision": round(target, 6),
                       "inspected": pe["inspected"] + new[r]["inspected"], "frauds": pe["frauds"] + new[r]["frauds"],
                       "new_inspected": new[r]["inspected"], "new_frauds": new[r]["frauds"]}
    version = f"rw-{day.isoformat()}"
    rec = {"version": version, "date": day.isoformat(), "previous": prev, "weights": weights,
           "evidence": evidence, "outcomes_used": int(len(enf)),
           "outcome_reported_dates": [since.isoformat() if since else None, day.isoformat()],
           "method": f"Beta-Bernoulli, prior {n0:g} pseudo-inspections, decay {fb.decay}, max step {fb.max_step}"}
    atomic_write_bytes(_weights_dir(settings) / f"{version}.json", json.dumps(rec, indent=2).encode())
    hist = weights_history(settings)
    if len(hist):
        write_parquet_atomic(hist, _weights_dir(settings) / "history.parquet")
    summary = {"version": version, "previous": prev, "outcomes": int(len(enf)),
               "frauds": int((enf.result == "FRAUD").sum()),
               "revenue_recovered_usd": round(float(enf.revenue_recovered_usd.sum()), 2),
               "changed_rules": sum(abs(weights[r] - old["weights"].get(r, weights[r])) > 1e-9 for r in weights)}
    log.info("feedback %s: %d outcomes (%d frauds) since %s -> weights %s (%d rules changed)", day,
             summary["outcomes"], summary["frauds"], prev, version, summary["changed_rules"])
    return summary
