"""The value anomaly score: an Isolation Forest per calendar month, fit on the items lodged before the month
began, scoring how unusual an item's values are; computed with the valuation z-scores it takes as inputs."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import to_days
from sunat_pipeline.features.declared import numeric, values
from sunat_pipeline.features.valuation import past_items, valuation

# Fit per calendar month on the items lodged before the month started.
ANOMALY_FIT_ROWS = 20_000  # the most recent items before the month
ANOMALY_MIN_ROWS = 500  # fewer: no score (NaN)
ANOMALY_TREES = 100
ANOMALY_SEED = 0
ANOMALY_INPUTS = ("unit_value_robust_z", "unit_value_qty_robust_z", "log_cif", "cif_fob_ratio", "freight_share",
                  "insurance_share", "log_kg_per_unit", "duty_rate")


def _anomaly_matrix(v: dict[str, np.ndarray], z: dict[str, np.ndarray]) -> np.ndarray:
    cols = []
    for name in ANOMALY_INPUTS:
        if name in z:
            a = z[name]
        elif name == "log_kg_per_unit":
            a = np.log(v["kg_per_unit"])
        else:
            a = v[name]
        cols.append(np.clip(np.nan_to_num(np.asarray(a, dtype=float), nan=0.0, posinf=50.0, neginf=-50.0), -50, 50))
    return np.column_stack(cols) if cols else np.zeros((0, 0))


_MODELS: OrderedDict[str, object] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _iforest(x: np.ndarray):
    """Isolation Forest fit on ``x`` (cached by content: the same past data gives the same model)."""
    key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(n_estimators=ANOMALY_TREES, max_samples=256, random_state=ANOMALY_SEED,
                                n_jobs=1).fit(x)
    with _MODELS_LOCK:
        _MODELS[key] = model
        _MODELS.move_to_end(key)
        while len(_MODELS) > 24:
            _MODELS.popitem(last=False)
    return model


def valuation_and_anomaly(items: pd.DataFrame, customs_history: pd.DataFrame, base: pd.DataFrame,
                          h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Unit-value z-scores against past items (``valuation``), and the monthly Isolation Forest score (both
    from one ordering of the past items; the forest's inputs include the z-scores of its sample)."""
    n = len(items)
    q_day = to_days(items.declaration_date)
    out = pd.DataFrame(index=range(n))
    if not n:
        for name in ("unit_value_robust_z", "unit_value_qty_robust_z", "unit_value_past_log_ratio",
                     "unit_value_ref_level", "unit_value_ref_n", "value_anomaly_score"):
            out[name] = np.zeros(0)
        return out
    if h_day is None:
        h_day = to_days(customs_history.declaration_date)
    past = past_items(customs_history, int(q_day.max()), h_day)
    # Anomaly windows: calendar months of the items; each fit on the last items lodged before the month.
    month0 = q_day.astype("datetime64[D]").astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    windows = np.unique(month0)
    samples = {}
    for w in windows:
        p = int(np.searchsorted(past.day, w, side="left"))
        if p >= ANOMALY_MIN_ROWS:
            samples[int(w)] = np.arange(max(0, p - ANOMALY_FIT_ROWS), p)
    spos = np.concatenate(list(samples.values())) if samples else np.zeros(0, dtype=np.int64)
    srows = past.rows[spos]
    hs_all = pd.concat([items.hs_code.reset_index(drop=True),
                        customs_history.hs_code.iloc[srows].reset_index(drop=True)], ignore_index=True)
    or_all = pd.concat([items.origin_country.reset_index(drop=True),
                        customs_history.origin_country.iloc[srows].reset_index(drop=True)], ignore_index=True)
    qd_all = np.concatenate([q_day, past.day[spos]])
    v1 = np.concatenate([base.log_unit_value_kg.to_numpy(float), past.v1[spos]])
    v2 = np.concatenate([base.log_unit_value_qty.to_numpy(float), past.v2[spos]])
    val = valuation(customs_history.hs_code, customs_history.origin_country, past, hs_all.astype("str"),
                     or_all.astype("str"), qd_all, v1, v2)
    for k, a in val.items():
        out[k] = a[:n]
    score = np.full(n, np.nan)
    item_v = {k: base[k].to_numpy(float) for k in base.columns}
    item_z = {k: val[k][:n] for k in ("unit_value_robust_z", "unit_value_qty_robust_z")}
    off = n
    for w, pos in samples.items():
        sl = slice(off, off + len(pos))
        off += len(pos)
        sv = values(numeric(customs_history, past.rows[pos]))
        sz = {k: val[k][sl] for k in ("unit_value_robust_z", "unit_value_qty_robust_z")}
        model = _iforest(_anomaly_matrix(sv, sz))
        mine = np.flatnonzero(month0 == w)
        xi = _anomaly_matrix({k: a[mine] for k, a in item_v.items()}, {k: a[mine] for k, a in item_z.items()})
        score[mine] = -model.score_samples(xi)
    out["value_anomaly_score"] = score
    return out
