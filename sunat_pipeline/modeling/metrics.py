"""Targeting metrics at an inspection rate k (Precision@k, Recall@k, Revenue@k, Norm-Rev), the primary metric
that promotion and the hyperparameter search rank by, and calibration (scikit-learn's Brier score and
reliability curve)."""

from __future__ import annotations

import numpy as np
import pandas as pd

RATES = (0.01, 0.02, 0.05, 0.10)
# The primary metric: the share of the frauds' revenue captured by inspecting the top 10% by expected revenue
# (about the configured capacity). Labels without revenue (an external extract) cannot measure it: there
# the same rate ranks by fraud probability and counts frauds instead.
PRIMARY_METRIC = "revenue_at_10"
PRIMARY_METRIC_WITHOUT_REVENUE = "precision_at_10"
PRIMARY_RATE = 0.10


def top_positions(score: np.ndarray, k: float) -> np.ndarray:
    """Positions of the top share ``k`` of ``score`` (at least one), best first."""
    n = max(1, int(round(len(score) * k)))
    # Stable order on ties so the same scores always select the same items.
    return np.argsort(-np.asarray(score, dtype=float), kind="stable")[:n]


def at_k(score, y, revenue=None, k: float = 0.05) -> dict[str, float]:
    y = np.asarray(y, dtype=float)
    top = top_positions(score, k)
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


def primary_metric(revenue) -> str:
    """The primary metric's name for labels with this revenue (None: labels that carry no revenue)."""
    return PRIMARY_METRIC if revenue is not None else PRIMARY_METRIC_WITHOUT_REVENUE


def primary_score(pred: pd.DataFrame, y, revenue=None) -> tuple[str, float]:
    """(name, value) of the primary metric of ``RiskModel.predict`` output ``pred`` on labels ``y``."""
    name = primary_metric(revenue)
    if name == PRIMARY_METRIC:
        r = targeting_report(pred.expected_revenue_usd.to_numpy(), y, revenue, rates=(PRIMARY_RATE,))
    else:
        r = targeting_report(pred.fraud_probability.to_numpy(), y, rates=(PRIMARY_RATE,))
    return name, float(r.get(name, 0.0))


def calibration(p, y, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """Brier score, expected calibration error and a reliability table over equal-count bins of the prediction
    (scikit-learn's ``brier_score_loss`` and ``calibration_curve(strategy="quantile")``)."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    cols = ["bin", "n", "mean_predicted", "observed_rate", "p_min", "p_max"]
    if not len(p):
        return {}, pd.DataFrame(columns=cols)
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile", pos_label=1)
    # The same bins as calibration_curve (its quantile edges) for the counts and ranges of the table.
    edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    idx = np.searchsorted(edges[1:-1], p)
    frame = pd.DataFrame({"bin": idx, "p": p}).groupby("bin").p.agg(["size", "min", "max"])
    table = pd.DataFrame({"bin": np.arange(1, len(frame) + 1), "n": frame["size"].to_numpy(),
                          "mean_predicted": predicted, "observed_rate": observed,
                          "p_min": frame["min"].to_numpy(), "p_max": frame["max"].to_numpy()})
    ece = float((table.n * (table.mean_predicted - table.observed_rate).abs()).sum() / len(p))
    return {"brier": float(brier_score_loss(y, p, labels=[0, 1])), "ece": ece,
            "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}, table
