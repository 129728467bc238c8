"""Training: labelled set, time-based split, MLflow run, registry and champion/challenger.

Only inspected items have labels. The holdout is the most recent ``holdout_days`` of labelled
declarations (never a random split). A new version becomes ``champion`` only if it beats the current
champion on that same holdout by ``promotion_margin`` on Revenue@10% (revenue captured at about the
configured inspection capacity); the decision and its numbers are logged to the run.
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
from sunat_pipeline.features import FEATURES, build_features, catalog_frame
from sunat_pipeline.lake import sha256_bytes
from sunat_pipeline.metrics import targeting_report
from sunat_pipeline.model import RiskModel
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
PRIMARY_METRIC = "revenue_at_10"


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
    return X, meta


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


def train_if_due(settings: Settings, asof: date, force: bool = False) -> dict:
    """Train when there is no champion, the last training is old, or enough new labels arrived."""
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
    if reason is None:
        log.info("training not due on %s (last %s)", asof, last)
        return {"trained": False, "reason": "not due"}
    log.info("training due on %s: %s", asof, reason)
    return train_and_register(settings, asof, reason)


def train_and_register(settings: Settings, asof: date, reason: str = "manual") -> dict:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, meta = training_set(settings, asof)
    if meta.y.sum() < 20:
        raise RuntimeError(f"only {int(meta.y.sum())} labelled frauds by {asof}: not enough to train")
    cut = pd.Timestamp(asof - timedelta(days=settings.training.holdout_days))
    is_hold = (pd.to_datetime(meta.declaration_date) >= cut).to_numpy()
    tr, ho = ~is_hold, is_hold
    t = settings.training
    model = RiskModel(n_estimators=t.n_estimators, max_depth=t.max_depth, learning_rate=t.learning_rate,
                      bag_size=t.bag_size, seed=settings.seed, device=t.device)
    model.fit(X[tr], meta.y[tr], meta.revenue[tr])
    pred = model.predict(X[ho])
    y_h, rev_h = meta.y[ho].to_numpy(), meta.revenue[ho].to_numpy()
    metrics = {"n_train": int(tr.sum()), "n_holdout": int(ho.sum()), "train_fraud_rate": float(meta.y[tr].mean()),
               "holdout_fraud_rate": float(y_h.mean()) if ho.any() else 0.0}
    if ho.any() and 0 < y_h.sum() < len(y_h):
        metrics["roc_auc"] = float(roc_auc_score(y_h, pred.fraud_probability))
        metrics["pr_auc"] = float(average_precision_score(y_h, pred.fraud_probability))
    metrics.update(targeting_report(pred.expected_revenue_usd.to_numpy(), y_h, rev_h))
    # Baseline on the same holdout: the rules engine's score and random order.
    rng = np.random.default_rng(settings.seed)
    metrics.update({f"random_{k}": v for k, v in targeting_report(rng.random(len(y_h)), y_h, rev_h).items()
                    if k.startswith(("precision_at_10", "revenue_at_10"))})

    mv_champ, champ = champion(settings)
    decision = {"challenger_" + PRIMARY_METRIC: metrics.get(PRIMARY_METRIC, 0.0)}
    if champ is None:
        promote, why = True, "no champion yet"
    else:
        cp = champ.predict(X[ho])
        champ_score = targeting_report(cp.expected_revenue_usd.to_numpy(), y_h, rev_h).get(PRIMARY_METRIC, 0.0)
        decision["champion_version"] = mv_champ.version
        decision["champion_" + PRIMARY_METRIC] = champ_score
        promote = metrics.get(PRIMARY_METRIC, 0.0) >= champ_score + t.promotion_margin
        why = (f"challenger {PRIMARY_METRIC} {metrics.get(PRIMARY_METRIC, 0):.4f} vs champion "
               f"{champ_score:.4f} (margin {t.promotion_margin})")
    decision.update({"promoted": promote, "why": why})

    _experiment(settings)
    client = _client(settings)
    with mlflow.start_run(run_name=f"train-{asof.isoformat()}") as run:
        mlflow.set_tags({"kind": "training", "training_date": asof.isoformat(), "trigger": reason})
        mlflow.log_params({**model.get_params(), "holdout_days": t.holdout_days, "asof": asof.isoformat(),
                           "n_features": len(FEATURES)})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        data_sha = sha256_bytes(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
        mlflow.log_param("training_data_sha256", data_sha)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            catalog_frame().to_csv(tmp / "feature_catalog.csv", index=False)
            model.feature_importance().rename("importance").to_csv(tmp / "feature_importance.csv")
            (tmp / "champion_decision.json").write_text(json.dumps(decision, indent=2, default=str))
            mlflow.log_artifacts(str(tmp))
        from sunat_pipeline.mlflow_model import RiskModelPyfunc

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
    log.info("trained version %s as of %s on %d items (holdout %d): %s=%.4f; promoted=%s (%s)", version, asof,
             metrics["n_train"], metrics["n_holdout"], PRIMARY_METRIC, metrics.get(PRIMARY_METRIC, 0), promote, why)
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
