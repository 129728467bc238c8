"""Targeting measures of a backtest week and of a whole run (docs/backtest.md).

The unit is the declaration (what a policy selects): a declaration is a fraud when any of its items is.
Precision is the share of selected declarations that are frauds; recall the share of the week's frauds that were
selected; norm-precision is precision over its best possible value at that selection size: a week with fewer
frauds than selections cannot reach precision 1, its bound is ``min(1, frauds / selected)``. Over a run, the
measures pool the weeks (sums of hits over sums of selections, frauds and bounds), so a large week weighs more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def _ratio(num: float, den: float) -> float | None:
    return round(float(num) / float(den), 6) if den else None


def norm_precision(hits: int, selected: int, frauds: int) -> float | None:
    """Precision over its upper bound ``min(1, frauds / selected)``; None when nothing was selected or the week
    had no fraud (no selection could find any: the ratio is undefined)."""
    bound = min(selected, frauds)  # the most frauds ``selected`` inspections can find
    return _ratio(hits, bound)


def week_measures(fraud: np.ndarray, selected: np.ndarray, reason: np.ndarray | None = None) -> dict:
    """Measures of one week from per-declaration arrays: ``fraud`` (0/1), ``selected`` (bool) and the selection
    ``reason`` (counts and frauds per reason among the selected)."""
    fraud = np.asarray(fraud, dtype=bool)
    selected = np.asarray(selected, dtype=bool)
    n_sel, n_fraud = int(selected.sum()), int(fraud.sum())
    hits = int((fraud & selected).sum())
    out = {"n_declarations": int(len(fraud)), "n_frauds": n_fraud, "n_selected": n_sel, "n_hits": hits,
           "precision": _ratio(hits, n_sel), "recall": _ratio(hits, n_fraud),
           "norm_precision": norm_precision(hits, n_sel, n_fraud)}
    if reason is not None:
        reason = np.asarray(reason, dtype=object)
        out["by_reason"] = {str(r): {"n": int((reason[selected] == r).sum()),
                                     "frauds": int((reason[selected & fraud] == r).sum())}
                            for r in sorted(set(reason[selected]))}
    return out


def top_k_precision(fraud: np.ndarray, score: np.ndarray, k: int) -> float | None:
    """Precision of the ``k`` declarations with the highest ``score`` (ties by position): how good the week's
    ranking was, whatever shares the policy gave it."""
    if k <= 0 or not len(score):
        return None
    top = np.argsort(-np.asarray(score, dtype=float), kind="stable")[:k]
    return round(float(np.asarray(fraud, dtype=float)[top].mean()), 6)


def pooled(weeks: Iterable[Mapping]) -> dict:
    """A run's measures from its weeks' counts (see the module docstring), with precision per selection reason."""
    weeks = list(weeks)
    sel = sum(w["n_selected"] for w in weeks)
    hits = sum(w["n_hits"] for w in weeks)
    frauds = sum(w["n_frauds"] for w in weeks)
    bound = sum(min(w["n_selected"], w["n_frauds"]) for w in weeks)
    weekly = [w["precision"] for w in weeks if w["precision"] is not None]
    reasons: dict[str, dict] = {}
    for w in weeks:
        for r, c in (w.get("by_reason") or {}).items():
            acc = reasons.setdefault(r, {"n": 0, "frauds": 0})
            acc["n"] += c["n"]
            acc["frauds"] += c["frauds"]
    for acc in reasons.values():
        acc["precision"] = _ratio(acc["frauds"], acc["n"])
    return {"precision": _ratio(hits, sel), "recall": _ratio(hits, frauds), "norm_precision": _ratio(hits, bound),
            "n_selected": sel, "n_hits": hits, "n_frauds": frauds, "n_weeks": len(weeks),
            "mean_weekly_precision": round(float(np.mean(weekly)), 6) if weekly else None,
            "by_reason": dict(sorted(reasons.items()))}
