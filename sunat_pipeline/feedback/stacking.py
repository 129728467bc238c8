"""Model and rules combined: stacked log-odds, refitted every day on recent outcomes (docs/selection.md).

An item's risk score, the probability exploitation ranks by, is

    logit(p) = a + b * logit(p_model) + sum over risk areas k of c_k * e_k,
    e_k = -sum over the rules of area k that hit the item of log(1 - w_rule)

with ``w_rule`` the rule's learned weight (its estimated precision, ``feedback.weights``). ``e_k`` is 0 when no
rule of the area hits and grows with every hit and with each hit's weight, so a rule whose hit rate rises
moves its matches up the next day and one whose hit rate falls moves them down. The risk areas' weights
``c_k`` (as in the composite score of the seed simulation) are bounded below by ``stack_rule_min`` so
the rules never lose their say, and the model's ``b`` and the intercept ``a`` recalibrate the mix.

The coefficients are a penalised logistic regression fitted by the day's feedback on the inspected items
of the last ``stack_window_days`` days (the model's probability and the rule weights as they were when each
item was scored: nothing the outcomes taught later leaks in), each weighted by its inverse selection
probability (capped) so the random share stands for the traffic it was drawn from. A Gaussian prior centred
on (a=0, b=1, c=``stack_rule_prior``) keeps the fit sane on few labels; below ``stack_min_outcomes``
labels or ``stack_min_frauds`` frauds the prior alone is used. The result travels in the weights version
(``rw-D.json``, key ``stack``), so scoring on a day uses the version dated before it, and a re-run repeats it.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from sunat_pipeline.selection.output import RULES_ONLY, read_scored
from sunat_pipeline.selection.rules import RuleSet
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
_CLIP = 1e-6  # probabilities are kept in [_CLIP, 1 - _CLIP] before taking log-odds
_BOUNDS = {"intercept": (-5.0, 5.0), "model": (0.2, 3.0), "area": (None, 5.0)}


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _CLIP, 1 - _CLIP)
    return np.log(p / (1 - p))


def area_evidence(rules: RuleSet, hit_lists, weights: dict[str, float]) -> pd.DataFrame:
    """Per item (rows of ``hit_lists``, each a list of rule ids) and risk area: -sum log(1 - w) over its hits."""
    area_of = {r.id: r.area for r in rules.rules}
    areas = list(rules.areas)
    col = {a: k for k, a in enumerate(areas)}
    out = np.zeros((len(hit_lists), len(areas)))
    for i, hl in enumerate(hit_lists):
        for rid in (hl if hl is not None else []):
            if rid in area_of:
                out[i, col[area_of[rid]]] -= np.log1p(-min(max(float(weights.get(rid, 0.0)), 0.0), 0.999))
    return pd.DataFrame(out, columns=areas)


def prior(settings: Settings, rules: RuleSet) -> dict:
    """The coefficients used before there is enough evidence: the model at face value plus the rules."""
    c0 = settings.feedback.stack_rule_prior
    return {"intercept": 0.0, "model": 1.0, "areas": {a: c0 for a in rules.areas}, "fitted": False,
            "n": 0, "frauds": 0}


def risk_score(stack: dict, p_model, evidence: pd.DataFrame) -> np.ndarray:
    """The combined fraud probability of each item (``evidence``: ``area_evidence``'s frame)."""
    z = stack["intercept"] + stack["model"] * _logit(p_model)
    for a, c in stack["areas"].items():
        if a in evidence:
            z = z + c * evidence[a].to_numpy(dtype=float)
    return 1 / (1 + np.exp(-z))


def combine(pred: pd.DataFrame, stack: dict, evidence: pd.DataFrame) -> pd.DataFrame:
    """The model's predictions with the risk score as ``fraud_probability`` (expected revenue follows); the
    model's own probability stays in ``model_fraud_probability``."""
    p = risk_score(stack, pred.fraud_probability.to_numpy(dtype=float), evidence.set_axis(pred.index))
    return pred.assign(model_fraud_probability=pred.fraud_probability, fraud_probability=p.round(6),
                       expected_revenue_usd=(p * pred.revenue_if_fraud_usd.to_numpy(dtype=float)).round(2))


def _training_rows(settings: Settings, day: date, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Inspected items the pipeline scored in the window, with their label, the model's probability, the
    rules that hit and the weights version in force when they were scored, and the selection probability."""
    since = day - timedelta(days=settings.feedback.stack_window_days)
    o = outcomes[(outcomes.selection_reason != "legacy") & outcomes.declaration_date.notna()]
    o = o[pd.to_datetime(o.declaration_date) >= pd.Timestamp(since)]  # timestamps: no date object per row
    if o.empty:
        return pd.DataFrame()
    sc = read_scored(settings, since=since, upto=day)
    if sc.empty:
        return pd.DataFrame()
    if "model_fraud_probability" not in sc:  # days scored before schema 5: fraud_probability was the model's
        sc["model_fraud_probability"] = sc.fraud_probability
    sc["model_fraud_probability"] = sc.model_fraud_probability.fillna(sc.fraud_probability)
    if "selection_probability" not in sc:
        sc["selection_probability"] = 1.0
    sc = sc[sc.model_version.astype(str) != RULES_ONLY]  # a rules-only day has no model probability to stack
    key = ["declaration_id", "item_no"]
    y = o.assign(item_no=o.item_no.astype("int64"), y=(o.result == "FRAUD").astype(float)) \
        .groupby(key, as_index=False).y.max()
    cols = [*key, "model_fraud_probability", "rule_hits", "rule_weights_version", "selection_probability"]
    rows = sc[cols].assign(item_no=sc.item_no.astype("int64")).merge(y, on=key)
    return rows.sort_values(key, kind="stable").reset_index(drop=True)


def fit(settings: Settings, day: date, outcomes: pd.DataFrame, rules: RuleSet) -> dict:
    """Day ``day``'s stack from the current outcomes (the offence database's current rows)."""
    from sunat_pipeline.feedback.weights import load_version

    fb = settings.feedback
    base = prior(settings, rules)
    rows = _training_rows(settings, day, outcomes)
    n, k = len(rows), int(rows.y.sum()) if len(rows) else 0
    if n < fb.stack_min_outcomes or k < fb.stack_min_frauds:
        return {**base, "n": n, "frauds": k}
    ev = pd.concat([area_evidence(rules, g.rule_hits.tolist(), load_version(settings, v)["weights"]).set_axis(g.index)
                    for v, g in rows.groupby("rule_weights_version", sort=True)]).sort_index()
    areas = list(rules.areas)
    X = np.column_stack([np.ones(n), _logit(rows.model_fraud_probability), ev[areas].to_numpy()])
    y = rows.y.to_numpy()
    w = np.minimum(1 / rows.selection_probability.fillna(1.0).clip(lower=1e-9).to_numpy(dtype=float), fb.stack_max_ipw)
    w = w * n / w.sum()
    centre = np.array([0.0, 1.0, *[fb.stack_rule_prior] * len(areas)])
    prec = np.full(len(centre), 1 / fb.stack_prior_sd ** 2)

    def loss(theta):
        z = X @ theta
        # log(1 + e^z) - y z, stably; plus the Gaussian prior
        nll = np.sum(w * (np.logaddexp(0, z) - y * z))
        d = theta - centre
        grad = X.T @ (w * (1 / (1 + np.exp(-z)) - y)) + prec * d
        return nll + 0.5 * np.sum(prec * d * d), grad

    lo_area = (fb.stack_rule_min, _BOUNDS["area"][1])
    bounds = [_BOUNDS["intercept"], _BOUNDS["model"], *[lo_area] * len(areas)]
    res = minimize(loss, centre, jac=True, method="L-BFGS-B", bounds=bounds)
    t = [round(float(v), 6) for v in res.x]
    out = {"intercept": t[0], "model": t[1], "areas": dict(zip(areas, t[2:], strict=True)), "fitted": True,
           "n": n, "frauds": k, "converged": bool(res.success)}
    log.info("stack %s: fitted on %d inspected items (%d frauds): a=%.2f b=%.2f areas %s", day, n, k, t[0], t[1],
             {a: round(c, 2) for a, c in out["areas"].items()})
    return out
