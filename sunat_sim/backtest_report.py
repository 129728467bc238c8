"""A backtest's outputs: the JSON of per-policy figures, an HTML summary with plots, and MLflow runs.

MLflow: experiment ``policy-backtest`` (marked for model training), one parent run per backtest holding the
configuration, the bars, the JSON and the HTML, and a child run per policy and seed with its metrics, so the
MLflow UI compares them side by side.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_sim.backtest_metrics import run_metrics
from sunat_sim.backtest_summary import bars, comparisons, find, policy_table

EXPERIMENT = "policy-backtest"
TABLE_COLUMNS = {"hit_rate": "hit rate", "frauds_caught": "frauds caught", "recall": "recall",
                 "revenue_recovered_usd": "revenue recovered (USD)", "norm_rev": "Norm-Rev",
                 "scorer_roc_auc_all_items": "scorer ROC-AUC (all items)",
                 "scorer_precision_at_10_all_items": "scorer precision@10% (all items)",
                 "model_roc_auc_all_items": "champion alone ROC-AUC (all items)",
                 "gate_agreement": "champion/challenger agrees with truth",
                 "efficiency_index_est": "efficiency index (pipeline)", "efficiency_index_true": "lift (truth)",
                 "green_fraud_rate_est": "GREEN fraud rate (pipeline)", "green_fraud_rate_true": "GREEN fraud (truth)"}


def machine() -> dict:
    """What ran the backtest: a speed figure means little without the processor it was measured on (the same
    benchmark's time differs nearly twofold between two 2-core machines, docs/backtest.md "Speed")."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:  # not Linux: platform's own name
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _on(summary: dict) -> str:
    m = summary.get("machine")  # a JSON written before the machine was recorded has none
    return f" on {m['cpu']} ({m['logical_cpus']} logical CPUs)" if m else ""


def summarise(cfg, results: list[dict], seconds: float) -> dict:
    from dataclasses import asdict

    runs: dict[str, dict[int, dict]] = {}
    for r in results:
        m = run_metrics(Path(r["lake"]))
        m["trainings"] = r["trainings"]
        m["run_seconds"] = r["seconds"]
        runs.setdefault(r["policy"], {})[r["seed"]] = m
    table = policy_table(runs, cfg.live_days)
    comps = comparisons(runs)
    return {"config": asdict(cfg), "seconds": round(seconds, 1), "machine": machine(), "policies": table,
            "comparisons": comps, "bars": bars(table, comps),
            "runs": {p: {str(s): v for s, v in by.items()} for p, by in runs.items()}}


# --- HTML ------------------------------------------------------------------------------------------

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plots(summary: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary["runs"]
    out = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for p, by in runs.items():
        cum = np.mean([np.cumsum(v["daily"]["recovered_usd"]) for v in by.values()], axis=0)
        ax.plot(range(1, len(cum) + 1), cum / 1e3, label=p)
    ax.set(title="Cumulative revenue recovered (mean over seeds)", xlabel="live day", ylabel="thousand USD")
    ax.legend(fontsize=8)
    out.append(_png(fig))
    fig, ax = plt.subplots(figsize=(8, 4))
    for p, by in runs.items():
        weekly = []
        for v in by.values():
            d = pd.DataFrame(v["daily"])
            w = d.groupby(np.arange(len(d)) // 7)[["hits", "selected"]].sum()
            weekly.append((w.hits / w.selected.where(w.selected > 0)).to_numpy())
        a = np.array(weekly, dtype=float)
        x = np.arange(1, a.shape[1] + 1)
        with np.errstate(all="ignore"):
            line, = ax.plot(x, np.nanmean(a, axis=0), marker="o", label=p)
            ax.fill_between(x, np.nanmin(a, axis=0), np.nanmax(a, axis=0), color=line.get_color(), alpha=0.15)
    ax.set(title="Weekly hit rate (mean; band: range over seeds)", xlabel="live week", ylabel="hit rate")
    ax.legend(fontsize=8)
    out.append(_png(fig))
    schemes = sorted({k for by in runs.values() for v in by.values() for k in v["schemes"]})
    if schemes:
        fig, axes = plt.subplots(1, len(schemes), figsize=(4.5 * len(schemes), 3.5), squeeze=False)
        for ax, k in zip(axes[0], schemes, strict=True):
            for p, by in runs.items():
                shares = []
                for v in by.values():
                    s = v["schemes"][k]
                    c, n = np.cumsum(s["daily_caught"]), np.cumsum(s["daily_present"])
                    shares.append(np.where(n > 0, c / np.maximum(n, 1), np.nan))
                a = np.array(shares, dtype=float)
                ok = ~np.isnan(a).all(axis=0)  # days before the scheme's first fraud have no share
                x = np.arange(1, a.shape[1] + 1)[ok]
                ax.plot(x, np.nanmean(a[:, ok], axis=0) if ok.any() else [], label=p)
            ax.set(title=f"{k}: share caught so far", xlabel="live day", ylim=(0, 1))
        axes[0][0].legend(fontsize=7)
        out.append(_png(fig))
    return out


def bar_value(b: dict) -> str:
    """What a bar measured, in words: a ratio or difference with its interval, a pair of median days, an agreement
    with how often the truth promotes and what the wrong decisions cost. Plain text: the HTML report escapes it."""
    v = b.get("value")
    if isinstance(v, list) and len(v) == 2:
        out = f"{_plain(v[0])} vs {_plain(v[1])} days"
    else:
        out = _plain(v)
    if b.get("ci95"):
        out += f" [{_plain(b['ci95'][0])}, {_plain(b['ci95'][1])}]"
    if "truth_promotes" in b:
        mat = b.get("material") or {}
        out += (f" of {b.get('n')} decisions (the truth promotes {_plain(b['truth_promotes'])} of challengers; "
                f"agreement where the models differ by >= 2 points: {_plain(mat.get('agreement'))} of "
                f"{mat.get('decisions')}; mean regret {_plain(b.get('mean_regret'))})")
    return out


def _plain(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3f}"
    return str(v)


def _fmt(v) -> str:
    """A value for the HTML page (escaped once)."""
    return html.escape(_plain(v))


def render_html(summary: dict) -> bytes:
    cfg, table = summary["config"], summary["policies"]
    rows = "".join(f"<tr><th>{html.escape(p)}</th>" + "".join(f"<td>{_fmt(t.get(k))}</td>" for k in TABLE_COLUMNS)
                   + "</tr>" for p, t in table.items())
    head = "<tr><th>policy</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in TABLE_COLUMNS.values()) + "</tr>"
    schemes = sorted({k for t in table.values() for k in t["schemes"]})
    srows = "".join(f"<tr><th>{html.escape(p)}</th>" + "".join(
        f"<td>{_fmt(t['schemes'][k]['median_days_to_first_detection'])} / "
        f"{_fmt(t['schemes'][k]['median_days_to_half_caught'])}</td>" for k in schemes) + "</tr>"
        for p, t in table.items())
    crows = ""
    for c in summary["comparisons"]:
        if c["b"] in ("random", "legacy_rules", "exploit", "hybrid_no_explore") or c["a"] == "hybrid":
            f, r = c["frauds_caught"], c["revenue_recovered_usd"]
            crows += (f"<tr><td>{html.escape(c['a'])} / {html.escape(c['b'])}</td><td>{_fmt(f['ratio'])} "
                      f"[{_fmt(f['ci95'][0])}, {_fmt(f['ci95'][1])}]</td><td>{_fmt(r['ratio'])} "
                      f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]</td></tr>")
    brows = "".join(f"<tr><td>{'PASS' if b['pass'] else 'FAIL'}</td><td>{html.escape(b['bar'])}</td>"
                    f"<td>{html.escape(bar_value(b))}</td></tr>" for b in summary["bars"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Policy backtest</title><style>
body{{font-family:sans-serif;margin:2em;max-width:1300px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}} th{{background:#f4f4f4}}
</style></head><body><h1>Policy backtest</h1>
<p>{len(cfg['policies'])} policies x seeds {cfg['seeds']} x {cfg['live_days']} live days, capacity
{cfg['capacity']:.0%} of each office's declarations ({cfg['difficulty']} world, {cfg['per_day']} declarations a day),
{summary['seconds'] / 60:.1f} min{html.escape(_on(summary))}. Figures from the ground truth (evaluation only), means
over seeds; the pipeline's own estimates beside them. Ratios pair the policies on the same days with 95% day-bootstrap
intervals.</p>
<h2>Per policy</h2><table>{head}{rows}</table>
<h2>New schemes: median days to first detection / to catching half (7-day window)</h2>
<table><tr><th>policy</th>{''.join(f'<th>{html.escape(k)}</th>' for k in schemes)}</tr>{srows}</table>
<h2>Paired comparisons</h2><table><tr><th>A / B</th><th>frauds caught</th><th>revenue recovered</th></tr>{crows}</table>
<h2>Bars</h2><table>{brows}</table><h2>Plots</h2>{''.join(_plots(summary))}</body></html>"""
    return page.encode("utf-8")


# --- MLflow -----------------------------------------------------------------------------------------

def _child_metrics(m: dict) -> dict[str, float]:
    out = {k: m[k] for k in ("hit_rate", "frauds_caught", "recall", "revenue_recovered_usd", "norm_rev",
                             "selected", "hits") if m.get(k) is not None}
    out.update({f"scorer_{k}": v for k, v in m["scorer"].items() if v is not None})
    out.update({f"online_{k}": v for k, v in m["online"].items() if isinstance(v, int | float)})
    for k, s in m["schemes"].items():
        for f in ("days_to_first_detection", "days_to_half_caught", "recall"):
            if s.get(f) is not None:
                out[f"scheme_{k}_{f}"] = s[f]
    out.update({f"recall_{k}": v["recall"] for k, v in m["by_mechanism"].items() if v["recall"] is not None})
    if m.get("gate", {}).get("agreement") is not None:
        out.update({"gate_decisions": m["gate"]["decisions"], "gate_agreement": m["gate"]["agreement"]})
    return {k: float(v) for k, v in out.items()}


def log_mlflow(settings, summary: dict, json_path: Path, html_path: Path) -> str:
    """The parent run (and a child per policy and seed) in the ``policy-backtest`` experiment; its run id."""
    import mlflow

    from sunat_pipeline.modeling import registry

    c = registry.client(settings)
    exp = c.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else c.create_experiment(
        EXPERIMENT, artifact_location=settings.mlflow_artifacts.as_uri(),
        tags={registry.EXPERIMENT_KIND_TAG: registry.EXPERIMENT_KIND})
    cfg = summary["config"]
    # Logged once the runs are done: started back when they began, so the UI's duration is the backtest's.
    began = c.create_run(exp_id, start_time=int((time.time() - summary["seconds"]) * 1000),
                         run_name=f"backtest {len(cfg['policies'])} policies x {len(cfg['seeds'])} seeds x "
                                  f"{cfg['live_days']} days")
    with mlflow.start_run(run_id=began.info.run_id) as parent:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, list) else v for k, v in cfg.items()})
        mlflow.log_metric("seconds", summary["seconds"])
        mlflow.set_tags({f"machine_{k}": v for k, v in summary.get("machine", {}).items()})
        mlflow.log_metric("bars_passed", sum(b["pass"] for b in summary["bars"]))
        for name in ("frauds_caught", "revenue_recovered_usd"):
            for base in ("random", "legacy_rules", "exploit"):
                r = find(summary["comparisons"], "hybrid", base)
                if r and r[name]["ratio"] is not None:
                    mlflow.log_metric(f"hybrid_over_{base}_{name}", r[name]["ratio"])
        mlflow.log_artifact(str(json_path))
        mlflow.log_artifact(str(html_path))
        for p, by in summary["runs"].items():
            for seed, m in by.items():
                with mlflow.start_run(experiment_id=exp_id, run_name=f"{p} seed {seed}", nested=True):
                    mlflow.set_tags({"policy": p, "seed": seed, "kind": "backtest-run"})
                    mlflow.log_params({"policy": p, "seed": seed, "capacity": cfg["capacity"],
                                       "live_days": cfg["live_days"]})
                    mlflow.log_metrics(_child_metrics(m))
        return parent.info.run_id


def format_table(summary: dict) -> str:
    """The per-policy table and the bars, as printed at the end of a backtest."""
    t = pd.DataFrame(summary["policies"]).T[list(TABLE_COLUMNS)[:5] + ["scorer_roc_auc_all_items", "gate_agreement"]]
    lines = ["Per policy (means over seeds, ground truth):", t.to_string(float_format=lambda x: f"{x:,.3f}")]
    lines.append("Bars:")
    lines += [f"  {'PASS' if b['pass'] else 'FAIL'}  {b['bar']}: {bar_value(b)}" for b in summary["bars"]]
    lines.append(f"Runs: {summary['seconds'] / 60:.1f} min{_on(summary)} (finished runs reused from an earlier "
                 "backtest count only the time to read them)")
    return "\n".join(lines)
