"""What a backtest run really achieved, from the ground truth (evaluation only: no policy reads this).

Per run (one policy on one seed's world): the scored declarations and channels the pipeline wrote, the
inspection results the simulator landed for them (first finding; a later correction does not change what the
inspection caught), and the truth. Declarations are the unit of selection and of hit rate; items the unit of
frauds caught, as officers record them.

* hit rate: selected declarations where the inspection caught at least one fraudulent item;
* frauds caught: fraudulent items the inspections found (items of a selected declaration that a check of its
  channel could see); recall: caught over every fraudulent item lodged;
* revenue: recovered (what the inspections recovered) and at stake (the truth's revenue of the caught frauds);
* Norm-Rev: revenue at stake caught over the best possible at the same capacity - an oracle taking, each day
  and office, as many declarations as the policy selected, those with the most revenue at stake;
* per mechanism and per new scheme; for a scheme, the days from its start to its first detection, and to the
  first day its trailing 7-day catch reaches half of its frauds (None: not within the period);
* the scorer on all items (not only the inspected): ROC-AUC and precision in the top 10% of each day;
* the pipeline's online estimates (its last KPI report) beside their true values.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from sunat_pipeline.selection.output import read_scored
from sunat_pipeline.settings import get_settings
from sunat_sim.inspection import first_findings
from sunat_sim.world import load_world_config, truth_dir

CATCH_WINDOW_DAYS = 7  # "catches half of a scheme's frauds": over a trailing window, daily counts are small
TOP_SHARE = 0.10


def run_items(lake: Path) -> pd.DataFrame:
    """Scored live items of a run with their channel, truth and first inspection result."""
    s = get_settings(lake_root=lake)
    sc = read_scored(s, columns=["declaration_id", "item_no", "declaration_date", "customs_office", "channel",
                                 "selection_reason", "fraud_probability", "model_fraud_probability"])
    truth = pd.read_parquet(truth_dir(lake) / "items.parquet",
                            columns=["declaration_id", "item_no", "is_fraud", "mechanism", "scheme",
                                     "revenue_at_stake_usd"])
    first = first_findings(s)
    m = sc.merge(truth, on=["declaration_id", "item_no"], how="left").merge(first, on=["declaration_id", "item_no"],
                                                                            how="left")
    m["day"] = pd.to_datetime(m.declaration_date).dt.strftime("%Y-%m-%d")
    m["is_fraud"] = m.is_fraud.fillna(False).astype(bool)
    m[["mechanism", "scheme"]] = m[["mechanism", "scheme"]].fillna("")
    m["selected"] = m.channel.isin(["RED", "YELLOW"])
    m["caught"] = m.is_fraud & (m.result == "FRAUD")
    m["recovered"] = np.where(m.caught, m.revenue_recovered_usd.fillna(0), 0.0)
    m["stake_caught"] = np.where(m.caught, m.revenue_at_stake_usd.fillna(0), 0.0)
    return m


def declarations(m: pd.DataFrame) -> pd.DataFrame:
    g = m.groupby("declaration_id", sort=True)
    return pd.DataFrame({"day": g.day.first(), "office": g.customs_office.first(), "channel": g.channel.first(),
                         "reason": g.selection_reason.first(), "selected": g.selected.first(),
                         "fraud": g.is_fraud.any(), "hit": g.caught.any(), "caught": g.caught.sum(),
                         "stake": g.revenue_at_stake_usd.sum(), "stake_caught": g.stake_caught.sum(),
                         "recovered": g.recovered.sum()}).reset_index()


def oracle_revenue(d: pd.DataFrame) -> pd.Series:
    """Per day: the revenue at stake an oracle would catch selecting, per office, as many declarations as the
    policy did, those with the most revenue at stake (every fraud inspected is caught)."""
    k = d.groupby(["day", "office"]).selected.sum()
    ranked = d.sort_values(["day", "office", "stake", "declaration_id"], ascending=[True, True, False, True])
    ranked = ranked.assign(rank=ranked.groupby(["day", "office"]).cumcount())
    top = ranked[ranked["rank"] < k.reindex(pd.MultiIndex.from_arrays([ranked.day, ranked.office])).to_numpy()]
    return top.groupby("day").stake.sum()


def daily(m: pd.DataFrame, d: pd.DataFrame) -> pd.DataFrame:
    """Per live day: what was selected, hit, caught, recovered, and the oracle's revenue."""
    g = d.groupby("day")
    out = pd.DataFrame({"declarations": g.size(), "selected": g.selected.sum(),
                        "hits": d[d.selected].groupby("day").hit.sum(), "frauds_caught": g.caught.sum(),
                        "fraud_items": m.groupby("day").is_fraud.sum(), "recovered_usd": g.recovered.sum(),
                        "stake_caught_usd": g.stake_caught.sum(), "stake_usd": m[m.is_fraud].groupby("day")
                        .revenue_at_stake_usd.sum(), "oracle_usd": oracle_revenue(d)})
    return out.fillna(0).reset_index()


def scheme_detection(m: pd.DataFrame, lake: Path) -> dict[str, dict]:
    cfg = load_world_config(lake)
    out = {}
    days = sorted(m.day.unique())
    for name, start in sorted(cfg.to_json()["schemes"].items()):
        s = m[m.scheme == name]
        per = pd.DataFrame({"present": s.groupby("day").size(), "caught": s.groupby("day").caught.sum()}).reindex(
            days, fill_value=0)
        start_d = date.fromisoformat(str(start))
        rolled = per.rolling(CATCH_WINDOW_DAYS, min_periods=1).sum()
        half = rolled[(rolled.present > 0) & (rolled.caught >= 0.5 * rolled.present)]
        first = per[per.caught > 0]
        out[name] = {"start": str(start), "present": int(per.present.sum()), "caught": int(per.caught.sum()),
                     "recall": _ratio(per.caught.sum(), per.present.sum()),
                     "days_to_first_detection": _days(first.index, start_d),
                     "days_to_half_caught": _days(half.index, start_d),
                     "daily_caught": per.caught.astype(int).tolist(), "daily_present": per.present.astype(int).tolist()}
    return out


def scorer_quality(m: pd.DataFrame) -> dict:
    """The day's scorer (champion model, or the rules) on every item, inspected or not."""
    y, p = m.is_fraud.to_numpy(), m.fraud_probability.to_numpy(dtype=float)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    top = m.assign(r=m.groupby("day").fraud_probability.rank(ascending=False, method="first"),
                   n=m.groupby("day").fraud_probability.transform("size"))
    top = top[top.r <= np.ceil(TOP_SHARE * top.n)]
    out = {"roc_auc_all_items": _round(auc), "precision_at_10_all_items": _ratio(top.is_fraud.sum(), len(top))}
    if "model_fraud_probability" in m and m.model_fraud_probability.notna().all() and 0 < y.sum() < len(y):
        # the champion alone, before the rules are stacked on it (docs/selection.md)
        out["model_roc_auc_all_items"] = _round(roc_auc_score(y, m.model_fraud_probability.to_numpy(dtype=float)))
    return out


MATERIAL = 0.02  # a true difference of two points of the fraud revenue share in the top 10%


def gate_agreement(lake: Path) -> dict:
    """Each champion/challenger decision of the run beside the one the truth would make: the same rule
    (``train.promotion``, the same margin) on the true share of fraud revenue at stake each model's top 10% of
    ALL the holdout days' items captures (the gate leaves both models' scores under gold/champion_gate/)."""
    import json

    from sunat_pipeline.modeling.gate import top_mask
    from sunat_pipeline.modeling.train import promotion

    s = get_settings(lake_root=lake)
    truth = pd.read_parquet(truth_dir(lake) / "items.parquet",
                            columns=["declaration_id", "item_no", "is_fraud", "revenue_at_stake_usd"])
    rows = []
    for d in sorted((s.gold / "champion_gate").glob("training_date=*")):
        if not (d / "items.parquet").exists() or not (d / "decision.json").exists():
            continue
        dec = json.loads((d / "decision.json").read_text())
        f = pd.read_parquet(d / "items.parquet").merge(truth, on=["declaration_id", "item_no"], how="left")
        rev = np.where(f.is_fraud.fillna(False).astype(bool), f.revenue_at_stake_usd.fillna(0), 0.0)
        share = {k: float(rev[top_mask(f[k].to_numpy())].sum() / rev.sum()) if rev.sum() else 0.0
                 for k in ("challenger", "champion")}
        truly, _ = promotion(share["challenger"], share["champion"], dec.get("promotion_margin", 0.0))
        rows.append({"training_date": d.name.split("=", 1)[1], "method": dec.get("all_traffic", {}).get("method"),
                     "promoted": bool(dec["promoted"]), "truth_promotes": bool(truly),
                     "challenger_true_share": round(share["challenger"], 4),
                     "champion_true_share": round(share["champion"], 4)})
    agree = [r["promoted"] == r["truth_promotes"] for r in rows]
    # What a wrong decision cost: the true share of fraud revenue at stake lost against the truth's choice
    # (0 when right); and the agreement where the two models truly differ by at least MATERIAL (elsewhere the
    # truth's own choice is a matter of a few declarations).
    for r in rows:
        chosen = r["challenger_true_share"] if r["promoted"] else r["champion_true_share"]
        r["regret"] = round(max(r["challenger_true_share"], r["champion_true_share"]) - chosen, 4)
    material = [a for r, a in zip(rows, agree, strict=True)
                if abs(r["challenger_true_share"] - r["champion_true_share"]) >= MATERIAL]
    # Beside it, what promoting every challenger would score: the share of retrainings the truth promotes.
    return {"decisions": len(rows), "agree": int(sum(agree)), "agreement": _ratio(sum(agree), len(rows)),
            "truth_promotes": int(sum(r["truth_promotes"] for r in rows)),
            "material_decisions": len(material), "material_agree": int(sum(material)),
            "mean_regret": round(float(np.mean([r["regret"] for r in rows])), 4) if rows else None,
            "by_method": {m: {"decisions": sum(r["method"] == m for r in rows),
                              "agree": sum(a for r, a in zip(rows, agree, strict=True) if r["method"] == m)}
                          for m in sorted({str(r["method"]) for r in rows})},
            "gates": rows}


def online_vs_truth(lake: Path, d: pd.DataFrame) -> dict:
    """The pipeline's last KPI report (its own estimates) beside what the truth says."""
    from sunat_pipeline.reporting.kpi import latest_summary

    k = latest_summary(get_settings(lake_root=lake)) or {}
    targeted = d[d.selected & d.reason.isin(["mandatory_rule", "exploitation", "exploration"])]
    green = d[~d.selected]
    return {"efficiency_index_est": _round(k.get("efficiency_index")),
            "efficiency_index_true": _ratio(targeted.fraud.mean(), d.fraud.mean()) if len(targeted) else None,
            "green_fraud_rate_est": _round(k.get("green_fraud_rate_est")),
            "green_fraud_rate_ci95": [_round(k.get("green_fraud_rate_low")), _round(k.get("green_fraud_rate_high"))],
            "green_fraud_rate_true": _ratio(green.fraud.sum(), len(green)),
            "report_date": str(k.get("report_date")) if k else None}


def run_metrics(lake: Path) -> dict:
    m = run_items(Path(lake))
    d = declarations(m)
    day = daily(m, d)
    sel = d[d.selected]
    frauds = m[m.is_fraud]
    mech = {k: {"present": int(len(g)), "caught": int(g.caught.sum()), "recall": _ratio(g.caught.sum(), len(g)),
                "stake_usd": round(float(g.revenue_at_stake_usd.sum()), 2),
                "stake_caught_usd": round(float(g.stake_caught.sum()), 2)}
            for k, g in frauds.groupby("mechanism")}
    reasons = {k: {"selected": int(len(g)), "hits": int(g.hit.sum()), "hit_rate": _ratio(g.hit.sum(), len(g))}
               for k, g in sel.groupby("reason")}
    return {
        "declarations": int(len(d)), "selected": int(len(sel)), "hits": int(sel.hit.sum()),
        "hit_rate": _ratio(sel.hit.sum(), len(sel)), "frauds_caught": int(m.caught.sum()),
        "fraud_items": int(len(frauds)), "recall": _ratio(m.caught.sum(), len(frauds)),
        "revenue_recovered_usd": round(float(m.recovered.sum()), 2),
        "revenue_caught_at_stake_usd": round(float(m.stake_caught.sum()), 2),
        "revenue_at_stake_usd": round(float(frauds.revenue_at_stake_usd.sum()), 2),
        "norm_rev": _ratio(day.stake_caught_usd.sum(), day.oracle_usd.sum()),
        "by_mechanism": mech, "by_reason": reasons, "schemes": scheme_detection(m, Path(lake)),
        "scorer": scorer_quality(m), "online": online_vs_truth(Path(lake), d), "gate": gate_agreement(Path(lake)),
        "daily": day.round(2).to_dict("list"),
    }


def _ratio(a, b) -> float | None:
    return round(float(a) / float(b), 4) if b else None


def _round(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else round(float(x), 4)


def _days(index, start: date) -> int | None:
    later = [date.fromisoformat(str(i)) for i in index if date.fromisoformat(str(i)) >= start]
    return (later[0] - start).days if later else None
