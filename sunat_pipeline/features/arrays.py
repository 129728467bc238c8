"""Vectorised building blocks of the point-in-time joins: dates as day numbers, Arrow-hashed codes of text
columns, counting sorts, and cumulative sums as of a day per key (no per-row Python)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY_BITS = 20  # keys (code << DAY_BITS) | day: days since 1970 fit in 20 bits until the year 4840
HS_LEVELS = {"hs6": 6, "hs4": 4, "hs2": 2}  # keys derived from hs_code (its first digits)


def key_column(df: pd.DataFrame, name: str) -> pd.Series:
    """A key column of an item frame: ``hs6`` / ``hs4`` / ``hs2`` from ``hs_code`` (unless present), else the column."""
    if name in HS_LEVELS and name not in df:
        return df.hs_code.str[: HS_LEVELS[name]]
    return df[name]


def to_days(s) -> np.ndarray:
    """Dates (datetime64, Timestamps or datetime.date) as int64 days since 1970-01-01."""
    if isinstance(s, pd.Series) and s.dtype.kind == "M" and getattr(s.dtype, "tz", None) is None:
        d = s.to_numpy()
    else:
        d = pd.to_datetime(pd.Series(s) if not isinstance(s, pd.Series) else s).to_numpy()
    return d.astype("datetime64[D]").view(np.int64)


def _arrow(s: pd.Series) -> pa.Array:
    a = pa.array(s, from_pandas=True)
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
        a = pa.array(s.astype("str"), from_pandas=True)
    return a


def encode(s: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(codes, uniques) of a text column: codes index uniques, -1 for missing. O(n) hashing (Arrow)."""
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64), pd.Index([], dtype="str")
    d = pc.dictionary_encode(_arrow(s))
    codes = d.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, pd.Index(d.dictionary.to_pylist(), dtype="str")


def index_in(s: pd.Series, uniques: pd.Index) -> np.ndarray:
    """Position of each value of ``s`` in ``uniques`` (-1 where absent or missing)."""
    if len(s) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(uniques) == 0:
        return np.full(len(s), -1, dtype=np.int64)
    vs = pa.array(np.asarray(uniques, dtype=object), type=pa.large_string())
    a = _arrow(s)
    if pa.types.is_string(a.type):
        a = a.cast(pa.large_string())
    return pc.index_in(a, value_set=vs).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def counting_argsort(codes: np.ndarray, ngroups: int) -> np.ndarray:
    """Stable argsort of integer codes in [-1, ngroups): a counting sort, O(n + ngroups)."""
    codes = np.asarray(codes, dtype=np.intp)
    try:
        from pandas._libs.algos import groupsort_indexer

        return np.asarray(groupsort_indexer(codes, int(ngroups))[0], dtype=np.int64)
    except Exception:  # pragma: no cover - private pandas API; same order, slower
        return np.argsort(codes, kind="stable")


def cumulative_asof(l_code: np.ndarray, l_day: np.ndarray, values: list[np.ndarray], q_code: np.ndarray,
                    q_day: np.ndarray) -> list[np.ndarray]:
    """Per query (code, day): sums of ``values`` over rows of the same code dated on or before the day.

    Codes < 0 never match. Values are summed per (code, day) and accumulated per code, so the result
    for a day depends only on rows dated up to that day.
    """
    ok = l_code >= 0
    key = (l_code[ok].astype(np.int64) << DAY_BITS) | l_day[ok]
    order = np.argsort(key, kind="stable")
    ks = key[order]
    out = [np.zeros(len(q_code)) for _ in values]
    if not len(ks):
        return out
    start = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    uk = ks[start]
    grp = uk >> DAY_BITS
    first = np.r_[True, grp[1:] != grp[:-1]]
    gfirst = np.maximum.accumulate(np.where(first, np.arange(len(uk)), 0))
    pos = np.searchsorted(uk, (q_code.astype(np.int64) << DAY_BITS) | q_day, side="right") - 1
    hit = (q_code >= 0) & (pos >= 0)
    pc_ = pos.clip(0)
    hit &= grp[pc_] == q_code
    for i, v in enumerate(values):
        sums = np.add.reduceat(np.asarray(v, dtype=float)[ok][order], start)
        cs = np.cumsum(sums)
        base = np.where(gfirst > 0, cs[gfirst - 1], 0.0)
        cum = cs - base
        out[i] = np.where(hit, cum[pc_], 0.0)
    return out
