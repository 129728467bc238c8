"""The two tax models, scikit-learn estimators that pickle into MLflow (``TaxModelPyfunc``):

* ``TaxAnomalyModel``: an Isolation Forest on one-sided robust z-scores. Each feature with a suspicious side
  (``features.SUSPICIOUS``) is centred on the population's median, scaled by its interquartile range, and
  only its suspicious side kept (a margin far *above* the sector is unusual but no sign of evasion); context
  features are left out; a missing value reads as the median (nothing unusual). The score is the forest's
  anomaly score, higher is more anomalous; ``contributions`` are the one-sided z-scores (the reasons).
* ``TaxAuditModel``: XGBoost on the raw features (missing values native) boosted from the anomaly score
  calibrated to the labels, trained on audit outcomes with sample weights (inverse propensity, train.py);
  ``contributions`` are its SHAP values (``pred_contribs``) plus the anomaly prior's share.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from sunat_pipeline.tax.features import NAMES, SUSPICIOUS

ONE_SIDED = [n for n in NAMES if SUSPICIOUS[n] != 0]


class TaxAnomalyModel(BaseEstimator):
    def __init__(self, n_estimators: int = 300, seed: int = 42):
        self.n_estimators = n_estimators
        self.seed = seed

    def _z(self, X: pd.DataFrame) -> pd.DataFrame:
        z = (X[ONE_SIDED].astype(float) - self.center_) / self.scale_
        return (z * pd.Series(SUSPICIOUS)[ONE_SIDED]).clip(lower=0, upper=20).fillna(0.0)

    def fit(self, X: pd.DataFrame, y=None) -> TaxAnomalyModel:
        from sklearn.ensemble import IsolationForest

        v = X[ONE_SIDED].astype(float)
        self.center_ = v.median()
        iqr = v.quantile(0.75) - v.quantile(0.25)
        # A feature zero for most taxpayers (offences, missed months) has no spread: its mean deviation scales it.
        spread = (v - self.center_).abs().mean()
        self.scale_ = iqr.where(iqr > 1e-9, spread).where(lambda s: s > 1e-9, 1.0).fillna(1.0)
        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1)
        self.forest_.fit(self._z(X).to_numpy())
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return -self.forest_.score_samples(self._z(X).to_numpy())

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._z(X).reset_index(drop=True)


class TaxAuditModel(BaseEstimator):
    """XGBoost boosted from the anomaly score: the anomaly score, calibrated to the labels by a one-variable
    logistic regression, is each row's starting log-odds (``base_margin``), and shallow, regularised trees learn
    the corrections the audit outcomes support. With a few dozen positive labels a model from scratch ranks
    worse than the anomaly score alone (docs/tax.md); from the anomaly prior it can only add what the labels
    show. ``anomaly``: the fitted ``TaxAnomalyModel`` it starts from (kept inside: one self-contained model)."""

    def __init__(self, anomaly: TaxAnomalyModel | None = None, n_estimators: int = 50, max_depth: int = 2,
                 learning_rate: float = 0.05, min_child_weight: float = 2.0, reg_lambda: float = 5.0,
                 seed: int = 42):
        self.anomaly = anomaly
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.seed = seed

    def _prior(self, X: pd.DataFrame) -> np.ndarray:
        return self.prior_a_ + self.prior_b_ * (self.anomaly.score(X) - self.prior_mu_) / self.prior_sd_

    def fit(self, X: pd.DataFrame, y, sample_weight=None) -> TaxAuditModel:
        from sklearn.linear_model import LogisticRegression
        from xgboost import XGBClassifier

        y = np.asarray(y, dtype=int)
        a = self.anomaly.score(X)
        self.prior_mu_, self.prior_sd_ = float(a.mean()), float(a.std()) or 1.0
        lr = LogisticRegression(C=1.0).fit(((a - self.prior_mu_) / self.prior_sd_)[:, None], y,
                                           sample_weight=sample_weight)
        self.prior_a_, self.prior_b_ = float(lr.intercept_[0]), float(lr.coef_[0, 0])
        self.clf_ = XGBClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                  learning_rate=self.learning_rate, subsample=0.8, colsample_bytree=0.8,
                                  min_child_weight=self.min_child_weight, reg_lambda=self.reg_lambda,
                                  random_state=self.seed, n_jobs=1, tree_method="hist", eval_metric="logloss")
        self.clf_.fit(X[NAMES].astype(float), y, sample_weight=sample_weight, base_margin=self._prior(X))
        return self

    def _margin(self, X: pd.DataFrame, contribs: bool = False) -> np.ndarray:
        from xgboost import DMatrix

        d = DMatrix(X[NAMES].astype(float), base_margin=self._prior(X))
        return self.clf_.get_booster().predict(d, pred_contribs=contribs, output_margin=not contribs)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self._margin(X)))

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """The trees' SHAP values per feature, plus the prior's part above the mean taxpayer's, shared among
        the features in proportion to their one-sided z-scores (what made the row anomalous)."""
        trees = pd.DataFrame(self._margin(X, contribs=True)[:, :-1], columns=NAMES)
        z = self.anomaly.contributions(X)
        lift = self.prior_b_ * (self.anomaly.score(X) - self.prior_mu_) / self.prior_sd_
        share = z.div(z.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
        trees[ONE_SIDED] += share.mul(lift, axis=0).to_numpy()
        return trees

    def feature_importance(self) -> pd.Series:
        return pd.Series(self.clf_.feature_importances_, index=NAMES).sort_values(ascending=False)


class TaxModelPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow flavour of either model: ``predict`` gives its score (``registry`` unwraps ``model``)."""

    def __init__(self, model: TaxAnomalyModel | TaxAuditModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return self.model.score(model_input)
