"""Importer activity from the customs declarations lodged strictly before the item's day."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import DAY_BITS, counting_argsort, index_in, to_days

RECENT_DAYS = 30


def _grouped_day_counts(code: np.ndarray, ngroups: int, day: np.ndarray, d0: int):
    """Sorted unique keys (code << DAY_BITS | day - d0), their counts and cumulative counts per code."""
    order = counting_argsort(day - d0, int(day.max() - d0) + 1) if len(day) else np.zeros(0, np.int64)
    order = order[counting_argsort(code[order], ngroups)]
    keys = (code[order] << DAY_BITS) | (day[order] - d0)
    if not len(keys):
        return keys, keys, keys
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    uk = keys[start]
    cnt = np.diff(np.r_[start, len(keys)])
    grp = uk >> DAY_BITS
    first = np.r_[True, grp[1:] != grp[:-1]]
    gfirst = np.maximum.accumulate(np.where(first, np.arange(len(uk)), 0))
    cs = np.cumsum(cnt)
    cum = cs - np.where(gfirst > 0, cs[gfirst - 1], 0)
    return uk, cnt, cum


def importer_codes(items: pd.DataFrame, customs_history: pd.DataFrame):
    """(importers of the items, their codes, the history's codes against them: -1 for other importers)."""
    uq = pd.Index(pd.unique(items.importer_id.dropna().astype("str")), dtype="str")
    return uq, index_in(items.importer_id, uq), index_in(customs_history.importer_id, uq)


def history_features(items: pd.DataFrame, customs_history: pd.DataFrame, codes=None,
                     h_day: np.ndarray | None = None) -> pd.DataFrame:
    """Importer activity from declarations lodged strictly before the item's day."""
    n = len(items)
    q_day = to_days(items.declaration_date)
    out = pd.DataFrame(index=range(n))
    uq, qc, hc = codes if codes is not None else importer_codes(items, customs_history)
    past = np.zeros(n)
    c30 = np.zeros(n)
    first = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    if n and len(customs_history):
        hd = to_days(customs_history.declaration_date) if h_day is None else h_day
        keep = (hc >= 0) & (hd < q_day.max())
        hc, hd = hc[keep], hd[keep]
        if len(hd):
            d0 = int(min(hd.min(), q_day.min())) - RECENT_DAYS - 1
            uk, _, cum = _grouped_day_counts(hc, len(uq), hd, d0)
            grp = uk >> DAY_BITS
            base = qc << DAY_BITS
            pos = np.searchsorted(uk, base | (q_day - d0), side="left") - 1
            found = (qc >= 0) & (pos >= 0) & (grp[pos.clip(0)] == qc)
            pc = pos.clip(0)
            past = np.where(found, cum[pc], 0).astype(float)
            last = np.where(found, (uk[pc] & ((1 << DAY_BITS) - 1)) + d0, -1)
            g0 = np.searchsorted(uk, base, side="left").clip(0, len(uk) - 1)
            first = np.where(found, (uk[g0] & ((1 << DAY_BITS) - 1)) + d0, -1)
            p30 = np.searchsorted(uk, base | (q_day - RECENT_DAYS - d0), side="left") - 1
            f30 = found & (p30 >= 0) & (grp[p30.clip(0)] == qc)
            c30 = past - np.where(f30, cum[p30.clip(0)], 0)
    out["importer_past_items"] = past
    out["importer_days_active"] = np.where(found, q_day - first, -1).astype(float)
    out["importer_is_new"] = (~found).astype(float)
    out["importer_items_30d"] = np.asarray(c30, dtype=float)
    out["importer_days_since_last"] = np.where(found, q_day - last, -1).astype(float)
    return out
