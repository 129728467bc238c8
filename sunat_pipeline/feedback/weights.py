"""Rule weights: versioned Beta-Bernoulli estimates of each rule's precision, and their history.

A rule's weight estimates its precision (share of inspected items hitting the rule that turned out
fraudulent; docs/feedback.md has the maths). The rules file's weight is the prior mean, worth
``prior_hits + prior_misses`` pseudo-inspections; the observed evidence decays by ``decay`` per day so the
weights follow changing behaviour; a correction retracts the superseded outcome; one version moves a weight
by at most ``max_step``. Version ``rw-D`` (``gold/rule_weights/rw-D.json``) is written by day D's feedback
(``offences.update``) and is immutable; scoring on day D uses the latest version dated before D.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.lake.store import atomic_write_bytes, write_parquet_atomic
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import Settings

INITIAL = "rw-initial"


def weights_dir(settings: Settings) -> Path:
    return settings.gold / "rule_weights"


def version_date(version: str) -> date:
    return date.fromisoformat(version.removeprefix("rw-"))


def versions(settings: Settings) -> list[str]:
    """Dated versions, oldest first."""
    d = weights_dir(settings)
    return sorted(p.stem for p in d.glob("rw-????-??-??.json")) if d.exists() else []


def load_version(settings: Settings, version: str) -> dict:
    if version == INITIAL:
        rules = load_rules(settings.rules_path)
        n0 = settings.feedback.prior_hits + settings.feedback.prior_misses
        return {"version": INITIAL, "date": None, "previous": None, "weights": rules.initial_weights(),
                "evidence": {r: {"alpha": w * n0, "beta": (1 - w) * n0, "inspected": 0, "frauds": 0}
                             for r, w in rules.initial_weights().items()}, "outcomes_used": 0}
    return json.loads((weights_dir(settings) / f"{version}.json").read_text())


def version_before(settings: Settings, day: date) -> str:
    """The latest weights version dated strictly before ``day`` (what scoring on ``day`` uses)."""
    older = [v for v in versions(settings) if version_date(v) < day]
    return older[-1] if older else INITIAL


def weights_history(settings: Settings) -> pd.DataFrame:
    """One row per (version, rule): the queryable history of the weights and their evidence."""
    rows = []
    for v in versions(settings):
        rec = load_version(settings, v)
        for rule, w in rec["weights"].items():
            ev = rec["evidence"].get(rule, {})
            rows.append({"version": v, "date": rec["date"], "rule_id": rule, "weight": w,
                         "posterior_precision": ev.get("posterior_precision", np.nan),
                         "ci90_low": ev.get("ci90_low", np.nan), "ci90_high": ev.get("ci90_high", np.nan),
                         "inspected": ev.get("inspected", 0), "frauds": ev.get("frauds", 0),
                         "inspected_in_version": ev.get("new_inspected", 0),
                         "frauds_in_version": ev.get("new_frauds", 0),
                         "retracted_in_version": ev.get("retracted_inspected", 0)})
    return pd.DataFrame(rows)


def _rule_counts(rows: pd.DataFrame, day: date, decay: float) -> tuple[dict, dict, dict, dict]:
    """Per rule: items hit, frauds among them, and the same weighted by ``decay`` to the power of each item's
    age on ``day`` (days since its declaration: when the behaviour happened, not when its outcome was folded;
    rows without a declaration date count as of ``day``)."""
    if rows.empty:
        return {}, {}, {}, {}
    age = np.zeros(len(rows))
    if "declaration_date" in rows:
        age = (pd.Timestamp(day) - pd.to_datetime(rows.declaration_date)).dt.days.clip(lower=0).fillna(0).to_numpy()
    fraud = (rows.result == "FRAUD").to_numpy()
    w = decay ** age.astype(float)
    x = pd.DataFrame({"rule": rows.rule_hits.to_numpy(), "fraud": fraud, "w": w,
                      "wf": np.where(fraud, w, 0.0)}).explode("rule").dropna(subset=["rule"])
    g = x.groupby("rule")
    return (g.size().astype(int).to_dict(), g.fraud.sum().astype(int).to_dict(), g.w.sum().to_dict(),
            g.wf.sum().to_dict())


def _beta_interval(a: float, b: float) -> tuple[float, float]:
    """90% equal-tailed interval of Beta(a, b)."""
    from scipy.special import betaincinv

    lo, hi = betaincinv(a, b, [0.05, 0.95])
    return round(float(lo), 6), round(float(hi), 6)


def derive(settings: Settings, day: date, prev: str, added: pd.DataFrame, removed: pd.DataFrame) -> tuple:
    """The weights and evidence of version rw-``day`` from the previous version and the change of outcomes
    (``added``: current outcomes new with this version; ``removed``: those it superseded). Returns
    (weights, evidence, the previous version's record, a description of the method)."""
    rules = load_rules(settings.rules_path)
    fb = settings.feedback
    old = load_version(settings, prev)
    n0 = fb.prior_hits + fb.prior_misses
    days = 0 if prev == INITIAL else max(0, (day - version_date(prev)).days)
    keep = fb.decay ** days
    ni, nf, wi, wf = _rule_counts(added, day, fb.decay)
    ri, rf, wri, wrf = _rule_counts(removed, day, fb.decay)
    weights, evidence = {}, {}
    for r, w0 in rules.initial_weights().items():
        a0, b0 = w0 * n0, (1 - w0) * n0
        pe = old["evidence"].get(r, {"alpha": a0, "beta": b0, "inspected": 0, "frauds": 0})
        add_i, add_f, ret_i, ret_f = ni.get(r, 0), nf.get(r, 0), ri.get(r, 0), rf.get(r, 0)
        # Decay only the observed part of the evidence, each outcome from its declaration's date: 180 days of
        # history folded at once, or a late extract, weigh what they would have weighed had they come day by
        # day (before, a first version gave 180-day-old outcomes full weight, and the weights then followed
        # a change of behaviour months late). A correction retracts what its superseded outcome weighs now;
        # the observed part never goes below zero, so the posterior never falls below the prior.
        a = a0 + max(0.0, keep * (pe["alpha"] - a0) + wf.get(r, 0.0) - wrf.get(r, 0.0))
        b = b0 + max(0.0, keep * (pe["beta"] - b0) + (wi.get(r, 0.0) - wf.get(r, 0.0))
                     - (wri.get(r, 0.0) - wrf.get(r, 0.0)))
        target = a / (a + b)
        prev_w = old["weights"].get(r, w0)
        step = max(-fb.max_step, min(fb.max_step, target - prev_w))
        weights[r] = round(prev_w + step, 6)
        lo, hi = _beta_interval(a, b)
        evidence[r] = {"alpha": round(a, 6), "beta": round(b, 6), "posterior_precision": round(target, 6),
                       "ci90_low": lo, "ci90_high": hi,
                       "inspected": pe["inspected"] + add_i - ret_i, "frauds": pe["frauds"] + add_f - ret_f,
                       "new_inspected": add_i, "new_frauds": add_f,
                       "retracted_inspected": ret_i, "retracted_frauds": ret_f,
                       "step": round(weights[r] - prev_w, 6), "clamped": abs(target - prev_w) > fb.max_step}
    method = (f"Beta-Bernoulli, prior {n0:g} pseudo-inspections at the rules-file weight, decay {fb.decay} per "
              f"day of an outcome's age (from its declaration), max step {fb.max_step}")
    return weights, evidence, old, method


def write_version(settings: Settings, rec: dict) -> bool:
    """Store version ``rec["version"]`` (its JSON is the commit of a day's feedback) and refresh
    ``history.parquet``; files whose content is unchanged keep their bytes. Returns whether the JSON changed."""
    data = json.dumps(rec, indent=2).encode()
    path = weights_dir(settings) / f"{rec['version']}.json"
    changed = not path.exists() or path.read_bytes() != data
    if changed:
        atomic_write_bytes(path, data)
    hist = weights_history(settings)
    hpath = weights_dir(settings) / "history.parquet"
    if len(hist) and (not hpath.exists() or not pd.read_parquet(hpath).equals(hist)):
        write_parquet_atomic(hist, hpath)
    return changed
