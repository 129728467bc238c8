"""Training the two tax models each month, in MLflow, with champion/challenger through the customs model's
registry helpers (``modeling/registry.py``) under their own registered names (``tax_audit.anomaly_model``,
``tax_audit.audit_model``) in their own experiment (``tax_audit.experiment``, tagged for model training).

Selection bias. Labels exist only where the legacy policy audited, and it audits mostly the top of its rules.
Each label is weighted by the inverse of its propensity: a logistic regression of "audited" on the month's
features over every eligible taxpayer-month that had audits (closed ones: how long an audit stays open does
not depend on the taxpayer, so the closed ones keep the propensity's shape). The RANDOM program's audits fall
where the rules would not look, get low propensities and so large weights: they stand for the taxpayers the
rules never pick. The weights are tempered, (1 / propensity) ** ``tax_audit.ipw_power`` (0.5), normalised to
mean 1 and capped at ``tax_audit.max_ipw`` (3): with a few dozen positive labels full weights (power 1, a high
cap) let a handful of random audits decide the model, and ranked worse on the default world (docs/tax.md).

Champion/challenger. The labels of the audits opened in the last ``holdout_months`` opening months are the
holdout: the supervised challenger trains on the rest; both models and their champions are judged by the
weighted ROC AUC on it; a challenger is promoted when it beats its champion by ``promotion_margin`` (or there
is none). Without a holdout with both outcomes the anomaly challenger (refitted on the newest population)
replaces its champion, and a supervised one is promoted only where there is no champion. A month whose later
months already trained (a backfill) moves no alias and scores with its own challengers (point in time).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.modeling import registry
from sunat_pipeline.settings import Settings
from sunat_pipeline.tax import features as F
from sunat_pipeline.tax import inputs, outcomes, store
from sunat_pipeline.tax.models import TaxAnomalyModel, TaxAuditModel, TaxModelPyfunc

log = logging.getLogger(__name__)
ANOMALY_DESCRIPTION = (
    "Anomaly score of a taxpayer-month (sunat_pipeline.tax.models.TaxAnomalyModel): an Isolation Forest on the "
    "suspicious side of the point-in-time tax features (docs/tax.md). Unsupervised: refitted monthly on the "
    "eligible population; judged on the audit outcomes known by then (weighted ROC AUC).")
AUDIT_DESCRIPTION = (
    "Probability that an audit of a taxpayer finds a material assessment (sunat_pipeline.tax.models."
    "TaxAuditModel, XGBoost), trained on closed audits with inverse-propensity weights against the legacy "
    "policy's selection bias (docs/tax.md).")


def model_settings(settings: Settings, name: str) -> Settings:
    """The settings the registry helpers read, pointed at a tax model's registered name and experiment."""
    return settings.model_copy(update={"registered_model": name, "mlflow_experiment": settings.tax_audit.experiment})


def feature_frame(settings: Settings, month: str, inp: inputs.TaxInputs | None = None,
                  refresh: bool = False) -> pd.DataFrame:
    """The month's features from the lake (point in time, so computed once is computed for good), built and
    written when missing or ``refresh``."""
    df = None if refresh else store.read(settings, store.FEATURES, month)
    if df is None:
        df = F.build(settings, inp if inp is not None else inputs.load(settings, month))
        store.write(settings, store.FEATURES, month, df)
    return df


def labelled(settings: Settings, inp: inputs.TaxInputs) -> pd.DataFrame:
    """The labels known at the cutoff with their selection-time features and inverse-propensity weights."""
    a = outcomes.audits(settings, inp)
    if a.empty:
        return pd.DataFrame()
    frames = {m: feature_frame(settings, m) for m in sorted(a.features_month.unique())}
    pool = pd.concat([f.assign(features_month=m) for m, f in frames.items()], ignore_index=True)
    pool = pool.merge(a[["taxpayer_id", "features_month"]].drop_duplicates().assign(audited=1),
                      on=["taxpayer_id", "features_month"], how="left").fillna({"audited": 0})
    pool = pool[pool.eligible.astype(bool) | (pool.audited == 1)].reset_index(drop=True)
    lab = a[a.label.notna()].merge(pool.drop(columns="audited"), on=["taxpayer_id", "features_month"], how="inner")
    if lab.empty:
        return lab
    p = _propensity(pool, lab, settings.seed)
    w = (1.0 / np.clip(p, 1e-6, 1)) ** settings.tax_audit.ipw_power
    w = w / w.mean()
    w = np.minimum(w, settings.tax_audit.max_ipw)
    lab["weight"] = w / w.mean()
    lab["propensity"] = p
    return lab.sort_values(["opened_month", "audit_id"], kind="stable").reset_index(drop=True)


def _propensity(pool: pd.DataFrame, rows: pd.DataFrame, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    X = pool[F.NAMES].astype(float)
    med, sd = X.median(), X.std().replace(0, 1).fillna(1)

    def prep(d: pd.DataFrame) -> np.ndarray:
        return ((d[F.NAMES].astype(float) - med) / sd).fillna(0).clip(-8, 8).to_numpy()

    y = pool.audited.to_numpy(dtype=int)
    if y.min() == y.max():
        return np.ones(len(rows))
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(prep(pool), y)
    return lr.predict_proba(prep(rows))[:, 1]


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(y) < 5 or y.min() == y.max():
        return None
    return float(roc_auc_score(y, s, sample_weight=w))


def _later_trained(settings: Settings, month: str) -> bool:
    return any(m > str(month) for m in store.months(settings, store.MODELS))


def train(settings: Settings, month: str) -> dict:
    """Train, log and judge both models for ``month``; the versions the month scores with (``score_with``).
    Idempotent: a month already trained returns its record (``gold/tax_models/month=M/run.json``)."""
    month = str(inputs.parse_month(month))
    done = store.read_json(settings, store.MODELS, month)
    if done is not None:
        log.info("tax models for %s already trained: %s", month, done["score_with"])
        return done
    ta = settings.tax_audit
    inp = inputs.load(settings, month)
    feats = feature_frame(settings, month, inp)
    elig = feats[feats.eligible.astype(bool)].reset_index(drop=True)
    if elig.empty:
        raise NoTaxpayers(f"no eligible taxpayer in the register as of {inp.cutoff}: nothing to train on")
    lab = labelled(settings, inp)
    opened = sorted(lab.opened_month.unique()) if len(lab) else []
    hold = lab.opened_month.isin(opened[-ta.holdout_months:]).to_numpy() if len(lab) else np.zeros(0, bool)
    backfill = _later_trained(settings, month)
    rec: dict = {"month": month, "cutoff": inp.cutoff.isoformat(), "n_eligible": len(elig), "n_labels": len(lab),
                 "n_positive": int(lab.label.sum()) if len(lab) else 0, "n_holdout": int(hold.sum()),
                 "holdout_months": opened[-ta.holdout_months:], "backfill": backfill}
    anomaly = TaxAnomalyModel(n_estimators=ta.anomaly_trees, seed=settings.seed).fit(elig)
    rec["anomaly"] = _judge_and_log(settings, month, "anomaly", anomaly, lab, hold, elig, backfill, rec)
    y = lab.label.to_numpy(dtype=int) if len(lab) else np.zeros(0, int)
    if len(lab) and y[~hold].sum() >= ta.min_positive_labels and (y[~hold] == 0).sum() >= ta.min_positive_labels:
        sup = TaxAuditModel(anomaly, ta.n_estimators, ta.max_depth, ta.learning_rate, seed=settings.seed)
        sup.fit(lab[~hold], y[~hold], sample_weight=lab.weight.to_numpy()[~hold])
        rec["supervised"] = _judge_and_log(settings, month, "supervised", sup, lab, hold, lab[~hold], backfill, rec)
    else:
        rec["supervised"] = {"trained": False, "why": f"{int(y[~hold].sum()) if len(lab) else 0} positive labels "
                             f"outside the holdout (at least {ta.min_positive_labels} of each outcome needed)"}
    rec["score_with"] = {k: _score_version(settings, k, rec[k], backfill) for k in ("anomaly", "supervised")}
    store.write_json(settings, store.MODELS, month, rec)
    log.info("tax models %s: %d eligible, %d labels (%d positive, %d holdout); anomaly v%s (promoted %s), "
             "supervised %s; scoring with %s", month, len(elig), len(lab), rec["n_positive"], rec["n_holdout"],
             rec["anomaly"].get("version"), rec["anomaly"].get("promoted"),
             rec["supervised"].get("version", rec["supervised"].get("why")), rec["score_with"])
    return rec


class NoTaxpayers(RuntimeError):
    """Nothing to train or score on: the same lake gives the same answer, so retrying is pointless."""


def _score_version(settings: Settings, kind: str, r: dict, backfill: bool) -> str | None:
    if backfill:
        return r.get("version")
    mv = registry.champion_version(model_settings(settings, _name(settings, kind)))
    return str(mv.version) if mv is not None else None


def _pinned() -> list[str]:
    """Pinned requirements (MLflow's inference would start a process to find them)."""
    from importlib.metadata import version

    return [f"{n}=={version(n)}" for n in ("xgboost", "pandas", "numpy", "scikit-learn", "mlflow")]


def _name(settings: Settings, kind: str) -> str:
    return settings.tax_audit.anomaly_model if kind == "anomaly" else settings.tax_audit.audit_model


def _judge_and_log(settings: Settings, month: str, kind: str, model, lab: pd.DataFrame, hold: np.ndarray,
                   fitted_on: pd.DataFrame, backfill: bool, rec: dict) -> dict:
    """Judge ``model`` against its champion on the holdout, log the run, register and maybe promote."""
    import mlflow
    from mlflow.models import infer_signature

    ms = model_settings(settings, _name(settings, kind))
    ho = lab[hold] if len(lab) else lab
    y, w = (ho.label.to_numpy(dtype=int), ho.weight.to_numpy()) if len(ho) else (np.zeros(0, int), np.zeros(0))
    auc = _auc(y, model.score(ho), w) if len(ho) else None
    mv, champ = registry.champion(ms)
    champ_auc = _auc(y, champ.score(ho), w) if champ is not None and len(ho) else None
    margin = settings.tax_audit.promotion_margin
    if backfill:
        promote, why = False, "a later month is already trained: a backfill moves no alias"
    elif mv is None:
        promote, why = True, "no champion yet"
    elif auc is None or champ_auc is None:
        promote = kind == "anomaly"
        why = ("no holdout with both outcomes: the anomaly model refitted on the newest population replaces its "
               "champion" if promote else "no holdout with both outcomes to judge the challenger: champion kept")
    else:
        promote = auc >= champ_auc + margin
        why = f"challenger weighted ROC AUC {auc:.4f} vs champion v{mv.version} {champ_auc:.4f} (margin {margin})"
    metrics = {"holdout_weighted_roc_auc": auc, "champion_holdout_weighted_roc_auc": champ_auc,
               "n_fitted_rows": len(fitted_on), "n_holdout": len(ho), "holdout_positives": int(y.sum()),
               "n_labels": rec["n_labels"], "n_positive_labels": rec["n_positive"], "n_eligible": rec["n_eligible"]}
    if len(lab) and "weight" in lab:
        metrics["max_label_weight"] = float(lab.weight.max())
        metrics["random_program_mean_weight"] = float(lab.weight[lab.program == "RANDOM"].mean()) \
            if (lab.program == "RANDOM").any() else None
    registry.experiment(ms)
    with mlflow.start_run(run_name=f"tax-{kind}-{month}") as run:
        mlflow.set_tags({"kind": f"tax_{kind}", "training_month": month, "promoted": str(promote),
                         "champion_decision": why})
        mlflow.log_params({**model.get_params(), "month": month, "cutoff": rec["cutoff"], "n_features": len(F.NAMES),
                           "holdout_months": ",".join(rec["holdout_months"]) or "none"})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            pd.DataFrame({"feature": F.NAMES, "description": [F.DESCRIPTIONS[n] for n in F.NAMES],
                          "suspicious_side": [F.SUSPICIOUS[n] for n in F.NAMES]}).to_csv(
                tmp / "feature_catalog.csv", index=False)
            if kind == "supervised":
                model.feature_importance().rename("importance").to_csv(tmp / "feature_importance.csv")
            (tmp / "champion_decision.json").write_text(json.dumps(
                {"promoted": promote, "why": why, **metrics}, indent=2, default=str))
            mlflow.log_artifacts(str(tmp))
        example = fitted_on[F.NAMES].head(5).astype(float)
        info = mlflow.pyfunc.log_model(name="model", python_model=TaxModelPyfunc(model), input_example=example,
                                       signature=infer_signature(example, model.score(example)),
                                       pip_requirements=_pinned(), registered_model_name=ms.registered_model)
        version = str(info.registered_model_version)
        registry.register(ms, version, promote=promote, tags={"training_month": month, "champion_decision": why},
                          description=f"Trained for {month} (cutoff {rec['cutoff']}) on {len(fitted_on)} rows; "
                          f"holdout weighted ROC AUC {auc if auc is None else round(auc, 4)}. "
                          f"{'Promoted' if promote else 'Not promoted'}: {why}.",
                          model_description=ANOMALY_DESCRIPTION if kind == "anomaly" else AUDIT_DESCRIPTION)
    return {"trained": True, "version": version, "promoted": promote, "why": why, "run_id": run.info.run_id,
            "holdout_auc": auc, "champion_auc": champ_auc}
