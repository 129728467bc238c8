"""Training: labelled set, time-based split, MLflow run, registry and champion/challenger.

Only inspected items have labels. The holdout is the most recent ``holdout_days`` of labelled
declarations (never a random split). A new version becomes ``champion`` only if it beats the current
champion on that same holdout by ``promotion_margin`` on Revenue@10% (revenue captured at about the
configured inspection capacity); the decision and its numbers are logged to the run.

Each training run logs to MLflow: the model's parameters and the device it ran on; a snapshot of its inputs
(rows and a content checksum per source, training/holdout rows, the labelled set's checksum); the feature
catalog; on the holdout ROC-AUC, PR-AUC, Precision/Recall/Revenue at 1, 2, 5, 10%, the Brier score, the
expected calibration error and a reliability table; the same targeting metrics for two baselines, the rules
engine alone (initial rule weights) and random order; where the labels came from (random selection share);
plots (feature importance, SHAP summary, precision-recall curve, lift chart, reliability); and the
champion/challenger decision as JSON.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.features.build import FEATURES, build_features, catalog_frame, item_frame
from sunat_pipeline.ingest import pipeline as ingest
from sunat_pipeline.lake.store import read_partitions, sha256_bytes
from sunat_pipeline.modeling.metrics import RATES, targeting_report
from sunat_pipeline.modeling.model import RiskModel, resolve_device
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
PRIMARY_METRIC = "revenue_at_10"
SHAP_SAMPLE = 2000  # rows of the holdout (or training set) explained in the SHAP summary


def load_inputs(settings: Settings, asof: date) -> dict[str, pd.DataFrame]:
    """Everything the pipeline may know at the start of ``asof`` (silver, bounded by partition date)."""
    customs = ingest.silver(settings, "customs", upto=asof)
    return {
        "customs_history": customs,
        "outcomes": ingest.silver(settings, "enforcement", upto=asof),
        "reference": ingest.silver(settings, "reference_prices", upto=asof),
        "tax": ingest.silver(settings, "tax", upto=asof),
        "fx": ingest.silver(settings, "exchange_rates", upto=asof),
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
    lab = customs.merge(out[["declaration_id", "item_no", "result", "revenue_recovered_usd", "channel"]],
                        on=["declaration_id", "item_no"], how="inner")
    lab = lab.sort_values(["declaration_date", "declaration_id", "item_no"]).reset_index(drop=True)
    X = build_features(lab, **inp)
    meta = lab[["declaration_id", "item_no", "declaration_date", "channel"]].assign(
        y=(lab.result == "FRAUD").astype(int).to_numpy(), revenue=lab.revenue_recovered_usd.to_numpy())
    log.info("training set as of %s: %d labelled items, %d frauds (%.1f%%)", asof, len(lab),
             int(meta.y.sum()), 100 * meta.y.mean() if len(meta) else 0)
    return X, meta, lab[list(customs.columns)], inp


def _client(settings: Settings):
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    from mlflow import MlflowClient

    return MlflowClient(settings.tracking_uri)


def _experiment(settings: Settings) -> str:
    import mlflow

    client = _client(settings)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
        exp_id = client.create_experiment(settings.mlflow_experiment,
                                          artifact_location=settings.mlflow_artifacts.as_uri())
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def champion(settings: Settings):
    """(version, RiskModel) of the current champion, or (None, None)."""
    import mlflow

    client = _client(settings)
    try:
        mv = client.get_model_version_by_alias(settings.registered_model, "champion")
    except Exception:  # no registered model or no alias yet
        return None, None
    m = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{mv.version}")
    return mv, m.unwrap_python_model().model


def load_version(settings: Settings, version: str) -> RiskModel:
    import mlflow

    _client(settings)
    return mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{version}").unwrap_python_model().model


def _runs_for(settings: Settings, asof: date) -> list:
    client = _client(settings)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=f"tags.training_date = '{asof.isoformat()}'")


def last_training_date(settings: Settings) -> date | None:
    client = _client(settings)
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string="tags.kind = 'training'",
                              order_by=["tags.training_date DESC"], max_results=1)
    return date.fromisoformat(runs[0].data.tags["training_date"]) if runs else None


def train_if_due(settings: Settings, asof: date, force: bool = False, search: bool | None = None) -> dict:
    """Train when there is no champion, the last training is old, or enough new labels arrived.

    ``search`` (default: only when forced, i.e. the weekly ``sunat_retrain`` DAG) runs the time-budgeted
    hyperparameter search; other retrainings reuse the champion's parameters, so the daily chain stays fast."""
    if _runs_for(settings, asof):
        log.info("training for %s already done: nothing to do (re-run)", asof)
        return {"trained": False, "reason": "already trained for this date"}
    last = last_training_date(settings)
    if last is not None and last > asof:
        log.info("a training from %s is newer than %s: not retraining on older data", last, asof)
        return {"trained": False, "reason": f"newer training exists ({last})"}
    mv, _ = champion(settings)
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
    if reason is None:  # drift past the threshold (sunat_pipeline/reporting/monitor.py) asked for a retraining
        from sunat_pipeline.reporting.monitor import retrain_request

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
    dec = read_partitions(settings.scored_dir, "declaration_date", columns=[*key, "selection_reason"], **bounds)
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


def calibration(p: np.ndarray, y: np.ndarray, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """Brier score, expected calibration error and a reliability table (equal-count bins of the prediction)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if not len(p):
        return {}, pd.DataFrame(columns=["bin", "n", "mean_predicted", "observed_rate", "p_min", "p_max"])
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, min(bins, len(p)))
    rows = [{"bin": i + 1, "n": len(g), "mean_predicted": float(p[g].mean()), "observed_rate": float(y[g].mean()),
             "p_min": float(p[g].min()), "p_max": float(p[g].max())} for i, g in enumerate(groups) if len(g)]
    table = pd.DataFrame(rows)
    ece = float((table.n * (table.mean_predicted - table.observed_rate).abs()).sum() / len(p))
    return {"brier": float(np.mean((p - y) ** 2)), "ece": ece,
            "mean_predicted": float(p.mean()), "observed_rate": float(y.mean())}, table


def shap_values(model: RiskModel, X: pd.DataFrame, n: int = SHAP_SAMPLE, seed: int = 0) -> pd.DataFrame:
    """Exact TreeSHAP contributions (log-odds) of the first bag member on a sample of at most ``n`` rows."""
    import xgboost as xgb

    Xs = X.sample(n, random_state=seed) if len(X) > n else X
    c = model.classifiers_[0].get_booster().predict(xgb.DMatrix(Xs[model.feature_names_]), pred_contribs=True)
    return pd.DataFrame(c[:, :-1], columns=model.feature_names_, index=Xs.index)


def _plots(out: Path, *, importance: pd.Series, shap: pd.DataFrame, X: pd.DataFrame, y: np.ndarray,
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


def model_params(settings: Settings, X: pd.DataFrame, meta: pd.DataFrame, tr: np.ndarray, search: bool,
                 device: str) -> tuple[dict, pd.DataFrame | None]:
    """Parameters of the new model: searched within the time budget, else the champion's, else the settings'."""
    from sunat_pipeline.modeling import tuning

    t = settings.training
    base = {"n_estimators": t.n_estimators, "max_depth": t.max_depth, "learning_rate": t.learning_rate}
    _, champ = champion(settings)
    if champ is not None:  # keep what the last search found
        keep = {k: v for k, v in champ.get_params().items() if k not in ("seed", "device", "bag_size", "n_jobs")}
        base.update(keep)
    if not search:
        return base, None
    res = tuning.search(X[tr], meta.y[tr], meta.revenue[tr], meta.declaration_date[tr], base,
                        budget_s=t.search_budget_s, max_trials=t.search_max_trials, seed=settings.seed, device=device)
    return res.best, res.table()


def train_and_register(settings: Settings, asof: date, reason: str = "manual", search: bool = False) -> dict:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, meta, items, inp = _labelled(settings, asof)
    if meta.y.sum() < 20:
        raise RuntimeError(f"only {int(meta.y.sum())} labelled frauds by {asof}: not enough to train")
    cut = pd.Timestamp(asof - timedelta(days=settings.training.holdout_days))
    is_hold = (pd.to_datetime(meta.declaration_date) >= cut).to_numpy()
    tr, ho = ~is_hold, is_hold
    t = settings.training
    device = resolve_device(t.device)
    params, trials = model_params(settings, X, meta, tr, search, device)
    model = RiskModel(**{**params, "bag_size": t.bag_size, "seed": settings.seed, "device": device})
    model.fit(X[tr], meta.y[tr], meta.revenue[tr])
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

    mv_champ, champ = champion(settings)
    decision = {"challenger_" + PRIMARY_METRIC: metrics.get(PRIMARY_METRIC, 0.0),
                "rules_" + PRIMARY_METRIC: metrics.get("rules_" + PRIMARY_METRIC, 0.0),
                "random_" + PRIMARY_METRIC: metrics.get("random_" + PRIMARY_METRIC, 0.0),
                "holdout_from": cut.date().isoformat(), "holdout_to": asof.isoformat(),
                "n_holdout": int(ho.sum()), "promotion_margin": t.promotion_margin}
    if champ is None:
        promote, why = True, "no champion yet"
    else:
        cp = champ.predict(X[ho])
        champ_score = targeting_report(cp.expected_revenue_usd.to_numpy(), y_h, rev_h).get(PRIMARY_METRIC, 0.0)
        decision["champion_version"] = str(mv_champ.version)
        decision["champion_" + PRIMARY_METRIC] = champ_score
        promote = metrics.get(PRIMARY_METRIC, 0.0) >= champ_score + t.promotion_margin
        why = (f"challenger {PRIMARY_METRIC} {metrics.get(PRIMARY_METRIC, 0):.4f} vs champion "
               f"{champ_score:.4f} (margin {t.promotion_margin})")
    decision.update({"promoted": promote, "why": why})

    snapshot = data_snapshot(inp, X, meta, is_hold)
    _experiment(settings)
    client = _client(settings)
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
            shap = shap_values(model, Xh, seed=settings.seed)
            shap.abs().mean().sort_values(ascending=False).rename("mean_abs_shap").to_csv(tmp / "shap_mean_abs.csv")
            reliability.to_csv(tmp / "reliability.csv", index=False)
            (tmp / "champion_decision.json").write_text(json.dumps(decision, indent=2, default=str))
            (tmp / "data_snapshot.json").write_text(json.dumps(snapshot, indent=2, default=str))
            if trials is not None and len(trials):
                trials.to_csv(tmp / "search_trials.csv", index=False)
            _plots(tmp, importance=importance, shap=shap, X=Xh, y=y_h,
                   scores={"model": pred.expected_revenue_usd.to_numpy(), "rules (rw-initial)": rule_score,
                           "random": rnd}, reliability=reliability)
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
    if promote:
        client.set_registered_model_alias(settings.registered_model, "champion", version)
    client.set_model_version_tag(settings.registered_model, version, "training_date", asof.isoformat())
    client.set_model_version_tag(settings.registered_model, version, "champion_decision", why)
    log.info("trained version %s as of %s on %d items (holdout %d): %s=%.4f (rules %.4f, random %.4f); "
             "promoted=%s (%s)", version, asof, metrics["n_train"], metrics["n_holdout"], PRIMARY_METRIC,
             metrics.get(PRIMARY_METRIC, 0), metrics.get("rules_" + PRIMARY_METRIC, 0),
             metrics.get("random_" + PRIMARY_METRIC, 0), promote, why)
    return {"trained": True, "version": version, "run_id": run.info.run_id, "promoted": promote,
            "reason": reason, "metrics": metrics, "decision": decision}


def _pinned(names: list[str]) -> list[str]:
    from importlib.metadata import version

    return [f"{n}=={version(n)}" for n in names]


def pin_champion(settings: Settings, version: str) -> None:
    """Rollback: point the champion alias at an earlier version."""
    client = _client(settings)
    client.get_model_version(settings.registered_model, version)  # raises if it does not exist
    client.set_registered_model_alias(settings.registered_model, "champion", version)
    log.info("champion of %s pinned to version %s", settings.registered_model, version)
