"""The plots of the daily KPI report: matplotlib (Agg) figures returned as embedded PNG ``<img>`` tags
(empty text when there is nothing to plot)."""

from __future__ import annotations

import base64
import io
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.reporting.kpi_tables import ALL
from sunat_pipeline.settings import Settings


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>"


def _figure(w: float = 7.5, h: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(figsize=(w, h))


def hit_rates(eff: pd.DataFrame) -> str:
    d = eff[(eff.period_type == "day") & (eff.customs_office == ALL)]
    if d.empty:
        return ""
    fig, ax = _figure()
    x = pd.to_datetime(d.period)
    for col, label, style in [("hit_rate_red", "RED", "o-"), ("hit_rate_yellow", "YELLOW", "s-"),
                              ("hit_rate_targeted", "targeted (rules, model, exploration)", "^-"),
                              ("hit_rate_random", "random", "x--")]:
        ax.plot(x, 100 * d[col].astype(float), style, label=label)
    ax.set_ylabel("hit rate (%)")
    ax.set_title("Hit rate by decision day (inspected declarations with an offence)")
    ax.legend(fontsize=8, ncols=2)
    fig.autofmt_xdate()
    return _png(fig)


def efficiency(eff: pd.DataFrame) -> str:
    d = eff[(eff.period_type == "day") & (eff.customs_office == ALL)]
    a = eff[(eff.period_type == "all") & (eff.customs_office == ALL)]
    if d.empty:
        return ""
    fig, ax = _figure()
    x = pd.to_datetime(d.period)
    ax.bar(x, d.efficiency_index.astype(float).fillna(0), color="#4c72b0", label="efficiency index of the day")
    if len(a) and pd.notna(a.efficiency_index.iloc[0]):
        ax.axhline(float(a.efficiency_index.iloc[0]), color="#dd8452", label="all days")
    ax.axhline(1.0, color="grey", ls=":", label="random = 1")
    ax.set_ylabel("targeted / random hit rate")
    ax.set_title("Efficiency index (lift of targeted over random selection)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def rules(rules: pd.DataFrame) -> str:
    if rules.empty:
        return ""
    fig, ax = _figure(7.5, 0.35 * len(rules) + 1.2)
    y = np.arange(len(rules))[::-1]
    p = rules.posterior_precision.astype(float)
    lo = (p - rules.ci90_low.astype(float)).clip(lower=0).fillna(0)
    hi = (rules.ci90_high.astype(float) - p).clip(lower=0).fillna(0)
    ax.barh(y, p.fillna(0), xerr=[lo, hi], color="#8fb0d6", label="posterior precision (90% interval)")
    ax.plot(rules.initial_weight.astype(float), y, "k|", ms=12, label="rules-file weight")
    ax.plot(rules.weight_next.astype(float), y, "rD", ms=5, label="weight for the next day")
    ax.set_yticks(y, rules.rule_id)
    ax.set_xlim(0, 1)
    ax.set_title("Rules: precision of their hits and weights")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def growth(g: pd.DataFrame) -> str:
    if g.empty:
        return ""
    fig, ax = _figure()
    x = pd.to_datetime(g.date)
    ax.plot(x, g.current_total, "o-", label="outcomes on record (current)")
    ax.plot(x, g.frauds_total, "s-", label="of which offences")
    ax.plot(x, g.pipeline_total, "^-", label="from the pipeline's selections")
    ax.set_yscale("symlog")
    ax.set_title("Offence database growth (per weights version)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def scores(it: pd.DataFrame, day: date) -> str:
    """``it``: the day's scored items (declaration_id, fraud_probability, channel)."""
    if it.empty:
        return ""
    d = it.assign(_lq=np.log1p(-it.fraud_probability.astype(float).clip(0, 0.999999))).groupby(
        "declaration_id").agg(channel=("channel", "first"), _lq=("_lq", "sum"))
    d["p"] = 1 - np.exp(d._lq)
    fig, ax = _figure()
    bins = np.linspace(0, 1, 26)
    for ch, color in [("GREEN", "#55a868"), ("YELLOW", "#ccb974"), ("RED", "#c44e52")]:
        v = d.p[d.channel == ch]
        if len(v):
            ax.hist(v, bins=bins, alpha=0.6, color=color, label=f"{ch} ({len(v)})")
    ax.set_xlabel("declaration fraud probability")
    ax.set_ylabel("declarations")
    ax.set_title(f"Risk scores of {day} by channel")
    ax.legend(fontsize=8)
    return _png(fig)


def weights(w: pd.DataFrame) -> str:
    if w.empty:
        return ""
    fig, ax = _figure(7.5, 3.6)
    ax.set_prop_cycle(color=[_color(i) for i in range(w.rule_id.nunique())])
    for rule, g in w.groupby("rule_id", sort=True):
        ax.plot(pd.to_datetime(g.date), g.weight, marker=".", label=rule)
    ax.set_ylabel("weight")
    ax.set_title("Rule weights by version")
    ax.legend(fontsize=7, ncols=4)
    fig.autofmt_xdate()
    return _png(fig)


def _color(i: int):
    import matplotlib.pyplot as plt

    return plt.get_cmap("tab20")(i % 20)


def drift(d: pd.DataFrame, settings: Settings) -> str:
    d = d[d.psi.notna()] if len(d) else d
    if d.empty:
        return ""
    fig, ax = _figure(7.5, 0.3 * len(d) + 1.2)
    y = np.arange(len(d))[::-1]
    colors = ["#c44e52" if s == "major" else "#ccb974" if s == "moderate" else "#55a868" for s in d.status]
    ax.barh(y, d.psi.astype(float), color=colors)
    ax.axvline(settings.monitoring.psi_notice, color="grey", ls=":")
    ax.axvline(settings.monitoring.psi_threshold, color="#c44e52", ls="--", label="retraining threshold")
    ax.set_yticks(y, d.variable)
    ax.set_title("Drift against the training data (PSI)")
    ax.legend(fontsize=8)
    return _png(fig)


def calibration(c: pd.DataFrame) -> str:
    if c.empty:
        return ""
    fig, ax = _figure(4.5, 3.2)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(c.predicted_mean.astype(float), c.observed_rate.astype(float), "o-")
    ax.set_xlabel("mean predicted (item)")
    ax.set_ylabel("observed hit rate")
    ax.set_title("Calibration on inspected items")
    return _png(fig)
