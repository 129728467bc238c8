"""Training: labelled set, time-based split, MLflow run and champion/challenger.

Only inspected items have labels. The holdout is the most recent ``holdout_days`` of labelled
declarations (never a random split). A new version becomes ``champion`` only if it beats the current
champion on that same holdout by ``promotion_margin`` on Revenue@10% (revenue captured at about the
configured inspection capacity); the decision and its numbers are logged to the run.

Each training run logs to MLflow: the model's parameters and the device it ran on; a snapshot of its inputs
(rows and a content checksum per source, training/holdout rows, the labelled set's checksum); the feature
catalog; on the holdout ROC-AUC, PR-AUC, Precision/Recall/Revenue at 1, 2, 5, 10%, the Brier score, the
expected calibration error and a reliability table; the same targeting metrics for two baselines, the rules
engine alone (initial rule weights) and random order; where the labels came from (random selection share);
plots (feature importance, SHAP summary, precision-recall curve, lift chart, reliability; ``plots.py``); and the
champion/challenger decision as JSON. The registered version is described in plain words (``registry.py``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.features import taxrisk
from sunat_pipeline.features.build import build_features, item_frame
from sunat_pipeline.features.catalog import FEATURES, catalog_frame
from sunat_pipeline.lake.store import read_partitioned, sha256_bytes
from sunat_pipeline.modeling import gate, registry
from sunat_pipeline.modeling.metrics import PRIMARY_METRIC, calibration, primary_score, targeting_report
from sunat_pipeline.modeling.model import RiskModel, resolve_device
from sunat_pipeline.modeling.plots import shap_values, training_plots
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
MIN_FRAUDS = 20


class NotEnoughLabels(RuntimeError):
    """Too few labelled frauds to train: the same data gives the same answer, so retrying is pointless."""


def load_inputs(settings: Settings, asof: date) -> dict[str, pd.DataFrame]:
    """Everything the pipeline may know at the start of ``asof`` (silver, bounded by partition date; the monthly
    tax run's tables published by then)."""
    customs = ingest.silver(settings, "customs", upto=asof)
    return {
        "customs_history": customs,
        "outcomes": ingest.silver(settings, "enforcement", upto=asof),
        "reference": ingest.silver(settings, "reference_prices", upto=asof),
        "tax": ingest.silver(settings, "tax", upto=asof),
        "fx": ingest.silver(settings, "exchange_rates", upto=asof),
        "permits": ingest.silver(settings, "permits", upto=asof),
        **taxrisk.load(settings, asof),
    }


def training_set(settings: Settings, asof: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels of every item whose inspection outcome was known by ``asof``."""
    X, meta, _, _ = _labelled(settings, asof)
    return X, meta


def _labelled(settings: Settings, asof: date):
    """(features, labels, the labelled items' declared columns, the inputs they came from)."""
    inp = load_inputs(settings, asof)
    customs = inp["customs_history"]
    out = inp["outcomes"].sort_values(["reported_date", "record_id"]).drop_duplicates(
        ["declaration_id", "item_no"], keep="last")
    cols = ["declaration_id", "item_no", "result", "revenue_recovered_usd", "channel", "offence_code"]
    lab = customs.merge(out[cols], on=["declaration_id", "item_no"], how="inner")
    lab = lab.sort_values(["declaration_date", "declaration_id", "item_no"]).reset_index(drop=True)
    X = build_features(lab, **inp, taxes=settings.tax)
    meta = lab[["declaration_id", "item_no", "declaration_date", "channel", "offence_code"]].assign(
        y=(lab.result == "FRAUD").astype(int).to_numpy(), revenue=lab.revenue_recovered_usd.to_numpy())
    log.info("training set as of %s: %d labelled items, %d frauds (%.1f%%)", asof, len(lab),
             int(meta.y.sum()), 100 * meta.y.mean() if len(meta) else 0)
    return X, meta, lab[list(customs.columns)], inp


def train_if_due(settings: Settings, asof: date, force: bool = False, search: bool | None = None,
                 drift_requests: bool = True) -> dict:
    """Train when there is no champion, the last training is old, or enough new labels arrived.

    ``drift_requests``: also when drift monitoring asked for it (its request files); off under Airflow, where a
    request is an asset event that starts the ``sunat_retrain`` DAG instead.

    ``search`` (default: only when forced, i.e. the weekly ``sunat_retrain`` DAG) runs the time-budgeted
    hyperparameter search; other retrainings reuse the champion's parameters, so the daily chain stays fast."""
    if not settings.training.enabled:
        return {"trained": False, "reason": "training disabled (a rules-only policy)"}
    if registry.runs_for(settings, asof):
        log.info("training for %s already done: nothing to do (re-run)", asof)
        return {"trained": False, "reason": "already trained for this date"}
    last = registry.last_training_date(settings)
    if last is not None and last > asof:
        log.info("a training from %s is newer than %s: not retraining on older data", last, asof)
        return {"trained": False, "reason": f"newer training exists ({last})"}
    mv, _ = registry.champion(settings, load=False)
    reason = None
    if force:
        reason = "forced"
    elif mv is None:
        reason = "no champion yet"
    elif last is None or (asof - last).days >= settings.training.retrain_every_days:
        reason = f"schedule: last training {last}"
    else:
        new = ingest.silver(settings, "enforcement", upto=asof, since=last + timedelta(days=1))
        if len(new) >= settings.training.min_new_labels:
            reason = f"{len(new)} new outcomes since {last}"
    # Drift past the threshold (sunat_pipeline/reporting/monitor.py) asked for a retraining.
    if reason is None and drift_requests:
        from sunat_pipeline.reporting.retrain import retrain_request

        reason = retrain_request(settings, asof, last)
    if reason is None:
        log.info("training not due on %s (last %s)", asof, last)
        return {"trained": False, "reason": "not due"}
    log.info("training due on %s: %s", asof, reason)
    return train_and_register(settings, asof, reason, search=force if search is None else search)


def _frame_sha256(df: pd.DataFrame) -> str:
    if df.empty:
        return sha256_bytes(b"")
    return sha256_bytes(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())


def data_snapshot(inp: dict[str, pd.DataFrame], X: pd.DataFrame, meta: pd.DataFrame, is_hold: np.ndarray) -> dict:
    """Rows and content checksums of what the training read (reproducibility: same inputs, same sums)."""
    snap = {"training_data_sha256": _frame_sha256(X), "labels_sha256": _frame_sha256(meta[["y", "revenue"]]),
            "n_labelled": len(meta), "n_train": int((~is_hold).sum()), "n_holdout": int(is_hold.sum())}
    for name, df in sorted(inp.items()):
        snap[f"{name}_rows"] = len(df)
        snap[f"{name}_sha256"] = _frame_sha256(df.drop(columns=[c for c in df.columns if c.startswith("_")]))
    return snap


def rules_baseline(settings: Settings, items: pd.DataFrame, X: pd.DataFrame) -> np.ndarray:
    """The rules engine alone: rule_score with the initial weights (``rw-initial``), as scoring computes it."""
    from sunat_pipeline.feedback import offences as feedback
    from sunat_pipeline.selection.rules import evaluate, load_rules, summarise

    rules = load_rules(settings.rules_path)
    weights = feedback.load_version(settings, feedback.INITIAL)["weights"]
    frame = item_frame(items.reset_index(drop=True), X.reset_index(drop=True))
    return summarise(rules, evaluate(rules, frame), weights, frame).rule_score.to_numpy(dtype=float)


def label_sources(settings: Settings, meta: pd.DataFrame) -> dict:
    """Where the labels came from: the pipeline's selection reason of each labelled item where it scored the
    item, else ``legacy`` (history inspected by the legacy policy: how it chose is unknown to the pipeline)."""
    key = ["declaration_id", "item_no"]
    dates = pd.to_datetime(meta.declaration_date) if "declaration_date" in meta else pd.Series(dtype="datetime64[ns]")
    bounds = {"since": dates.min().date(), "upto": dates.max().date()} if dates.notna().any() else {}
    dec = read_partitioned(settings.scored_dir, "declaration_date", columns=[*key, "selection_reason"], **bounds)
    reason = pd.Series("legacy", index=meta.index)
    if len(dec):
        m = meta[key].astype({"item_no": "int64"}).merge(
            dec.astype({"item_no": "int64"}).drop_duplicates(key, keep="last"), on=key, how="left")
        reason = m.selection_reason.fillna("legacy").set_axis(meta.index)
    counts = reason.value_counts()
    n = max(1, len(reason))
    out = {f"label_share_{k}": round(float(v) / n, 6) for k, v in counts.items()}
    out["label_share_random"] = out.get("label_share_random", 0.0)
    out["label_share_legacy"] = out.get("label_share_legacy", 0.0)
    out["n_labels_random"] = int(counts.get("random", 0))
    # Selection bias: the random share is an unbiased sample of the population, the labelled set is not.
    # The ratio of the labelled fraud rate to the random labels' fraud rate says how enriched it is.
    if "y" in meta and out["n_labels_random"]:
        y = meta.y.to_numpy(dtype=float)
        rnd = (reason == "random").to_numpy()
        out["fraud_rate_labelled"] = float(y.mean())
        out["fraud_rate_random_labels"] = float(y[rnd].mean())
        if y[rnd].mean() > 0:
            out["selection_bias_factor"] = float(y.mean() / y[rnd].mean())
    return out


def promotion(challenger: float, champion: float | None, margin: float) -> tuple[bool, str]:
    """The champion/challenger rule on one holdout: promote when there is no champion, or when the challenger's
    primary metric is at least the champion's plus ``margin``. (promoted, why)."""
    if champion is None:
        return True, "no champion yet"
    why = f"challenger {PRIMARY_METRIC} {challenger:.4f} vs champion {champion:.4f} (margin {margin})"
    return challenger >= champion + margin, why


def model_params(settings: Settings, X: pd.DataFrame, meta: pd.DataFrame, tr: np.ndarray, search: bool,
                 device: str) -> tuple[dict, pd.DataFrame | None]:
    """Parameters of the new model: searched within the time budget, else the champion's, else the settings'."""
    from sunat_pipeline.modeling import tuning

    t = settings.training
    base = t.model_params()
    _, champ = registry.champion(settings)
    if champ is not None:  # keep what the last search found
        keep = {k: v for k, v in champ.get_params().items() if k not in ("seed", "device", "bag_size", "n_jobs")}
        base.update(keep)
    if not search:
        return base, None
    res = tuning.search(X[tr], meta.y[tr], meta.revenue[tr], meta.declaration_date[tr], base,
                        budget_s=t.search_budget_s, max_trials=t.search_max_trials, seed=settings.seed, device=device,
                        n_jobs=t.n_jobs)
    return res.best, res.table()


def train_and_register(settings: Settings, asof: date, reason: str = "manual", search: bool = False) -> dict:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, meta, items, inp = _labelled(settings, asof)
    if meta.y.sum() < MIN_FRAUDS:
        raise NotEnoughLabels(f"only {int(meta.y.sum())} labelled frauds by {asof}: not enough to train "
                              f"(at least {MIN_FRAUDS})")
    cut = pd.Timestamp(asof - timedelta(days=settings.training.holdout_days))
    is_hold = (pd.to_datetime(meta.declaration_date) >= cut).to_numpy()
    tr, ho = ~is_hold, is_hold
    t = settings.training
    device = resolve_device(t.device)
    params, trials = model_params(settings, X, meta, tr, search, device)
    model = RiskModel(**{**params, "bag_size": t.bag_size, "seed": settings.seed, "device": device,
                         "n_jobs": t.n_jobs})
    model.fit(X[tr], meta.y[tr], meta.revenue[tr], mechanism=meta.offence_code[tr], channel=meta.channel[tr],
              blind=tuple(settings.selection.documentary_blind), blind_label_weights=t.documentary_blind_labels)
    pred = model.predict(X[ho])
    y_h, rev_h = meta.y[ho].to_numpy(), meta.revenue[ho].to_numpy()
    metrics = {"n_train": int(tr.sum()), "n_holdout": int(ho.sum()), "train_fraud_rate": float(meta.y[tr].mean()),
               "holdout_fraud_rate": float(y_h.mean()) if ho.any() else 0.0}
    both = ho.any() and 0 < y_h.sum() < len(y_h)
    if both:
        metrics["roc_auc"] = float(roc_auc_score(y_h, pred.fraud_probability))
        metrics["pr_auc"] = float(average_precision_score(y_h, pred.fraud_probability))
    metrics.update(targeting_report(pred.expected_revenue_usd.to_numpy(), y_h, rev_h))
    cal, reliability = calibration(pred.fraud_probability.to_numpy(), y_h)
    metrics.update({f"calibration_{k}": v for k, v in cal.items()})
    # Baselines on the same holdout: the rules engine alone (initial weights) and random order.
    rng = np.random.default_rng(settings.seed)
    rnd = rng.random(len(y_h))
    rule_score = rules_baseline(settings, items[ho], X[ho]) if ho.any() else np.zeros(0)
    metrics.update({f"random_{k}": v for k, v in targeting_report(rnd, y_h, rev_h).items()})
    metrics.update({f"rules_{k}": v for k, v in targeting_report(rule_score, y_h, rev_h).items()})
    if both:
        metrics["rules_roc_auc"] = float(roc_auc_score(y_h, rule_score))
    metrics.update(label_sources(settings, meta))

    mv_champ, champ = registry.champion(settings)
    decision = {"challenger_" + PRIMARY_METRIC: metrics.get(PRIMARY_METRIC, 0.0),
                "rules_" + PRIMARY_METRIC: metrics.get("rules_" + PRIMARY_METRIC, 0.0),
                "random_" + PRIMARY_METRIC: metrics.get("random_" + PRIMARY_METRIC, 0.0),
                "holdout_from": cut.date().isoformat(), "holdout_to": asof.isoformat(),
                "n_holdout": int(ho.sum()), "promotion_margin": t.promotion_margin, "primary_metric": PRIMARY_METRIC}
    champ_score = None
    if champ is not None:
        _, champ_score = primary_score(champ.predict(X[ho]), y_h, rev_h)
        decision["champion_version"] = str(mv_champ.version)
        decision["champion_" + PRIMARY_METRIC] = champ_score
        # Judged on all the holdout days' traffic where selection probabilities allow it (modeling/gate.py).
        hold = inp["customs_history"]
        hold = hold[(pd.to_datetime(hold.declaration_date) >= cut)
                    & (pd.to_datetime(hold.declaration_date) < pd.Timestamp(asof))].reset_index(drop=True)
        Xa = build_features(hold, **inp, taxes=settings.tax)
        est = gate.all_traffic(settings, asof, hold, meta[ho].reset_index(drop=True),
                               model.predict(Xa).expected_revenue_usd.to_numpy(),
                               champ.predict(Xa).expected_revenue_usd.to_numpy())
        decision["all_traffic"] = est
    if champ is not None and est["method"] == "ipw_all_traffic":
        promote, why = gate.decide(est, t.promotion_margin, t.promotion_rule)
    else:
        promote, why = promotion(metrics.get(PRIMARY_METRIC, 0.0), champ_score, t.promotion_margin)
    decision.update({"promoted": promote, "why": why})
    gate.record_decision(settings, asof, decision)

    snapshot = data_snapshot(inp, X, meta, is_hold)
    registry.experiment(settings)
    with mlflow.start_run(run_name=f"train-{asof.isoformat()}") as run:
        mlflow.set_tags({"kind": "training", "training_date": asof.isoformat(), "trigger": reason,
                         "champion_decision": why, "promoted": str(promote)})
        mlflow.log_params({**model.get_params(), "device_requested": t.device, "holdout_days": t.holdout_days,
                           "asof": asof.isoformat(), "n_features": len(FEATURES),
                           "promotion_margin": t.promotion_margin, "primary_metric": PRIMARY_METRIC,
                           "searched": search, "search_trials": 0 if trials is None else len(trials),
                           "search_budget_s": t.search_budget_s if search else 0})
        mlflow.log_params({f"data_{k}" if k != "training_data_sha256" else k: v for k, v in snapshot.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            catalog_frame().to_csv(tmp / "feature_catalog.csv", index=False)
            importance = model.feature_importance()
            importance.rename("importance").to_csv(tmp / "feature_importance.csv")
            Xh = X[ho] if ho.sum() >= 50 else X[tr]
            shap = shap_values(model, Xh, seed=settings.seed) if t.log_plots else None
            if shap is not None:
                shap.abs().mean().sort_values(ascending=False).rename("mean_abs_shap").to_csv(
                    tmp / "shap_mean_abs.csv")
            reliability.to_csv(tmp / "reliability.csv", index=False)
            (tmp / "champion_decision.json").write_text(json.dumps(decision, indent=2, default=str))
            (tmp / "data_snapshot.json").write_text(json.dumps(snapshot, indent=2, default=str))
            if trials is not None and len(trials):
                trials.to_csv(tmp / "search_trials.csv", index=False)
            if t.log_plots:
                training_plots(tmp, importance=importance, shap=shap, X=Xh, y=y_h,
                               scores={"model": pred.expected_revenue_usd.to_numpy(),
                                       "rules (rw-initial)": rule_score, "random": rnd}, reliability=reliability)
            mlflow.log_artifacts(str(tmp))
        from sunat_pipeline.modeling.mlflow_model import RiskModelPyfunc

        example = X[tr].head(5)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RiskModelPyfunc(model), input_example=example,
            signature=infer_signature(example, model.predict(example)),
            pip_requirements=_pinned(["xgboost", "pandas", "numpy", "scikit-learn", "mlflow"]),
            registered_model_name=settings.registered_model)
        version = str(info.registered_model_version)
        mlflow.log_metric("promoted", float(promote))
        # Inside the run: if registering or promoting fails, the run ends FAILED and the retry trains again
        # (only FINISHED runs count as trained, registry.runs_for).
        registry.register(settings, version, promote=promote,
                          description=registry.version_description(asof, metrics, decision, reason),
                          tags={"training_date": asof.isoformat(), "champion_decision": why})
    log.info("trained version %s as of %s on %d items (holdout %d): %s=%.4f (rules %.4f, random %.4f); "
             "promoted=%s (%s)", version, asof, metrics["n_train"], metrics["n_holdout"], PRIMARY_METRIC,
             metrics.get(PRIMARY_METRIC, 0), metrics.get("rules_" + PRIMARY_METRIC, 0),
             metrics.get("random_" + PRIMARY_METRIC, 0), promote, why)
    return {"trained": True, "version": version, "run_id": run.info.run_id, "promoted": promote,
            "reason": reason, "metrics": metrics, "decision": decision}


def _pinned(names: list[str]) -> list[str]:
    from importlib.metadata import version

    return [f"{n}=={version(n)}" for n in names]
