"""Which row version of the offence database supersedes which: the ``is_current`` and ``superseded_by`` columns.

Vectorised (integer codes and one stable sort per chain) because the feedback step recomputes them over the
whole database several times a day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def row_key(df: pd.DataFrame) -> pd.Series:
    """The key of a row version: ``record_id:record_hash``."""
    return df.record_id.astype("str") + ":" + df.record_hash.astype("str")


def _order_codes(s: pd.Series) -> np.ndarray:
    """Integer codes that sort as ``s`` sorts (missing values last, as ``sort_values`` puts them)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        v = s.to_numpy(dtype="datetime64[us]").view("i8").copy()
        v[pd.isna(s).to_numpy()] = np.iinfo("i8").max
        return v
    codes, _ = pd.factorize(s, sort=True)
    return np.where(codes < 0, codes.max(initial=0) + 1, codes)


def _successor(db: pd.DataFrame, key: np.ndarray, group: list[str], order: list[str]) -> np.ndarray:
    """For each row, the key of the next row of its ``group`` in ``order`` (None for the last, and for rows
    with a missing group value, which ``groupby`` leaves out): a stable sort on integer codes, vectorised."""
    out = np.full(len(db), None, dtype=object)
    if len(db) < 2:
        return out
    codes = [_order_codes(db[c]) for c in group + order]
    missing = np.zeros(len(db), bool)
    for c in group:
        missing |= pd.isna(db[c]).to_numpy()
    idx = np.lexsort(codes[::-1])
    same = ~missing[idx[:-1]]
    for c in codes[:len(group)]:
        same &= c[idx[:-1]] == c[idx[1:]]
    out[idx[:-1][same]] = key[idx[1:][same]]
    return out


def current_view(db: pd.DataFrame) -> pd.DataFrame:
    """``db`` with ``is_current`` and ``superseded_by`` recomputed over exactly these rows.

    Row versions are ordered by when they were reported, then when they were folded in. The latest
    version of a ``record_id`` supersedes its earlier versions; among those, the latest record of a
    declaration item supersedes the item's earlier records. Each superseded row names the row that
    replaced it (the next one in its chain).
    """
    db = db.copy()
    sup = np.full(len(db), None, dtype=object)
    if len(db):
        key = row_key(db).to_numpy(dtype=object)
        sup = _successor(db, key, ["record_id"], ["reported_date", "folded_in", "record_hash"])
        latest = np.flatnonzero(pd.isna(sup))
        nxt = _successor(db.iloc[latest], key[latest], ["declaration_id", "item_no"],
                         ["reported_date", "folded_in", "record_id"])
        found = ~pd.isna(nxt)
        sup[latest[found]] = nxt[found]
    db["superseded_by"] = pd.Series(sup, index=db.index, dtype="str")
    db["is_current"] = pd.isna(sup)
    return db
