"""Targeting metrics at an inspection rate k: Precision@k, Recall@k, Revenue@k, Norm-Rev."""

from __future__ import annotations

import numpy as np

RATES = (0.01, 0.02, 0.05, 0.10)


def _top(score: np.ndarray, k: float) -> np.ndarray:
    n = max(1, int(round(len(score) * k)))
    # Stable order on ties so the same scores always select the same items.
    return np.argsort(-np.asarray(score, dtype=float), kind="stable")[:n]


def at_k(score, y, revenue=None, k: float = 0.05) -> dict[str, float]:
    y = np.asarray(y, dtype=float)
    top = _top(score, k)
    out = {"precision": float(y[top].mean()) if len(top) else 0.0,
           "recall": float(y[top].sum() / y.sum()) if y.sum() else 0.0}
    if revenue is not None:
        rev = np.asarray(revenue, dtype=float) * y
        total = rev.sum()
        got = rev[top].sum()
        best = np.sort(rev)[::-1][: len(top)].sum()
        out["revenue"] = float(got / total) if total else 0.0
        out["norm_rev"] = float(got / best) if best else 0.0
    return out


def targeting_report(score, y, revenue=None, rates=RATES) -> dict[str, float]:
    """Flat dict e.g. precision_at_5, recall_at_5, revenue_at_5, norm_rev_at_5 for each rate."""
    out = {}
    for k in rates:
        tag = f"{k * 100:g}".replace(".", "_")
        for name, v in at_k(score, y, revenue, k).items():
            out[f"{name}_at_{tag}"] = round(v, 6)
    return out
