"""The risk model: fraud probability, revenue at stake given fraud, and an uncertainty per item.

Shaped like a scikit-learn estimator (parameters in the constructor, ``fit`` / ``predict``). The fraud
classifier is a small bag of XGBoost models trained on bootstrap-like subsamples with different seeds:
their mean is the probability and their spread is the uncertainty used for exploration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class RiskModel:
    def __init__(self, n_estimators: int = 200, max_depth: int = 6, learning_rate: float = 0.08,
                 bag_size: int = 4, subsample: float = 0.8, seed: int = 42, device: str = "cpu",
                 n_jobs: int = 2):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.bag_size = bag_size
        self.subsample = subsample
        self.seed = seed
        self.device = device
        self.n_jobs = n_jobs

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("n_estimators", "max_depth", "learning_rate", "bag_size",
                                               "subsample", "seed", "device", "n_jobs")}

    def _xgb_common(self, seed: int) -> dict:
        return dict(n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
                    subsample=self.subsample, colsample_bytree=0.8, tree_method="hist", device=self.device,
                    random_state=seed, n_jobs=self.n_jobs)

    def fit(self, X: pd.DataFrame, y, revenue=None) -> RiskModel:
        from xgboost import XGBClassifier, XGBRegressor

        y = np.asarray(y, dtype=float)
        self.feature_names_ = list(X.columns)
        pos = max(1.0, y.sum())
        # Imbalance: weight positives up to the negatives, capped so rare frauds do not dominate.
        spw = float(min(10.0, (len(y) - pos) / pos))
        self.classifiers_ = []
        for b in range(self.bag_size):
            clf = XGBClassifier(objective="binary:logistic", scale_pos_weight=spw, eval_metric="aucpr",
                                **self._xgb_common(self.seed + b))
            clf.fit(X, y)
            self.classifiers_.append(clf)
        self.base_rate_ = float(y.mean())
        self.scale_pos_weight_ = spw
        self.regressor_ = None
        if revenue is not None and (y > 0).sum() >= 10:
            rev = np.log1p(np.asarray(revenue, dtype=float)[y > 0])
            self.regressor_ = XGBRegressor(objective="reg:squarederror", **self._xgb_common(self.seed + 100))
            self.regressor_.fit(X[y > 0], rev)
        self.revenue_fallback_ = float(np.median(np.asarray(revenue, dtype=float)[y > 0])) \
            if revenue is not None and (y > 0).any() else 0.0
        return self

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        # Undo the prior shift of scale_pos_weight so probabilities are on the labelled-set scale.
        w = self.scale_pos_weight_
        return p / (p + w * (1 - p))

    def predict_proba_bag(self, X: pd.DataFrame) -> np.ndarray:
        X = X[self.feature_names_]
        return np.column_stack([self._calibrate(c.predict_proba(X)[:, 1]) for c in self.classifiers_])

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        bag = self.predict_proba_bag(X)
        p = bag.mean(axis=1)
        if self.regressor_ is not None:
            rev = np.expm1(self.regressor_.predict(X[self.feature_names_]).clip(0, 20))
        else:
            rev = np.full(len(X), self.revenue_fallback_)
        return pd.DataFrame({
            "fraud_probability": p.round(6),
            "revenue_if_fraud_usd": rev.round(2),
            "expected_revenue_usd": (p * rev).round(2),
            "uncertainty": bag.std(axis=1).round(6),
        }, index=X.index)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions (log-odds) of the first bag member; approximate, for reasons only."""
        import xgboost as xgb

        booster = self.classifiers_[0].get_booster()
        c = booster.predict(xgb.DMatrix(X[self.feature_names_]), pred_contribs=True, approx_contribs=True)
        return pd.DataFrame(c[:, :-1], columns=self.feature_names_, index=X.index)

    def feature_importance(self) -> pd.Series:
        imp = np.mean([c.feature_importances_ for c in self.classifiers_], axis=0)
        return pd.Series(imp, index=self.feature_names_).sort_values(ascending=False)
