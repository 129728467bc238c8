"""Plots and explanations a training run logs: feature importance, SHAP summary, precision-recall curve, lift
chart and reliability diagram (matplotlib, written as PNG files into a folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.modeling.metrics import RATES, targeting_report
from sunat_pipeline.modeling.model import RiskModel

SHAP_SAMPLE = 2000  # rows of the holdout (or training set) explained in the SHAP summary


def shap_values(model: RiskModel, X: pd.DataFrame, n: int = SHAP_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """Exact TreeSHAP contributions (log-odds) of the first bag member on a sample of at most ``n`` rows."""
    import xgboost as xgb

    Xs = X.sample(n, random_state=seed) if len(X) > n else X
    c = model.classifiers_[0].get_booster().predict(xgb.DMatrix(Xs[model.feature_names_]), pred_contribs=True)
    return pd.DataFrame(c[:, :-1], columns=model.feature_names_, index=Xs.index)


def training_plots(out: Path, *, importance: pd.Series, shap: pd.DataFrame, X: pd.DataFrame, y: np.ndarray,
           scores: dict[str, np.ndarray], reliability: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    top = importance.head(20)[::-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh(top.index, top.to_numpy())
    ax.set_xlabel("gain importance (mean over the bag)")
    ax.set_title("Feature importance")
    fig.tight_layout()
    fig.savefig(out / "feature_importance.png", dpi=100)
    plt.close(fig)

    if len(shap):
        order = shap.abs().mean().sort_values(ascending=False).head(15).index[::-1]
        fig, ax = plt.subplots(figsize=(8, 6))
        rng = np.random.default_rng(0)
        for i, f in enumerate(order):
            v = X.loc[shap.index, f]
            col = v.rank(pct=True).fillna(0.5).to_numpy()
            ax.scatter(shap[f].to_numpy(), i + rng.uniform(-0.3, 0.3, len(v)), c=col, cmap="coolwarm", s=6,
                       alpha=0.6, vmin=0, vmax=1)
        ax.set_yticks(range(len(order)), order)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("SHAP value (log-odds contribution); colour: feature value rank (blue low, red high)")
        ax.set_title(f"SHAP summary ({len(shap)} holdout rows)")
        fig.tight_layout()
        fig.savefig(out / "shap_summary.png", dpi=100)
        plt.close(fig)

    has_both = 0 < y.sum() < len(y)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, sc in scores.items():
        if has_both:
            prec, rec, _ = precision_recall_curve(y, sc)
            ax.plot(rec, prec, label=name)
    ax.axhline(y.mean() if len(y) else 0, color="grey", ls=":", label="fraud rate")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall on the holdout")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "precision_recall_curve.png", dpi=100)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    share = np.arange(1, len(y) + 1) / max(1, len(y))
    for name, sc in scores.items():
        o = np.argsort(-np.asarray(sc, dtype=float), kind="stable")
        got = np.cumsum(y[o]) / max(1.0, y.sum())
        a1.plot(share, got, label=name)
        lift = [targeting_report(sc, y, rates=(k,))[f"precision_at_{k * 100:g}".replace(".", "_")]
                / max(1e-9, y.mean()) for k in RATES]
        a2.plot([k * 100 for k in RATES], lift, marker="o", label=name)
    a1.plot([0, 1], [0, 1], color="grey", ls=":")
    a1.set_xlabel("share of holdout inspected")
    a1.set_ylabel("share of frauds found")
    a1.set_title("Cumulative gains")
    a1.legend()
    a2.set_xlabel("inspection rate k (%)")
    a2.set_ylabel("lift = precision@k / fraud rate")
    a2.set_title("Lift at k")
    a2.axhline(1, color="grey", ls=":")
    a2.legend()
    fig.tight_layout()
    fig.savefig(out / "lift_chart.png", dpi=100)
    plt.close(fig)

    if len(reliability):
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(reliability.mean_predicted, reliability.observed_rate, marker="o", label="model")
        lim = max(0.05, float(reliability[["mean_predicted", "observed_rate"]].to_numpy().max()))
        ax.plot([0, lim], [0, lim], color="grey", ls=":", label="perfect")
        ax.set_xlabel("mean predicted fraud probability")
        ax.set_ylabel("observed fraud rate")
        ax.set_title("Reliability (holdout)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=100)
        plt.close(fig)
