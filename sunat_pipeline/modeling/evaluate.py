"""Offline evaluation of the product's model on an external labelled extract (``sunat-pipeline evaluate``).

The foreign files are mapped to the canonical customs schema (``sunat_pipeline.ingest.mapping``); features are built
from the training files only; the product's ``RiskModel`` (XGBoost) is tuned by a seeded, time-budgeted random
search on time-based splits of the training files, refitted on all of them, and scores the test file once.

Features (``FeatureBuilder``), all learnt on the training rows only:

- numeric: duty rate, log value, log net kg, log value per kg (and per unit where quantities exist);
- for each categorical key (office, importer, declarant, supplier, transport mode, origin, HS6/HS4/HS2, duty
  rate, the mapping's extra attributes) and pairs of keys (HS6 with every other key, importer x declarant,
  supplier x importer, declarant x office, and the mapping's ``pairs``): its frequency in the training rows and
  its smoothed fraud rate (target encoding). Training rows get out-of-fold rates (K folds), so a row's own
  label never reaches its own features; test rows get rates from all training rows;
- the deviation of log value per kg, log value, log kg and duty rate from the training median of the same
  HS6 x origin, HS4 and importer (undervaluation and misclassification signatures).

The test file is read once, at the end; nothing about it (labels, dates, frequencies) reaches training.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.ingest.mapping import LABEL, Mapping, file_sha256, load_mapping, read_extract
from sunat_pipeline.modeling.metrics import targeting_report
from sunat_pipeline.modeling.model import RiskModel

log = logging.getLogger(__name__)
NULL = "\u2205"  # the key of a missing value: "missing" is a category of its own
BASE_KEYS = ("customs_office", "importer_id", "declarant_id", "supplier_id", "supplier_country", "transport_mode",
             "origin_country", "hs6", "hs4", "hs2", "duty_rate")
ENTITY_PAIRS = (("importer_id", "declarant_id"), ("supplier_id", "importer_id"), ("declarant_id", "customs_office"))
REL_GROUPS = (("hs6", "origin_country"), ("hs4",), ("importer_id",))
REL_VALUES = ("log_value_kg", "log_value", "log_kg", "duty_rate")

# The first trial of every search, and the model when the search is skipped.
DEFAULT_PARAMS = dict(n_estimators=600, max_depth=8, learning_rate=0.03, min_child_weight=3.0, subsample=0.8,
                      colsample_bytree=0.6, reg_lambda=1.0, reg_alpha=0.0, gamma=0.0, max_pos_weight=10.0)


def _keys(df: pd.DataFrame, extras: list[str]) -> pd.DataFrame:
    """Categorical keys as text, missing values as their own category."""
    hs = df.hs_code.astype(str)
    k = pd.DataFrame(index=df.index)
    for c in BASE_KEYS:
        if c in ("hs6", "hs4", "hs2"):
            s = hs.str[: int(c[2])]
        elif c == "duty_rate":
            s = df.duty_rate.round(6).astype(str).where(df.duty_rate.notna())
        else:
            s = df[c]
        k[c] = s.astype(object).where(s.notna(), NULL).astype(str)
    for c in extras:
        k[c] = df[c].astype(object).where(df[c].notna(), NULL).astype(str)
    return k


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    value = df.fob_usd.astype(float).where(df.fob_usd.notna(), df.cif_usd.astype(float))
    kg = df.net_weight_kg.astype(float)
    qty = df.quantity.astype(float)
    n = pd.DataFrame(index=df.index)
    n["duty_rate"] = df.duty_rate.astype(float)
    n["log_value"] = np.log1p(value.clip(lower=0))
    n["log_kg"] = np.log1p(kg.clip(lower=0))
    n["log_value_kg"] = np.log(value.clip(lower=1e-6) / kg.clip(lower=1e-3))
    n["log_qty"] = np.log1p(qty.clip(lower=0))
    n["log_value_qty"] = np.log(value.clip(lower=1e-6) / qty.clip(lower=1))
    n["n_items"] = df.groupby("declaration_id").declaration_id.transform("count").astype(float)
    return n


class FeatureBuilder:
    """Train-only encodings of a canonical extract: ``fit_transform(train)`` then ``transform(test)``."""

    def __init__(self, pairs: tuple[tuple[str, str], ...] = (), extras: tuple[str, ...] = (),
                 smoothing: float = 5.0, folds: int = 5, seed: int = 42):
        self.pairs = tuple(pairs)
        self.extras = tuple(extras)
        self.smoothing = smoothing
        self.folds = folds
        self.seed = seed

    @classmethod
    def for_mapping(cls, mapping: Mapping, **kw) -> FeatureBuilder:
        ext = {k: f"x_{k}" for k in mapping.extra}
        pairs = tuple((ext.get(a, a), ext.get(b, b)) for a, b in mapping.pairs)
        return cls(pairs=pairs, extras=tuple(mapping.extra_columns), **kw)

    def _combined(self, keys: pd.DataFrame) -> pd.DataFrame:
        out = {c: keys[c] for c in self.keys_}
        for a, b in self.pairs_:
            out[f"{a}__{b}"] = keys[a] + "|" + keys[b]
        return pd.DataFrame(out, index=keys.index)

    @staticmethod
    def _group_key(keys: pd.DataFrame, g: tuple[str, ...]) -> pd.Series:
        out = keys[g[0]]
        for c in g[1:]:
            out = out + "|" + keys[c]
        return out

    def fit_transform(self, train: pd.DataFrame) -> pd.DataFrame:
        train = train.reset_index(drop=True)
        y = train[LABEL].astype(float).to_numpy()
        keys = _keys(train, list(self.extras))
        num = _numeric(train)
        # Only what varies in the training rows is worth a feature.
        self.keys_ = [c for c in keys.columns if keys[c][keys[c] != NULL].nunique() > 1]
        self.numeric_ = [c for c in num.columns if num[c].notna().any() and num[c].nunique() > 1]
        others = [c for c in self.keys_ if c not in ("hs6", "hs4", "hs2")]
        pairs = [("hs6", c) for c in others] + list(ENTITY_PAIRS) + list(self.pairs)
        seen: set = set()
        self.pairs_ = []
        for a, b in pairs:
            if a in self.keys_ and b in self.keys_ and a != b and frozenset((a, b)) not in seen:
                seen.add(frozenset((a, b)))
                self.pairs_.append((a, b))
        comb = self._combined(keys)
        self.prior_ = float(y.mean())
        # Per key: its categories in the training rows, their fraud counts and row counts.
        self.index_, self.sum_, self.count_ = {}, {}, {}
        codes = {}
        for c in comb.columns:
            cd, cats = pd.factorize(comb[c])
            codes[c] = cd
            self.index_[c] = pd.Index(cats)
            self.sum_[c] = np.bincount(cd, weights=y, minlength=len(cats))
            self.count_[c] = np.bincount(cd, minlength=len(cats)).astype(float)
        self.groups_ = [g for g in REL_GROUPS if all(c in self.keys_ for c in g)]
        self.medians_ = {}
        for g in self.groups_:
            gk = self._group_key(keys, g)
            for v in REL_VALUES:
                if v in self.numeric_:
                    self.medians_[(g, v)] = (num[v].groupby(gk).median(), float(num[v].median()))
        # Out-of-fold target encodings for the training rows: a row's own label never reaches its features.
        oof = {c: np.empty(len(train)) for c in comb.columns}
        rng = np.random.default_rng(self.seed)
        fold = rng.permutation(np.arange(len(train)) % self.folds)
        for f in range(self.folds):
            fit, app = fold != f, fold == f
            prior = float(y[fit].mean())
            for c in comb.columns:
                m = len(self.index_[c])
                s = np.bincount(codes[c][fit], weights=y[fit], minlength=m)
                n = np.bincount(codes[c][fit], minlength=m).astype(float)
                k = codes[c][app]
                oof[c][app] = (s[k] + self.smoothing * prior) / (n[k] + self.smoothing)
        cnt = {c: self.count_[c][codes[c]] for c in comb.columns}
        return self._assemble(keys, num, comb, oof, cnt)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        df = df.reset_index(drop=True)
        keys = _keys(df, list(self.extras))
        comb = self._combined(keys)
        te, cnt = {}, {}
        for c in comb.columns:
            idx = self.index_[c].get_indexer(comb[c])
            known = idx >= 0
            s = np.where(known, self.sum_[c][idx], 0.0)
            n = np.where(known, self.count_[c][idx], 0.0)
            te[c] = (s + self.smoothing * self.prior_) / (n + self.smoothing)
            cnt[c] = n
        return self._assemble(keys, _numeric(df), comb, te, cnt)

    def _assemble(self, keys, num, comb, te, cnt) -> pd.DataFrame:
        cols = {c: num[c].to_numpy(dtype=float) for c in self.numeric_}
        for c in comb.columns:
            cols[f"te_{c}"] = te[c]
            cols[f"n_{c}"] = cnt[c]
        for (g, v), (med, overall) in self.medians_.items():
            gk = self._group_key(keys, g)
            cols[f"rel_{v}__{'__'.join(g)}"] = (num[v] - gk.map(med).fillna(overall)).to_numpy(dtype=float)
        return pd.DataFrame(cols)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric_)
        for c in [*self.keys_, *(f"{a}__{b}" for a, b in self.pairs_)]:
            names += [f"te_{c}", f"n_{c}"]
        return names + [f"rel_{v}__{'__'.join(g)}" for g, v in self.medians_]


# --- hyperparameter search ------------------------------------------------------------------------------------

def sample_params(rng: np.random.Generator) -> dict:
    """One random point of the search space; the number of trees follows the learning rate."""
    lr = float(np.exp(rng.uniform(np.log(0.02), np.log(0.15))))
    return dict(
        n_estimators=int(np.clip(round(24 / lr, -1), 200, 1200)),
        max_depth=int(rng.choice([4, 5, 6, 7, 8, 10, 12])),
        learning_rate=round(lr, 4),
        min_child_weight=round(float(np.exp(rng.uniform(np.log(0.5), np.log(10)))), 3),
        subsample=round(float(rng.uniform(0.6, 1.0)), 3),
        colsample_bytree=round(float(rng.uniform(0.3, 0.9)), 3),
        reg_lambda=round(float(np.exp(rng.uniform(np.log(0.3), np.log(10)))), 3),
        reg_alpha=float(rng.choice([0.0, 0.1, 1.0])),
        gamma=float(rng.choice([0.0, 0.1, 0.5, 1.0])),
        max_pos_weight=float(rng.choice([1.0, 10.0])),
    )


def time_split(dates: pd.Series, valid_share: float) -> np.ndarray:
    """True for the rows of the latest dates, about ``valid_share`` of them (whole days)."""
    d = pd.to_datetime(dates)
    cut = d.quantile(1 - valid_share)
    is_valid = (d >= cut).to_numpy() if d.nunique() > 1 else np.zeros(len(d), bool)
    if is_valid.all() or not is_valid.any():  # one date only: fall back to the order of the rows
        is_valid = np.arange(len(d)) >= int(len(d) * (1 - valid_share))
    return is_valid


def objective(score: np.ndarray, y: np.ndarray) -> float:
    """What the search maximises: mean of Precision@5% and Precision@10%."""
    r = targeting_report(score, y, rates=(0.05, 0.10))
    return (r["precision_at_5"] + r["precision_at_10"]) / 2


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


@dataclass
class SearchResult:
    best_params: dict
    best_objective: float
    best_auc: float
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    n_inner_train: int = 0
    n_inner_valid: int = 0
    inner_valid_from: str = ""


def search(train: pd.DataFrame, builder: FeatureBuilder, budget_s: float, seed: int = 42, valid_share: float = 0.25,
           max_trials: int | None = None, n_jobs: int = 2, device: str = "cpu") -> SearchResult:
    """Seeded random search on a time split of the training rows: fit on the earlier part, judge on the later.

    The first trial is ``DEFAULT_PARAMS``; each trial is judged at 1/4, 1/2, 3/4 and all of its trees, so the
    number of trees is tuned at no extra fitting cost. No new trial starts once the budget would be exceeded.
    """
    t0 = time.time()
    train = train.sort_values("declaration_date", kind="stable").reset_index(drop=True)
    is_valid = time_split(train.declaration_date, valid_share)
    inner, outer = train[~is_valid], train[is_valid]
    b = FeatureBuilder(pairs=builder.pairs, extras=builder.extras, smoothing=builder.smoothing, folds=builder.folds,
                       seed=builder.seed)
    Xt = b.fit_transform(inner)
    Xv = b.transform(outer)
    yt, yv = inner[LABEL].to_numpy(), outer[LABEL].to_numpy()
    rng = np.random.default_rng(seed)
    trials: list[dict] = []
    best = None
    while True:
        elapsed = time.time() - t0
        if trials:
            per_trial = np.mean([t["seconds"] for t in trials])
            if elapsed + per_trial > budget_s or (max_trials is not None and len(trials) >= max_trials):
                break
        params = dict(DEFAULT_PARAMS) if not trials else sample_params(rng)
        ts = time.time()
        m = RiskModel(bag_size=1, seed=seed, n_jobs=n_jobs, device=device, **params).fit(Xt, yt)
        clf = m.classifiers_[0]
        n = params["n_estimators"]
        for k in sorted({max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4), n}):
            p = clf.predict_proba(Xv[m.feature_names_], iteration_range=(0, k))[:, 1]
            rec = {**params, "n_estimators": k, "objective": round(objective(p, yv), 6), "auc": round(_auc(yv, p), 6)}
            if best is None or (rec["objective"], rec["auc"]) > (best["objective"], best["auc"]):
                best = rec
        trials.append({**params, "seconds": round(time.time() - ts, 2), "best_so_far": best["objective"]})
        log.info("search trial %d: %s -> best so far %.4f (%.0f s)", len(trials), params, best["objective"],
                 time.time() - t0)
    best_params = {k: v for k, v in best.items() if k not in ("objective", "auc")}
    return SearchResult(best_params=best_params, best_objective=best["objective"], best_auc=best["auc"],
                        trials=trials, seconds=round(time.time() - t0, 1), n_inner_train=len(inner),
                        n_inner_valid=len(outer), inner_valid_from=str(outer.declaration_date.min()))


# --- the evaluation -------------------------------------------------------------------------------------------

def _read(paths: list[Path], mapping: Mapping) -> tuple[pd.DataFrame, list[dict]]:
    frames, info = [], []
    for p in paths:
        df = read_extract(p, mapping, require_label=True)
        frames.append(df)
        info.append({"path": str(p), "sha256": file_sha256(p), "rows": len(df),
                     "dates": [str(df.declaration_date.min()), str(df.declaration_date.max())],
                     "fraud_rate": round(float(df[LABEL].mean()), 6)})
    return pd.concat(frames, ignore_index=True), info


def evaluate(mapping_path: str | Path, train_paths: list[str | Path], test_path: str | Path, *,
             budget_s: float = 600.0, max_trials: int | None = None, do_search: bool = True, seed: int = 42,
             bag_size: int = 3, n_jobs: int = 2, device: str = "cpu", valid_share: float = 0.25) -> dict:
    t0 = time.time()
    mapping = load_mapping(mapping_path)
    train, train_info = _read([Path(p) for p in train_paths], mapping)
    test, test_info = _read([Path(test_path)], mapping)
    train = train.sort_values("declaration_date", kind="stable").reset_index(drop=True)
    shared_ids = len(set(train.declaration_id) & set(test.declaration_id))
    if shared_ids:
        log.warning("%d declaration ids appear in both the training and the test files", shared_ids)
    if train[LABEL].nunique() < 2:
        raise ValueError("the training files need both fraud and non-fraud rows")
    builder = FeatureBuilder.for_mapping(mapping, seed=seed)

    if do_search:
        res = search(train, builder, budget_s=budget_s, seed=seed, valid_share=valid_share, max_trials=max_trials,
                     n_jobs=n_jobs, device=device)
        params = res.best_params
        search_info = {"seconds": res.seconds, "budget_s": budget_s, "trials": len(res.trials),
                       "objective": "mean of precision_at_5 and precision_at_10 on the inner validation",
                       "best_objective": res.best_objective, "best_auc": res.best_auc,
                       "n_inner_train": res.n_inner_train, "n_inner_valid": res.n_inner_valid,
                       "inner_valid_from": res.inner_valid_from, "seed": seed, "history": res.trials}
    else:
        params, search_info = dict(DEFAULT_PARAMS), {"seconds": 0.0, "trials": 0, "skipped": True}

    tf = time.time()
    X = builder.fit_transform(train)
    model = RiskModel(bag_size=bag_size, seed=seed, n_jobs=n_jobs, device=device, **params)
    model.fit(X, train[LABEL].to_numpy())
    fit_s = time.time() - tf
    # The test file, once.
    Xt = builder.transform(test)
    score = model.predict(Xt).fraud_probability.to_numpy()
    y = test[LABEL].to_numpy()
    from sklearn.metrics import average_precision_score

    rep = targeting_report(score, y)
    rate = float(y.mean())
    out = {
        "mapping": mapping.name,
        "n_train": int(len(train)), "n_test": int(len(test)),
        "train_fraud_rate": round(float(train[LABEL].mean()), 6), "test_fraud_rate": round(rate, 6),
        "precision_at_1": rep["precision_at_1"], "precision_at_2": rep["precision_at_2"],
        "precision_at_5": rep["precision_at_5"], "precision_at_10": rep["precision_at_10"],
        "recall_at_1": rep["recall_at_1"], "recall_at_2": rep["recall_at_2"],
        "recall_at_5": rep["recall_at_5"], "recall_at_10": rep["recall_at_10"],
        "lift_at_5": round(rep["precision_at_5"] / rate, 4) if rate else None,
        "lift_at_10": round(rep["precision_at_10"] / rate, 4) if rate else None,
        "roc_auc": round(_auc(y, score), 6),
        "pr_auc": round(float(average_precision_score(y, score)), 6) if 0 < y.sum() < len(y) else None,
        "model": {"class": "sunat_pipeline.modeling.model.RiskModel", "params": model.get_params(),
                  "n_features": X.shape[1], "fit_seconds": round(fit_s, 1),
                  "top_features": {k: round(float(v), 5) for k, v in model.feature_importance().head(15).items()}},
        "search": search_info,
        "features": builder.feature_names,
        "inputs": {"train": train_info, "test": test_info, "declaration_ids_in_both": shared_ids},
        "seconds": round(time.time() - t0, 1),
    }
    for k, v in list(out.items()):
        if isinstance(v, float) and math.isnan(v):
            out[k] = None
    return out
