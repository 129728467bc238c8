"""The champion/challenger gate on all traffic (modeling/gate.py): inverse-propensity estimates from the labels a
policy chose, the fallback to the labelled holdout, and what a gate leaves for audit."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_pipeline.modeling import gate
from sunat_pipeline.selection.output import COLUMNS, write_scored
from sunat_pipeline.settings import get_settings


def _population(rng, n=4000):
    """Items with a fraud revenue, a champion that sees one kind of fraud and a challenger that sees another."""
    a = rng.random(n) < 0.05  # frauds the champion's features reveal
    b = rng.random(n) < 0.05  # frauds only the challenger's features reveal
    fraud = a | b
    rev = np.where(fraud, rng.lognormal(8, 1, n), 0.0)
    champion = a * 3 + rng.normal(0, 1, n)
    challenger = a * 2.5 + b * 3 + rng.normal(0, 1, n)
    return fraud, rev, champion, challenger


def _truth_share(score, rev):
    return rev[gate.top_mask(score)].sum() / rev.sum()


def _select(rng, champion, n_exploit, n_random):
    """The champion's policy: its top picks (probability 1) and a uniform random share of the rest."""
    n = len(champion)
    pi = np.zeros(n)
    top = np.argsort(-champion, kind="stable")[:n_exploit]
    pi[top] = 1.0
    rest = np.setdiff1d(np.arange(n), top)
    pick = rng.choice(rest, n_random, replace=False)
    pi[rest] = n_random / len(rest)
    selected = np.zeros(n, bool)
    selected[top] = selected[pick] = True
    return selected, pi


def test_the_estimate_is_unbiased_where_the_labelled_holdout_favours_the_champion():
    rng = np.random.default_rng(0)
    fraud, rev, champion, challenger = _population(rng)
    top_rev = lambda score: rev[gate.top_mask(score)].sum()  # noqa: E731
    truth = top_rev(challenger) - top_rev(champion)
    assert truth / rev.sum() > 0.05  # the challenger is truly better on all traffic
    est, naive = [], []
    for _ in range(1000):
        selected, pi = _select(rng, champion, 300, 60)
        value = np.where(selected, rev, 0.0)
        est.append(gate.ipw_revenue(challenger, value, pi) - gate.ipw_revenue(champion, value, pi))
        # the old gate: rank only the labelled items, no weights
        lab = np.flatnonzero(selected)
        r = rev[lab]
        naive.append(_truth_share(challenger[lab], r) - _truth_share(champion[lab], r))
    est = np.array(est)
    se = est.std() / np.sqrt(len(est))
    assert abs(est.mean() - truth) < 3 * se and se < 0.1 * truth, (est.mean(), truth, se)  # unbiased
    # judged on the champion's own picks, the challenger's advantage nearly vanishes (0.05 against 0.39)
    assert np.mean(naive) < truth / rev.sum() / 4
    assert np.mean(np.array(est) > 0) > 0.75  # and the estimate mostly gets the sign right


def _scored_day(d, n, rng):
    """A minimal scored day: n one-item declarations, 10% selected (half at random, half by exploitation)."""
    ids = [f"118-{d}-{i:04d}" for i in range(n)]
    ch = np.array(["GREEN"] * n, dtype=object)
    ch[: n // 10] = "RED"
    prob = np.where(np.arange(n) < n // 20, 1.0, 0.05)
    df = pd.DataFrame({c: pd.Series([None] * n, dtype="object") for c in COLUMNS})
    df = df.assign(declaration_id=ids, item_no=1, declaration_date=d, customs_office="118", channel=ch,
                   selection_probability=prob, fraud_probability=0.1, rule_hits=[[] for _ in range(n)],
                   reasons=[[] for _ in range(n)])
    return df[COLUMNS]


def _holdout(tmp_path, seed: int, fraud_rate: float):
    """Settings on an empty lake, the gate's date, 14 holdout days of scored items and the selected ones' labels."""
    rng = np.random.default_rng(seed)
    asof = date(2026, 7, 22)
    days = [asof - timedelta(days=k) for k in range(14, 0, -1)]
    items = pd.concat([_scored_day(d, 100, rng) for d in days], ignore_index=True)
    sel = items[items.channel != "GREEN"]
    labels = pd.DataFrame({"declaration_id": sel.declaration_id, "item_no": 1,
                           "y": (rng.random(len(sel)) < fraud_rate).astype(int), "revenue": 1000.0})
    return get_settings(lake_root=tmp_path / "data"), rng, asof, days, items, labels


def test_all_traffic_decides_once_days_are_scored_and_reported_and_leaves_its_items(tmp_path):
    s, rng, asof, days, items, labels = _holdout(tmp_path, 1, 0.3)
    score_a, score_b = rng.random(len(items)), rng.random(len(items))

    # Nothing scored yet (the legacy history): the labelled holdout decides.
    est = gate.all_traffic(s, asof, items[["declaration_id", "item_no", "declaration_date"]], labels, score_a, score_b)
    assert est["method"] == "labelled_holdout" and est["coverage"] == 0

    for d in days:
        write_scored(s, d, items[items.declaration_date == d])
    est = gate.all_traffic(s, asof, items[["declaration_id", "item_no", "declaration_date"]], labels, score_a, score_b)
    assert est["method"] == "ipw_all_traffic" and est["days"] == 14 and est["n_items"] == 1400
    lo, hi = est["difference_ci95"]
    assert lo <= est["difference"] <= hi
    kept = pd.read_parquet(gate.gate_dir(s, asof) / "items.parquet")
    assert len(kept) == 1400
    assert {"challenger", "champion", "selection_probability", "y", "in_gate"} <= set(kept.columns)

    # A day whose selections are not reported yet is left out (its pending frauds would count as clean).
    late = labels[~labels.declaration_id.str.contains(str(days[-1]))]
    est2 = gate.all_traffic(s, asof, items[["declaration_id", "item_no", "declaration_date"]], late, score_a, score_b)
    assert est2["days"] == 13
    gate.record_decision(s, asof, {"promoted": False, "all_traffic": est2})
    assert json.loads((gate.gate_dir(s, asof) / "decision.json").read_text())["all_traffic"]["days"] == 13

    # The last five days still waiting for reports (the backtest's 1-5 day delays): the reported days decide.
    recent = labels[~labels.declaration_id.str.contains("|".join(str(d) for d in days[-5:]))]
    est3 = gate.all_traffic(s, asof, items[["declaration_id", "item_no", "declaration_date"]], recent, score_a,
                            score_b)
    assert est3["method"] == "ipw_all_traffic" and est3["days"] == 9 and est3["coverage"] == 1.0
    # Fewer than a week of reported days: the labelled holdout decides.
    few = labels[labels.declaration_id.str.contains("|".join(str(d) for d in days[:6]))]
    est4 = gate.all_traffic(s, asof, items[["declaration_id", "item_no", "declaration_date"]], few, score_a, score_b)
    assert est4["method"] == "labelled_holdout" and est4["days"] == 6


def test_items_no_policy_could_select_are_left_out_and_a_policy_without_a_random_share_falls_back(tmp_path):
    s, rng, asof, days, items, labels = _holdout(tmp_path, 2, 1.0)
    keys = items[["declaration_id", "item_no", "declaration_date"]]
    # A small office whose random quota rounded to nothing: its unselected items had no chance (probability 0).
    zero = (items.channel == "GREEN") & (np.arange(len(items)) % 100 >= 95)
    for d in days:
        write_scored(s, d, items[items.declaration_date == d].assign(
            selection_probability=np.where(zero[items.declaration_date == d], 0.0,
                                           items.selection_probability[items.declaration_date == d])))
    # A challenger ranking exactly those items first would fill its top 10% with items counted as clean.
    a = np.where(zero, 10.0, rng.random(len(items)))
    est = gate.all_traffic(s, asof, keys, labels, a, rng.random(len(items)))
    assert est["method"] == "ipw_all_traffic" and est["n_items"] == 1400 - int(zero.sum())
    assert est["coverage"] == round(1 - zero.mean(), 4)
    kept = pd.read_parquet(gate.gate_dir(s, asof) / "items.parquet")
    assert not kept.in_gate[kept.selection_probability == 0].any()
    # No random share at all (the exploit policy): only what it selected had a chance: the labelled holdout.
    for d in days:
        day = items[items.declaration_date == d]
        write_scored(s, d, day.assign(selection_probability=np.where(day.channel == "GREEN", 0.0, 1.0)))
    est = gate.all_traffic(s, asof, keys, labels, a, rng.random(len(items)))
    assert est["method"] == "labelled_holdout" and est["coverage"] == 0.1


def test_a_challenger_is_kept_out_only_when_shown_worse():
    est = {"challenger_share": 0.60, "champion_share": 0.62, "difference": -0.02, "difference_ci95": [-0.09, 0.05]}
    assert gate.decide(est, 0.0, "not_worse")[0]  # inside the noise: the newer model goes in
    assert not gate.decide(est, 0.0, "better")[0]  # the point rule keeps the champion
    worse = {**est, "difference": -0.10, "difference_ci95": [-0.16, -0.03]}
    promoted, why = gate.decide(worse, 0.0, "not_worse")
    assert not promoted and why.startswith("challenger worse")
    assert not gate.decide(est, 0.06, "not_worse")[0]  # a margin the whole interval falls short of
    better = {**est, "difference": 0.05, "difference_ci95": [0.01, 0.09]}
    assert gate.decide(better, 0.0, "better")[0] and gate.decide(better, 0.0, "not_worse")[0]
