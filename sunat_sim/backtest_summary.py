"""A backtest's figures across seeds: per policy, paired comparisons with 95% intervals, and the issue's bars.

Per policy: the truth metrics of each seed's run (``backtest_metrics.run_metrics``), their mean over seeds and
for each new scheme the median over seeds of the days to detect it. Comparisons pair every two policies on
the same days of the same worlds (``sunat_pipeline.backtest.stats``): the ratio of their totals of frauds
caught, revenue recovered and hits, with a stratified day-bootstrap interval.
"""

from __future__ import annotations

import itertools
from statistics import median

import numpy as np

from sunat_pipeline.backtest.stats import paired_difference, paired_ratio

MEANS = ("selected", "hits", "hit_rate", "frauds_caught", "fraud_items", "recall", "revenue_recovered_usd",
         "revenue_caught_at_stake_usd", "norm_rev")
PAIRED = {"frauds_caught": "frauds_caught", "revenue_recovered_usd": "recovered_usd", "hits": "hits"}


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def _median_days(xs: list, horizon: int) -> float | None:
    """Median days over seeds; a scheme never detected counts as beyond the horizon (censored), so one miss
    does not make a policy look faster. None when the median itself is censored."""
    vals = [horizon + 1 if x is None else x for x in xs]
    m = float(median(vals)) if vals else None
    return None if m is None or m > horizon else m


def policy_table(runs: dict[str, dict[int, dict]], live_days: int) -> dict[str, dict]:
    out = {}
    for p, by_seed in runs.items():
        seeds = sorted(by_seed)
        row = {k: _mean([by_seed[s][k] for s in seeds]) for k in MEANS}
        row["scorer_roc_auc_all_items"] = _mean([by_seed[s]["scorer"]["roc_auc_all_items"] for s in seeds])
        row["scorer_precision_at_10_all_items"] = _mean(
            [by_seed[s]["scorer"]["precision_at_10_all_items"] for s in seeds])
        row["model_roc_auc_all_items"] = _mean([by_seed[s]["scorer"].get("model_roc_auc_all_items") for s in seeds])
        gates = [by_seed[s].get("gate", {}) for s in seeds]
        n_gate, n_agree = sum(g.get("decisions", 0) for g in gates), sum(g.get("agree", 0) for g in gates)
        row["gate_decisions"], row["gate_agreement"] = n_gate, (round(n_agree / n_gate, 4) if n_gate else None)
        n_truth = sum(g.get("truth_promotes", 0) for g in gates)
        row["gate_truth_promotes"] = round(n_truth / n_gate, 4) if n_gate else None
        n_mat, n_mat_agree = (sum(g.get(k, 0) for g in gates) for k in ("material_decisions", "material_agree"))
        row["gate_material_decisions"] = n_mat
        row["gate_material_agreement"] = round(n_mat_agree / n_mat, 4) if n_mat else None
        row["gate_mean_regret"] = _mean([g.get("mean_regret") for g in gates])
        for k in ("efficiency_index_est", "efficiency_index_true", "green_fraud_rate_est", "green_fraud_rate_true"):
            row[k] = _mean([by_seed[s]["online"][k] for s in seeds])
        mechs = sorted({m for s in seeds for m in by_seed[s]["by_mechanism"]})
        row["recall_by_mechanism"] = {m: _mean([by_seed[s]["by_mechanism"].get(m, {}).get("recall") for s in seeds])
                                      for m in mechs}
        reasons = sorted({r for s in seeds for r in by_seed[s]["by_reason"]})
        row["hit_rate_by_reason"] = {r: _mean([by_seed[s]["by_reason"].get(r, {}).get("hit_rate") for s in seeds])
                                     for r in reasons}
        schemes = sorted({k for s in seeds for k in by_seed[s]["schemes"]})
        row["schemes"] = {k: {
            "median_days_to_first_detection": _median_days(
                [by_seed[s]["schemes"][k]["days_to_first_detection"] for s in seeds], live_days),
            "median_days_to_half_caught": _median_days(
                [by_seed[s]["schemes"][k]["days_to_half_caught"] for s in seeds], live_days),
            "per_seed_days_to_first_detection": [by_seed[s]["schemes"][k]["days_to_first_detection"] for s in seeds],
            "per_seed_days_to_half_caught": [by_seed[s]["schemes"][k]["days_to_half_caught"] for s in seeds],
            "recall": _mean([by_seed[s]["schemes"][k]["recall"] for s in seeds])} for k in schemes}
        out[p] = row
    return out


def _paired_series(runs: dict[str, dict[int, dict]], a: str, b: str, col: str):
    xa, xb, groups = [], [], []
    for s in sorted(set(runs[a]) & set(runs[b])):
        da, db = runs[a][s]["daily"], runs[b][s]["daily"]
        if da["day"] != db["day"]:
            raise ValueError(f"seed {s}: {a} and {b} were not run on the same days")
        xa += da[col]
        xb += db[col]
        groups += [s] * len(da[col])
    return np.array(xa, dtype=float), np.array(xb, dtype=float), np.array(groups)


def comparisons(runs: dict[str, dict[int, dict]]) -> list[dict]:
    """Every ordered pair (A, B) of policies: A/B ratios of the paired totals, and A - B of frauds caught."""
    out = []
    for a, b in itertools.permutations(sorted(runs), 2):
        row = {"a": a, "b": b}
        for name, col in PAIRED.items():
            xa, xb, g = _paired_series(runs, a, b, col)
            row[name] = paired_ratio(xa, xb, g)
        xa, xb, g = _paired_series(runs, a, b, "frauds_caught")
        row["frauds_caught_difference"] = paired_difference(xa, xb, g)
        out.append(row)
    return out


def find(comps: list[dict], a: str, b: str) -> dict | None:
    return next((c for c in comps if c["a"] == a and c["b"] == b), None)


def bars(table: dict, comps: list[dict]) -> list[dict]:
    """The acceptance bars of the issues that use the backtest, evaluated where their policies were run."""
    out = []

    def ratio_bar(a, b, metric, at_least, name):
        c = find(comps, a, b)
        if c is None:
            return
        r = c[metric]
        ok = r["ratio"] is not None and r["ratio"] >= at_least and r["ci95"][0] is not None and r["ci95"][0] > 1
        out.append({"bar": name, "value": r["ratio"], "ci95": r["ci95"], "pass": bool(ok)})

    ratio_bar("hybrid", "legacy_rules", "frauds_caught", 2.0, "hybrid catches >= 2x the frauds of legacy_rules, "
              "95% interval above 1")
    ratio_bar("hybrid", "random", "frauds_caught", 3.0, "hybrid catches >= 3x the frauds of random, 95% interval "
              "above 1")
    c = find(comps, "hybrid", "exploit")
    if c is not None:
        r = c["revenue_recovered_usd"]
        out.append({"bar": "hybrid not below exploit in cumulative revenue recovered", "value": r["ratio"],
                    "ci95": r["ci95"], "pass": bool(r["ratio"] is not None and r["ratio"] >= 1)})
    for other, margin, label in (("exploit", 0, "sooner than exploit"), ("hybrid_no_explore", 2,
                                                                        ">= 2 days sooner than hybrid_no_explore")):
        if "hybrid" in table and other in table:
            for k, h in table["hybrid"]["schemes"].items():
                o = table[other]["schemes"][k]
                hd, od = h["median_days_to_first_detection"], o["median_days_to_first_detection"]
                ok = hd is not None and (od is None or hd <= od - max(margin, 1e-9))
                out.append({"bar": f"hybrid detects scheme {k} {label} (median days to first detection)",
                            "value": [hd, od], "pass": bool(ok)})
    c = find(comps, "rules_learned", "legacy_rules")
    if c is not None:
        d = c["frauds_caught_difference"]
        out.append({"bar": "rules_learned catches more frauds than legacy_rules, 95% interval of the difference "
                    "above 0", "value": d["difference"], "ci95": d["ci95"],
                    "pass": bool(d["ci95"][0] is not None and d["ci95"][0] > 0)})
    c = find(comps, "hybrid", "hybrid_no_explore")
    if c is not None:
        r = c["revenue_recovered_usd"]
        out.append({"bar": "hybrid costs at most 5% of hybrid_no_explore's revenue recovered", "value": r["ratio"],
                    "ci95": r["ci95"], "pass": bool(r["ratio"] is not None and r["ratio"] >= 0.95)})
    for p in ("hybrid", "hybrid_no_explore", "exploit"):
        if table.get(p, {}).get("gate_decisions"):
            a = table[p]["gate_agreement"]
            out.append({"bar": f"{p}: champion/challenger decisions agree with the truth's (revenue at 10% on all "
                        "items) in >= 80% of the retrainings", "value": a, "n": table[p]["gate_decisions"],
                        "truth_promotes": table[p]["gate_truth_promotes"],
                        "material": {"decisions": table[p]["gate_material_decisions"],
                                     "agreement": table[p]["gate_material_agreement"]},
                        "mean_regret": table[p]["gate_mean_regret"],
                        "pass": bool(a is not None and a >= 0.8)})
    return out
