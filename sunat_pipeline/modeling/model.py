"""The risk model: fraud probability, revenue at stake given fraud, and an uncertainty per item.

Shaped like a scikit-learn estimator (parameters in the constructor, ``fit`` / ``predict``; their defaults are
``settings.TrainingSettings``'s, the one set of defaults). The fraud
classifier is a small bag of XGBoost models, each trained on a bootstrap resample of the labelled rows (with
its own seed): their mean is the probability and their spread, the fit's sampling uncertainty, is what
exploration reads. Each member sees
all rows (row-subsampled per tree) up to ``max_member_rows``; on larger training sets each member trains on
its own random ``max_member_rows`` rows, so retraining time stops growing with the data (a daily-scale
training set, thousands of rows, is unaffected).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import warnings

import numpy as np
import pandas as pd

from sunat_pipeline.settings import Settings, TrainingSettings

log = logging.getLogger(__name__)
# XGBoost's OpenMP threads spin while they wait; on a machine whose cores are shared (the 2-core development
# machine runs Airflow, MLflow and tests beside training) that made fits 5-7 times slower (measured: the demo's
# training fit 59 s instead of 9 s, a KCS fit 80 s instead of 11 s). Sleeping waits cost little on an idle
# machine. Effective when this module is imported before XGBoost is loaded; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@functools.lru_cache(maxsize=8)
def resolve_device(device: str) -> str:
    """``device`` if XGBoost can use it here, else ``"cpu"`` (with a log line): CUDA is never required."""
    if not str(device).lower().startswith("cuda"):
        return device
    try:
        import xgboost as xgb

        if not xgb.build_info().get("USE_CUDA", False):
            raise RuntimeError("this XGBoost build has no CUDA support")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            X = np.arange(20, dtype=float).reshape(10, 2)
            xgb.train({"device": device, "tree_method": "hist", "verbosity": 1},
                      xgb.DMatrix(X, label=np.arange(10) % 2), num_boost_round=1)
        msgs = " ".join(str(w.message) for w in caught)
        if "GPU" in msgs or "CPU" in msgs:
            raise RuntimeError(msgs.strip()[:200])
    except Exception as e:  # no GPU, no CUDA build, driver trouble: train on the CPU instead
        log.warning("device %r is not usable (%s): training on cpu instead", device, e)
        return "cpu"
    return device


_D = TrainingSettings()  # the one set of default hyperparameters (settings.MODEL_PARAMS)
_SEED = Settings.model_fields["seed"].default


class RiskModel:
    def __init__(self, n_estimators: int = _D.n_estimators, max_depth: int = _D.max_depth,
                 learning_rate: float = _D.learning_rate, bag_size: int = _D.bag_size,
                 subsample: float = _D.subsample, seed: int = _SEED, device: str = _D.device, n_jobs: int = 2,
                 min_child_weight: float = _D.min_child_weight, colsample_bytree: float = _D.colsample_bytree,
                 reg_lambda: float = _D.reg_lambda, reg_alpha: float = _D.reg_alpha, gamma: float = _D.gamma,
                 max_pos_weight: float = _D.max_pos_weight, max_member_rows: int | None = _D.max_member_rows,
                 bootstrap: bool = _D.bootstrap, max_bin: int = _D.max_bin):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.bag_size = bag_size
        self.subsample = subsample
        self.seed = seed
        self.device = device
        self.n_jobs = n_jobs
        self.min_child_weight = min_child_weight
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.max_pos_weight = max_pos_weight
        self.max_member_rows = max_member_rows
        self.bootstrap = bootstrap
        self.max_bin = max_bin

    @classmethod
    def _param_defaults(cls) -> dict:
        return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}

    def get_params(self, deep: bool = True) -> dict:
        # getattr with the default: a model pickled before a parameter existed still answers.
        return {k: getattr(self, k, d) for k, d in self._param_defaults().items()}

    def set_params(self, **params) -> RiskModel:
        unknown = set(params) - set(self._param_defaults())
        if unknown:
            raise ValueError(f"unknown RiskModel parameters: {sorted(unknown)}")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _xgb_common(self, seed: int) -> dict:
        p = self.get_params()
        return dict(n_estimators=p["n_estimators"], max_depth=p["max_depth"], learning_rate=p["learning_rate"],
                    subsample=p["subsample"], colsample_bytree=p["colsample_bytree"],
                    min_child_weight=p["min_child_weight"], reg_lambda=p["reg_lambda"], reg_alpha=p["reg_alpha"],
                    gamma=p["gamma"], tree_method="hist", max_bin=p["max_bin"], device=resolve_device(p["device"]),
                    random_state=seed, n_jobs=p["n_jobs"])

    def fit(self, X: pd.DataFrame, y, revenue=None, mechanism=None, channel=None, blind: tuple = (),
            blind_label_weights: bool = False) -> RiskModel:
        """``mechanism``: the offence code of each fraud (from its finding); with ``blind`` (the offences a
        documentary check cannot see) a small classifier learns P(blind offence | fraud, x), which channel
        selection reads (``documentary_blind_share``). ``channel`` and ``blind_label_weights``: a CLEAN
        documentary (YELLOW) result counts as a negative only as far as the offence it could hide was visible
        to that check: weight 1 - P(blind offence | fraud, x)."""
        from xgboost import XGBClassifier, XGBRegressor

        y = np.asarray(y, dtype=float)
        self.feature_names_ = list(X.columns)
        self.mechanism_ = self._fit_mechanism(X, y, mechanism, blind)
        label_w = np.ones(len(y))
        if blind_label_weights and channel is not None and self.mechanism_ is not None:
            clean_doc = (np.asarray(channel, dtype=object) == "YELLOW") & (y == 0)
            if clean_doc.any():
                label_w[clean_doc] = 1 - self._blind_share(X.iloc[np.flatnonzero(clean_doc)])
        self.label_weight_mean_ = float(label_w.mean())
        pos = max(1.0, y.sum())
        # Imbalance: weight positives up to the negatives, capped so rare frauds do not dominate.
        spw = float(min(self.get_params()["max_pos_weight"], (len(y) - pos) / pos))
        self.classifiers_ = []
        for b in range(self.bag_size):
            clf = XGBClassifier(objective="binary:logistic", scale_pos_weight=spw, eval_metric="aucpr",
                                **self._xgb_common(self.seed + b))
            rows = self._member_rows(len(y), self.seed + b)
            rows, weight = self._resample(np.arange(len(y)) if rows is None else rows, self.seed + b)
            weight = label_w[rows] * (1.0 if weight is None else weight)
            clf.fit(X.iloc[rows], y[rows], sample_weight=weight)
            self.classifiers_.append(clf)
        self.base_rate_ = float(y.mean())
        self.scale_pos_weight_ = spw
        self.regressor_ = None
        if revenue is not None and (y > 0).sum() >= 10:
            rev = np.log1p(np.asarray(revenue, dtype=float)[y > 0])
            self.regressor_ = XGBRegressor(objective="reg:squarederror", **self._xgb_common(self.seed + 100))
            Xp = X[y > 0]
            rows = self._member_rows(len(rev), self.seed + 100)
            if rows is None:
                self.regressor_.fit(Xp, rev)
            else:
                self.regressor_.fit(Xp.iloc[rows], rev[rows])
        self.revenue_fallback_ = float(np.median(np.asarray(revenue, dtype=float)[y > 0])) \
            if revenue is not None and (y > 0).any() else 0.0
        return self

    def _fit_mechanism(self, X: pd.DataFrame, y: np.ndarray, mechanism, blind: tuple):
        """P(blind offence | fraud, x) on the frauds whose finding names the offence; None without enough."""
        from xgboost import XGBClassifier

        if mechanism is None or not blind:
            return None
        code = pd.Series(np.asarray(mechanism, dtype=object)).fillna("").astype(str).to_numpy()
        known = (y > 0) & (code != "")
        t = np.isin(code[known], list(blind)).astype(int)
        if min(t.sum(), len(t) - t.sum()) < 10:  # too few of either kind to learn from
            return None
        clf = XGBClassifier(objective="binary:logistic", eval_metric="logloss",
                            **{**self._xgb_common(self.seed + 200), "n_estimators": 100, "max_depth": 3})
        clf.fit(X.iloc[np.flatnonzero(known)], t)
        return clf

    def _blind_share(self, X: pd.DataFrame) -> np.ndarray:
        mech = getattr(self, "mechanism_", None)
        if mech is None:
            return np.full(len(X), np.nan)
        return mech.predict_proba(X[self.feature_names_])[:, 1]

    def _resample(self, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A member's bootstrap resample of ``rows`` as (distinct rows, how often each was drawn): XGBoost's
        sample weights, the same fit as duplicated rows without copying them. Without ``bootstrap``: all rows."""
        if not self.get_params()["bootstrap"]:
            return rows, None
        draws = np.random.default_rng([seed, 7]).integers(0, len(rows), len(rows))
        count = np.bincount(draws, minlength=len(rows))
        keep = np.flatnonzero(count)
        return rows[keep], count[keep].astype(float)

    def _member_rows(self, n: int, seed: int) -> np.ndarray | None:
        """The rows one bag member trains on: None (all) up to ``max_member_rows``, else a random subset."""
        cap = self.get_params()["max_member_rows"]
        if cap is None or n <= cap:
            return None
        return np.sort(np.random.default_rng(seed).choice(n, int(cap), replace=False))

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
            "documentary_blind_share": self._blind_share(X).round(6),
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
