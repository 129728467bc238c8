"""Offline evaluation of the production modelling path on an external labelled extract (``sunat-pipeline evaluate``).

The path is the daily pipeline's, from the canonical schema on:

1. the foreign files are mapped to the canonical customs schema (``sunat_pipeline.ingest.mapping``);
2. their labels become what labels are in production: inspection outcomes (enforcement records) reported
   ``REPORT_DELAY_DAYS`` after the declaration;
3. features come from ``features.build_features``, point in time, with a ``FeatureSpec`` of the production
   defaults plus what the mapping asks for (more profile keys and crosses, their smoothing, peer groups).
   A training row sees the outcomes reported by its day (never its own, never a later row's); a test row sees
   the declarations lodged before it (training rows and earlier test rows) and the training outcomes, never a
   test label. Features whose inputs the extract lacks (reference prices, tax returns, a customs column the
   mapping does not fill) are left out and listed (``absent``), as are those the mapping excludes;
4. hyperparameters: ``tuning.search`` on a time split of the training rows, starting from
   ``settings.training``; without revenue in the labels the primary metric is Precision@10%;
5. ``RiskModel`` with the best parameters and the configured bag, fitted on all training rows, scores the test
   file once.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.catalog import DEFAULT_SPEC, FeatureSpec, absent_features, catalog
from sunat_pipeline.features.history import ProfileSpec
from sunat_pipeline.ingest.mapping import ANY, LABEL, Mapping, file_sha256, load_mapping, read_extract
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.modeling import tuning
from sunat_pipeline.modeling.metrics import targeting_report
from sunat_pipeline.modeling.model import RiskModel, resolve_device
from sunat_pipeline.settings import Settings, get_settings

log = logging.getLogger(__name__)
REPORT_DELAY_DAYS = 1  # an outcome is reported the day after its declaration: no row sees its own or same-day labels
SEARCH_BUDGET_S = 420.0  # default search budget of the command: the whole run stays within about 10 minutes


def feature_spec(mapping: Mapping) -> FeatureSpec:
    """The daily pipeline's features plus the mapping's profile keys (every extra and ``profile_keys``), its
    crosses (``pairs``; ``[key, "*"]`` crosses the key with every other one), smoothing and peer groups."""
    base = DEFAULT_SPEC.profiles
    col = mapping.column
    keys = list(base.keys)
    for k in [*mapping.profile_keys, *mapping.extra]:
        if col(k) not in keys:
            keys.append(col(k))
    crosses = list(base.crosses)
    seen = {frozenset((a, b)) for _, a, b, _ in crosses}
    for a, b in mapping.pairs:
        for other in ([col(b)] if b != ANY else list(keys)):
            pair = (col(a), other)
            if other == col(a) or frozenset(pair) in seen:
                continue
            for k in pair:  # a cross needs both as keys
                if k not in keys:
                    keys.append(k)
            seen.add(frozenset(pair))
            crosses.append((f"{pair[0].removeprefix('x_')}_x_{pair[1].removeprefix('x_')}", *pair, pair[0]))
    profiles = ProfileSpec(keys=tuple(keys), crosses=tuple(crosses),
                           smoothing=base.smoothing if mapping.profile_smoothing is None else mapping.profile_smoothing)
    return FeatureSpec(profiles=profiles, peer_groups=tuple(tuple(col(k) for k in g) for g in mapping.peer_groups))


def available_inputs(mapping: Mapping) -> set[str]:
    """What an extract provides: customs declarations with the columns the mapping fills (item numbers are always
    derived), and, from its labels, enforcement outcomes."""
    cols = {*mapping.columns, "item_no", *mapping.extra_columns}
    return {"customs", "enforcement", *(f"customs.{c}" for c in cols)}


def outcomes_from_labels(df: pd.DataFrame, delay_days: int = REPORT_DELAY_DAYS) -> pd.DataFrame:
    """Enforcement records of labelled items: FRAUD / CLEAN, reported ``delay_days`` after the declaration; no
    revenue (unknown)."""
    item = df.item_no.astype("int64")
    return pd.DataFrame({
        "record_id": df.declaration_id.astype("str") + "/" + item.astype("str"),
        "declaration_id": df.declaration_id.astype("str"), "item_no": item,
        "inspection_date": pd.to_datetime(df.declaration_date),
        "result": np.where(df[LABEL].to_numpy() == 1, "FRAUD", "CLEAN"),
        "revenue_recovered_usd": np.nan,
        "reported_date": pd.to_datetime(df.declaration_date) + pd.Timedelta(days=delay_days),
    })


def _empty(source: str) -> pd.DataFrame:
    return pd.DataFrame(columns=list(SOURCES[source].columns))


def extract_features(train: pd.DataFrame, test: pd.DataFrame, spec: FeatureSpec, settings: Settings,
                     delay_days: int = REPORT_DELAY_DAYS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Feature matrices of the training and test rows (canonical frames with labels), as production builds them."""
    outcomes = outcomes_from_labels(train, delay_days)
    absent = {"reference": _empty("reference_prices"), "tax": _empty("tax"), "fx": _empty("exchange_rates")}
    X = build_features(train, customs_history=train, outcomes=outcomes, **absent, taxes=settings.tax, spec=spec)
    history = pd.concat([train, test], ignore_index=True)
    Xt = build_features(test, customs_history=history, outcomes=outcomes, **absent, taxes=settings.tax, spec=spec)
    return X, Xt


def _read(paths: list[Path], mapping: Mapping) -> tuple[pd.DataFrame, list[dict]]:
    frames, info = [], []
    for p in paths:
        df = read_extract(p, mapping, require_label=True)
        frames.append(df)
        info.append({"path": str(p), "sha256": file_sha256(p), "rows": len(df),
                     "dates": [str(df.declaration_date.min()), str(df.declaration_date.max())],
                     "fraud_rate": round(float(df[LABEL].mean()), 6)})
    return pd.concat(frames, ignore_index=True), info


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan")


def evaluate(mapping_path: str | Path, train_paths: list[str | Path], test_path: str | Path, *,
             settings: Settings | None = None, budget_s: float | None = None, max_trials: int | None = None,
             do_search: bool = True, bag_size: int | None = None, seed: int | None = None, n_jobs: int = 2,
             device: str | None = None) -> dict:
    """Train on the training files through the production path and score the test file once (see the module)."""
    t0 = time.time()
    settings = settings or get_settings()
    t = settings.training
    seed = settings.seed if seed is None else seed
    bag_size = t.bag_size if bag_size is None else bag_size
    max_trials = t.search_max_trials if max_trials is None else max_trials
    budget_s = SEARCH_BUDGET_S if budget_s is None else budget_s
    device = resolve_device(t.device if device is None else device)
    mapping = load_mapping(mapping_path)
    train, train_info = _read([Path(p) for p in train_paths], mapping)
    test, test_info = _read([Path(test_path)], mapping)
    train = train.sort_values("declaration_date", kind="stable").reset_index(drop=True)
    shared_ids = len(set(train.declaration_id) & set(test.declaration_id))
    if shared_ids:
        log.warning("%d declaration ids appear in both the training and the test files", shared_ids)
    if train[LABEL].nunique() < 2:
        raise ValueError("the training files need both fraud and non-fraud rows")

    spec = feature_spec(mapping)
    tf = time.time()
    X, Xt = extract_features(train, test, spec, settings)
    features = catalog(spec)
    absent = absent_features(features, available_inputs(mapping))
    unknown = sorted(set(mapping.exclude_features) - {f.name for f in features})
    if unknown:
        raise ValueError(f"{mapping.name}: exclude_features names no feature: {unknown}")
    drop = [f.name for f in features if f.name in absent or f.name in mapping.exclude_features]
    X, Xt = X.drop(columns=drop), Xt.drop(columns=drop)
    feature_s = time.time() - tf
    log.info("evaluate: %d features (%d absent: the extract lacks their inputs; %d excluded by the mapping) in %.0f s",
             X.shape[1], len(absent), len(mapping.exclude_features), feature_s)
    y = train[LABEL].to_numpy()
    base = t.model_params()
    if do_search:
        res = tuning.search(X, y, None, train.declaration_date, base, budget_s=budget_s, max_trials=max_trials,
                            seed=seed, device=device, n_jobs=n_jobs)
        params = res.best
        best = max(res.trials, key=lambda r: r[res.metric]) if res.trials else {}
        search_info = {"seconds": round(res.seconds, 1), "budget_s": budget_s, "max_trials": max_trials,
                       "trials": len(res.trials), "metric": res.metric, "best_trial": best.get("trial"),
                       "best_value": best.get(res.metric), "n_fit": res.n_fit, "n_valid": res.n_valid,
                       "valid_from": res.valid_from, "history": res.trials}
    else:
        params, search_info = base, {"seconds": 0.0, "trials": 0, "skipped": True}

    tf = time.time()
    model = RiskModel(**{**params, "bag_size": bag_size, "seed": seed, "device": device, "n_jobs": n_jobs})
    model.fit(X, y)
    fit_s = time.time() - tf
    score = model.predict(Xt).fraud_probability.to_numpy()  # the test file, once
    y_test = test[LABEL].to_numpy()
    from sklearn.metrics import average_precision_score

    rep = targeting_report(score, y_test)
    rate = float(y_test.mean())
    out = {
        "mapping": mapping.name,
        "n_train": int(len(train)), "n_test": int(len(test)),
        "train_fraud_rate": round(float(y.mean()), 6), "test_fraud_rate": round(rate, 6),
        **{f"{m}_at_{k}": rep[f"{m}_at_{k}"] for m in ("precision", "recall") for k in ("1", "2", "5", "10")},
        "lift_at_5": round(rep["precision_at_5"] / rate, 4) if rate else None,
        "lift_at_10": round(rep["precision_at_10"] / rate, 4) if rate else None,
        "roc_auc": round(_auc(y_test, score), 6),
        "pr_auc": round(float(average_precision_score(y_test, score)), 6) if 0 < y_test.sum() < len(y_test) else None,
        "model": {"class": "sunat_pipeline.modeling.model.RiskModel", "params": model.get_params(),
                  "n_features": X.shape[1], "fit_seconds": round(fit_s, 1),
                  "top_features": {k: round(float(v), 5) for k, v in model.feature_importance().head(15).items()}},
        "search": search_info,
        "features": {"names": list(X.columns), "seconds": round(feature_s, 1), "absent": absent,
                     "excluded": list(mapping.exclude_features),
                     "report_delay_days": REPORT_DELAY_DAYS,
                     "profiles": {"keys": list(spec.profiles.keys), "crosses": [c[0] for c in spec.profiles.crosses],
                                  "smoothing": spec.profiles.smoothing},
                     "peer_groups": [list(g) for g in spec.peer_groups]},
        "inputs": {"train": train_info, "test": test_info, "declaration_ids_in_both": shared_ids},
        "seconds": round(time.time() - t0, 1),
    }
    for k, v in list(out.items()):
        if isinstance(v, float) and math.isnan(v):
            out[k] = None
    return out
