"""World report: how hard the world is, measured on its ground truth (evaluation only; the product never reads it).

* fraud rates, by mechanism and scheme; office volumes; what the legacy policy inspected and found;
* the best single observable feature: population ROC-AUC and precision at 5% recall, over every declared
  column, simple ratio and flag (categorical columns ranked by their value's fraud rate over earlier days);
* value flags: the most precise single value of a column, or threshold of a ratio, covering >= 2% of frauds;
* a full-label reference model (XGBoost trained on the truth of every history item, scored on the live
  period): population ROC-AUC, precision and recall in its top 10%;
* the drift schedule and, per scheme, the share of its first-week frauds that a model trained on the days
  before it puts in its top 10% of that week's items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from sunat_sim.evaluation import (
    CATEGORICAL,
    ENTITIES,
    FLAGS,
    NUMERIC,
    RATIOS,
    day_index,
    entity_rates,
    observables,
    observed_rates,
)

LOW_CARDINALITY = ["customs_office", "supplier_country", "origin_country", "hs_code", "hs_chapter", "transport_mode",
                   "invoice_currency"]
FLAG_COVERAGE = 0.02  # a flag must cover this share of frauds to count as a give-away
BARS = {"fraud_rate": (0.03, 0.08), "flag_precision": 0.8, "single_auc": 0.75, "model_auc": (0.80, 0.92),
        "drift_top10": 0.5}
XGB = dict(n_estimators=200, max_depth=6, learning_rate=0.08, subsample=0.8, colsample_bytree=0.8,
           min_child_weight=5, tree_method="hist", n_jobs=2)


def _precision_at_recall(score: np.ndarray, y: np.ndarray, recall: float) -> float:
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(y[order])
    k = int(np.searchsorted(hits, recall * y.sum(), side="left"))
    return float(hits[k] / (k + 1)) if y.sum() else float("nan")


def single_features(f: pd.DataFrame, y: np.ndarray, day: np.ndarray, w) -> pd.DataFrame:
    """Each observable feature alone: direction, population ROC-AUC, precision at 5% recall. A categorical column
    is ranked by its value's observed fraud rate (inspections reported before the day)."""
    rows = []
    for c in NUMERIC + RATIOS + FLAGS + CATEGORICAL:
        if c in CATEGORICAL:
            x = observed_rates(f[c], day, w.items, w.enforcement, w.cfg.start_date)
            how = "value's inspection hit rate"
        else:
            x = f[c].to_numpy(dtype=float).copy()
            x[~np.isfinite(x)] = np.nanmedian(x[np.isfinite(x)]) if np.isfinite(x).any() else 0.0
            how = "as is"
        auc = roc_auc_score(y, x)
        sign = 1.0 if auc >= 0.5 else -1.0
        rows.append({"feature": c, "kind": how, "direction": "high" if sign > 0 else "low",
                     "auc": max(auc, 1 - auc), "precision_at_5pct_recall": _precision_at_recall(sign * x, y, 0.05)})
    return pd.DataFrame(rows).sort_values(["auc", "feature"], ascending=[False, True]).reset_index(drop=True)


def value_flags(f: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Per column, the most precise flag covering >= 2% of frauds: a value of a categorical column or flag, or a
    threshold (either tail) of a numeric column or ratio."""
    total, rows = y.sum(), []
    for c in CATEGORICAL + FLAGS:
        g = pd.DataFrame({"v": f[c].astype(str).to_numpy(), "y": y}).groupby("v").y.agg(["sum", "count"])
        g = g[g["sum"] >= FLAG_COVERAGE * total]
        if len(g):
            best = (g["sum"] / g["count"]).sort_values(ascending=False, kind="stable").index[0]
            rows.append((c, f"== {best}", g.at[best, "sum"] / g.at[best, "count"], g.at[best, "sum"] / total))
    for c in NUMERIC + RATIOS:
        x = f[c].to_numpy(dtype=float)
        ok = np.isfinite(x)
        order = np.argsort(x[ok], kind="stable")
        xs, ys = x[ok][order], y[ok][order]
        cum = np.cumsum(ys)
        ends = np.flatnonzero(np.r_[xs[1:] != xs[:-1], True])  # a threshold cannot split equal values
        n = np.arange(1, len(xs) + 1)[ends]
        lo_f, hi_f, hi_n = cum[ends], cum[-1] - cum[ends], len(xs) - n
        best = (0.0, "", 0.0)
        for fr, cnt, side in ((lo_f, n, "<="), (hi_f, hi_n, ">")):
            okc = (fr >= FLAG_COVERAGE * total) & (cnt > 0)
            if okc.any():
                p = np.where(okc, fr / np.maximum(cnt, 1), -1)
                j = int(np.argmax(p))
                if p[j] > best[0]:
                    best = (float(p[j]), f"{side} {xs[ends[j]]:.4g}", float(fr[j] / total))
        if best[1]:
            rows.append((c, best[1], best[0], best[2]))
    return pd.DataFrame(rows, columns=["feature", "flag", "precision", "coverage"]).sort_values(
        ["precision", "feature"], ascending=[False, True]).reset_index(drop=True)


def model_matrix(f: pd.DataFrame, y: np.ndarray, day: np.ndarray, cutoff: int) -> pd.DataFrame:
    """The reference model's inputs: observables, codes of low-cardinality columns, full-label entity rates."""
    X = f[NUMERIC + RATIOS + FLAGS].copy()
    for c in LOW_CARDINALITY:
        X[f"{c}_code"] = pd.factorize(f[c], sort=True)[0].astype(float)
    for c in ENTITIES:
        X[f"{c}_fraud_rate"] = entity_rates(f[c], y, day, cutoff)
    return X.replace([np.inf, -np.inf], np.nan)


def fit_score(f: pd.DataFrame, y: np.ndarray, day: np.ndarray, cutoff: int, seed: int) -> np.ndarray:
    """Train XGBoost on the truth of the items lodged before ``cutoff``; score every item."""
    from xgboost import XGBClassifier

    X = model_matrix(f, y, day, cutoff)
    train = day < cutoff
    m = XGBClassifier(**XGB, random_state=seed, eval_metric="logloss")
    m.fit(X[train], y[train])
    return m.predict_proba(X)[:, 1]


def build_report(w) -> dict:
    cfg, it = w.cfg, w.items
    y = it.is_fraud.to_numpy(dtype=int)
    day = day_index(it, cfg.start_date)
    f = observables(w)
    live = day >= cfg.history_days
    decl = it.groupby("declaration_id").agg(fraud=("is_fraud", "any"), day=("declaration_date", "first"),
                                            office=("customs_office", "first"))
    fr = it[it.is_fraud]
    mech = fr.groupby("mechanism").agg(items=("item_no", "size"), declarations=("declaration_id", "nunique"),
                                       revenue_at_stake_usd=("revenue_at_stake_usd", "sum"))
    mech["share_of_frauds"] = mech["items"] / len(fr)
    mech["declaration_rate"] = mech.declarations / len(decl)
    enf = w.enforcement
    first_rec = enf[~enf.record_id.str.endswith("-C")]
    hist_fraud = int(it.is_fraud[~live].sum())
    legacy = {"inspected_items": len(first_rec), "inspected_share": len(first_rec) / max(1, int((~live).sum())),
              "findings": int((first_rec.result == "FRAUD").sum()), "corrections": int(len(enf) - len(first_rec)),
              "hit_rate": float((first_rec.result == "FRAUD").mean()) if len(first_rec) else float("nan"),
              "frauds_in_history": hist_fraud}
    scores = {}

    def scored(cutoff: int) -> np.ndarray:
        if cutoff not in scores:
            scores[cutoff] = fit_score(f, y, day, cutoff, cfg.seed)
        return scores[cutoff]

    out = {"config": {"seed": cfg.seed, "difficulty": cfg.difficulty, "history_days": cfg.history_days,
                      "live_days": cfg.live_days, "declarations_per_day": cfg.declarations_per_day},
           "items": len(it), "declarations": len(decl), "fraud_rate_declarations": float(decl.fraud.mean()),
           "fraud_rate_declarations_live": float(decl.fraud[pd.to_datetime(decl.day) >= pd.Timestamp(
               cfg.first_live_date)].mean()) if live.any() else float("nan"),
           "fraud_rate_items": float(y.mean()), "by_mechanism": mech.reset_index(),
           "office_declarations_per_day": (decl.office.value_counts() / cfg.total_days).sort_index(),
           "legacy": legacy, "reactions": w.reactions.drop(columns="day").sum().to_dict() if len(w.reactions) else {},
           "single": single_features(f, y, day, w), "flags": value_flags(f, y)}
    if live.any() and y[live].any() and y[~live].any():
        s = scored(cfg.history_days)[live]
        top = s >= np.quantile(s, 0.9)
        out["model"] = {"auc": float(roc_auc_score(y[live], s)), "precision_at_10pct": float(y[live][top].mean()),
                        "recall_at_10pct": float(y[live][top].sum() / y[live].sum()),
                        "live_items": int(live.sum()), "live_frauds": int(y[live].sum())}
    out["drift"] = _drift(w, f, y, day, scored)
    return out


def _drift(w, f, y, day, scored) -> pd.DataFrame:
    cfg, rows = w.cfg, []
    for s in cfg.k["schemes"]:
        start = cfg.scheme_start(s)
        week = (day >= start) & (day < start + 7)
        ev = week & (w.items.scheme.to_numpy() == s["name"])
        row = {"scheme": s["name"], "kind": s["kind"], "start": cfg.day(start).isoformat(),
               "first_week_items": int(week.sum()), "first_week_frauds": int(ev.sum()), "in_top10": float("nan")}
        if ev.any() and start > 0 and y[day < start].any():
            sc = scored(start)
            top = sc[week] >= np.quantile(sc[week], 0.9)
            row["in_top10"] = float(top[ev[week]].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def bars(rep: dict) -> list[tuple[str, bool | None, str]]:
    """(bar, passed or None when it cannot be measured, the figure)."""
    lo, hi = BARS["fraud_rate"]
    fr = rep["fraud_rate_declarations"]
    flag = rep["flags"].iloc[0] if len(rep["flags"]) else None
    single = rep["single"].iloc[0]
    out = [(f"declaration-level fraud rate in [{lo:.0%}, {hi:.0%}]", lo <= fr <= hi, f"{fr:.2%}"),
           (f"no single value or ratio flags fraud with precision >= {BARS['flag_precision']} covering >= "
            f"{FLAG_COVERAGE:.0%} of frauds", None if flag is None else bool(flag.precision < BARS["flag_precision"]),
            "none" if flag is None else f"best {flag.feature} {flag.flag}: precision {flag.precision:.3f}, "
            f"coverage {flag.coverage:.1%}"),
           (f"best single feature's population ROC-AUC <= {BARS['single_auc']}", bool(single.auc <= BARS["single_auc"]),
            f"{single.feature}: {single.auc:.3f}")]
    if "model" in rep:
        a, (mlo, mhi) = rep["model"]["auc"], BARS["model_auc"]
        out.append((f"reference model ROC-AUC in [{mlo}, {mhi}]", mlo <= a <= mhi, f"{a:.3f}"))
    for r in rep["drift"].itertuples():
        ok = None if np.isnan(r.in_top10) else bool(r.in_top10 <= BARS["drift_top10"])
        out.append((f"{r.scheme}: first-week frauds in a prior model's top 10% <= {BARS['drift_top10']:.0%}", ok,
                    "n/a (not in the simulated days)" if ok is None else
                    f"{r.in_top10:.0%} of {r.first_week_frauds}"))
    return out


def format_report(rep: dict) -> str:
    c = rep["config"]
    pd_opts = {"display.width": 160, "display.max_columns": 20, "display.float_format": "{:.4g}".format}
    lines = [f"World report (evaluation only: ground truth) - seed {c['seed']}, difficulty {c['difficulty']}, "
             f"{c['history_days']} history + {c['live_days']} live days, {c['declarations_per_day']} declarations/day",
             f"{rep['declarations']} declarations, {rep['items']} items; fraud rate: declarations "
             f"{rep['fraud_rate_declarations']:.2%} (live {rep['fraud_rate_declarations_live']:.2%}), "
             f"items {rep['fraud_rate_items']:.2%}", ""]
    with pd.option_context(*[x for kv in pd_opts.items() for x in kv]):
        lines += ["Fraud by mechanism:", rep["by_mechanism"].to_string(index=False), ""]
        od = rep["office_declarations_per_day"]
        lines += ["Declarations a day by office: " + ", ".join(f"{o} {v:.1f}" for o, v in od.items()) +
                  f" (largest / smallest {od.max() / od.min():.1f}x)"]
        lg = rep["legacy"]
        lines += [f"Legacy policy (history labels): {lg['inspected_items']} items inspected "
                  f"({lg['inspected_share']:.1%}), {lg['findings']} findings (hit rate {lg['hit_rate']:.1%}) of "
                  f"{lg['frauds_in_history']} frauds, {lg['corrections']} later overturned",
                  "Offenders' reactions to detections: " + ", ".join(f"{k} {v}" for k, v in rep["reactions"].items()),
                  "", "Best single observable features (population: every item; labels: truth):",
                  rep["single"].head(10).to_string(index=False), "",
                  f"Most precise single flags covering >= {FLAG_COVERAGE:.0%} of frauds:",
                  rep["flags"].head(8).to_string(index=False), ""]
        if "model" in rep:
            m = rep["model"]
            lines += [f"Full-label reference model (XGBoost on the history's truth, scored on {m['live_items']} live "
                      f"items, {m['live_frauds']} frauds): ROC-AUC {m['auc']:.3f}, precision at 10% "
                      f"{m['precision_at_10pct']:.3f}, recall at 10% {m['recall_at_10pct']:.3f}", ""]
        lines += ["Drift schedule (share of first-week frauds in the top 10% of a model trained before the start):",
                  rep["drift"].to_string(index=False), ""]
    lines += ["Bars:"] + [f"  [{'PASS' if ok else 'FAIL' if ok is not None else 'N/A '}] {name}: {fig}"
                          for name, ok, fig in bars(rep)]
    return "\n".join(lines) + "\n"


def to_json(rep: dict) -> dict:
    """The report as plain JSON values (tables as lists of rows), with the bars."""
    def plain(v):
        if isinstance(v, pd.DataFrame):
            return [{k: plain(x) for k, x in row.items()} for row in v.to_dict(orient="records")]
        if isinstance(v, pd.Series):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            v = v.item()
        return None if isinstance(v, float) and np.isnan(v) else v

    return {**plain(rep), "bars": [{"bar": n, "passed": ok, "figure": fig} for n, ok, fig in bars(rep)]}
