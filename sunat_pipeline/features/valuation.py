"""Valuation against past declarations: robust statistics of the unit values of the last items of the same
goods and origin lodged before the day, backing off to coarser groups; and peer deviations (a value against the
median of its group's recent past items) for the groups a feature specification names.

Past items are ordered by (day, a hash of their declared amounts), so the window of a group does not depend on
row order; statistics are computed for all queries at once (integer group keys, sorted runs, binary search).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import DAY_BITS, counting_argsort, encode, index_in, key_column, to_days
from sunat_pipeline.features.declared import VALUE_COLUMNS, numeric

UV_WINDOW = 100  # the most recent past items of the group
UV_MIN_GROUP = 20  # fewer past items than this: back off to the next level
UV_LEVELS = ("HS10 x origin", "HS6 x origin", "HS4 x origin", "HS4")
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
MAD_FLOOR = 0.05  # log units: a group of identical prices does not make every deviation infinite

_TIE_SEED, _TIE_MUL = np.uint64(0x243F6A8885A308D3), np.uint64(0x9E3779B97F4A7C15)


def _tie(cols: dict[str, np.ndarray]) -> np.ndarray:
    """A hash of an item's declared amounts: orders the items of one day independently of row order."""
    n = len(cols["fob_usd"])
    h = np.full(n, _TIE_SEED, dtype=np.uint64)
    tmp = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in VALUE_COLUMNS:
            np.bitwise_xor(h, np.ascontiguousarray(cols[c], dtype=np.float64).view(np.uint64), out=h)
            np.multiply(h, _TIE_MUL, out=h)
            np.right_shift(h, np.uint64(29), out=tmp)
            np.bitwise_xor(h, tmp, out=h)
    return h


def _log_unit_values(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """log_unit_value_kg and log_unit_value_qty exactly as ``_values`` computes them, with two buffers."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v1 = np.maximum(c["net_weight_kg"], 1e-3)
        np.divide(c["fob_usd"], v1, out=v1)
        np.maximum(v1, 1e-6, out=v1)
        np.log(v1, out=v1)
        v2 = np.maximum(c["quantity"], 1.0)
        np.divide(c["fob_usd"], v2, out=v2)
        np.maximum(v2, 1e-6, out=v2)
        np.log(v2, out=v2)
    return v1, v2


@dataclass
class _Past:
    """Customs items lodged before the last query day, ordered by (day, tie)."""

    rows: np.ndarray  # positions in customs_history
    day: np.ndarray
    v1: np.ndarray  # log unit value per kg
    v2: np.ndarray  # log unit value per unit


def _day_tie_order(day: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Argsort by (day, top 47 bits of tie): one sort of a packed int64 key (days span < 2^16).

    Equal keys mean equal hashes of every declared amount: such items are interchangeable for the
    statistics, so the sort need not be stable."""
    d0 = int(day.min())
    if int(day.max()) - d0 >= 1 << 16:  # more than 179 years of history: sort on two keys
        return np.lexsort((tie, day))
    key = (tie >> np.uint64(17)).view(np.int64)
    key |= (day - d0) << 47
    return np.argsort(key)


def past_items(customs_history: pd.DataFrame, last_day: int, h_day: np.ndarray) -> _Past:
    if not len(customs_history):
        z = np.zeros(0)
        return _Past(np.zeros(0, np.int64), np.zeros(0, np.int64), z, z)
    cols = numeric(customs_history)  # views
    keep = h_day < last_day
    sub = None if keep.all() else np.flatnonzero(keep)
    t = _tie(cols)
    day = h_day
    if sub is not None:
        t, day = t[sub], h_day[sub]
    order = _day_tie_order(day, t) if len(day) else np.zeros(0, np.int64)
    del t
    rows = order if sub is None else sub[order]
    v1, v2 = _log_unit_values(cols)
    return _Past(rows, day[order], v1[rows], v2[rows])


def _mid(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    r = np.arange(len(s))
    lo, hi = ((c - 1) // 2).clip(0), (c // 2).clip(0, s.shape[1] - 1)
    return np.where(c > 0, (s[r, lo] + s[r, hi]) / 2, np.nan)


def _med_mad(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of each row, ignoring NaN (rows with no value: NaN)."""
    med = np.full(len(m), np.nan)
    mad = np.full(len(m), np.nan)
    gaps = np.isnan(m).any(axis=1)
    full = np.flatnonzero(~gaps)
    if len(full):  # full windows: two order statistics by partition, the same numbers as by sorting
        k = m.shape[1]
        kth = [(k - 1) // 2, k // 2]
        f = m[full]
        p = np.partition(f, kth, axis=1)
        md = (p[:, kth[0]] + p[:, kth[1]]) / 2
        p = np.partition(np.abs(f - md[:, None]), kth, axis=1)
        med[full], mad[full] = md, (p[:, kth[0]] + p[:, kth[1]]) / 2
    part = np.flatnonzero(gaps)
    if len(part):
        s = np.sort(m[part], axis=1)  # NaN last
        c = (~np.isnan(s)).sum(axis=1)
        md = _mid(s, c)
        med[part], mad[part] = md, _mid(np.sort(np.abs(s - md[:, None]), axis=1), c)
    return med, mad


def _window_stats(hg: np.ndarray, ngroups: int, day: np.ndarray, vals: list[np.ndarray], qg: np.ndarray,
                  qday: np.ndarray, d0: int):
    """Per query (group, day): past items of the group (count) and median/MAD of each value over the last
    UV_WINDOW of them lodged strictly before the day (``hg``, ``day``, ``vals`` in (day, tie) order)."""
    nq = len(qg)
    n = np.zeros(nq, dtype=np.int64)
    med = [np.full(nq, np.nan) for _ in vals]
    mad = [np.full(nq, np.nan) for _ in vals]
    ok = qg >= 0
    if not ok.any() or not len(hg):
        return n, med, mad
    need = np.zeros(ngroups + 1, dtype=bool)
    need[qg[ok] + 1] = True
    sel = np.flatnonzero(need[hg + 1])  # past items of the queried groups, still in (day, tie) order
    g = hg[sel]
    o = sel[counting_argsort(g, ngroups)]  # stable: each group's items stay in (day, tie) order
    keys = hg[o] << DAY_BITS
    keys |= day[o] - d0
    del sel, g
    uq, inv = np.unique((qg[ok] << DAY_BITS) | (qday[ok] - d0), return_inverse=True)
    inv = inv.ravel()
    end = np.searchsorted(keys, uq, side="left")
    start = np.searchsorted(keys, (uq >> DAY_BITS) << DAY_BITS, side="left")
    un = end - start
    umed = [np.full(len(uq), np.nan) for _ in vals]
    umad = [np.full(len(uq), np.nan) for _ in vals]
    ar = np.arange(UV_WINDOW)
    step = max(1, 2_000_000 // UV_WINDOW)
    has = np.flatnonzero(un > 0)
    for c0 in range(0, len(has), step):
        sel = has[c0:c0 + step]
        idx = end[sel, None] - UV_WINDOW + ar[None, :]
        inside = idx >= np.maximum(start[sel], end[sel] - UV_WINDOW)[:, None]
        rows = o[idx.clip(0)]
        for j, v in enumerate(vals):
            m = np.where(inside, v[rows], np.nan)
            umed[j][sel], umad[j][sel] = _med_mad(m)
    n[ok] = un[inv]
    for j in range(len(vals)):
        med[j][ok] = umed[j][inv]
        mad[j][ok] = umad[j][inv]
    return n, med, mad


def valuation(hist_hs: pd.Series, hist_origin: pd.Series, past: _Past, q_hs: pd.Series, q_origin: pd.Series,
               q_day: np.ndarray, q_v1: np.ndarray, q_v2: np.ndarray) -> dict[str, np.ndarray]:
    """Robust z-scores of unit values against past items, backing off HS10 -> HS6 -> HS4 (x origin) -> HS4."""
    nq = len(q_day)
    out = {"unit_value_robust_z": np.full(nq, np.nan), "unit_value_qty_robust_z": np.full(nq, np.nan),
           "unit_value_past_log_ratio": np.full(nq, np.nan), "unit_value_ref_level": np.full(nq, 4.0),
           "unit_value_ref_n": np.zeros(nq)}
    if not nq or not len(past.rows):
        return out
    h10, hs_u = encode(hist_hs)
    h10 = h10[past.rows]
    h10[~np.isfinite(past.v1)] = -1  # no unit value: in no group
    o_u = pd.Index(pd.unique(q_origin.dropna().astype("str")), dtype="str")
    ho = index_in(hist_origin, o_u)[past.rows]
    hs_s = pd.Series(hs_u, dtype="str")
    p6, u6 = encode(hs_s.str[:6])
    p4, u4 = encode(hs_s.str[:4])
    p6, p4 = np.append(p6, -1), np.append(p4, -1)  # index -1 (no HS10 code) -> -1
    no = max(len(o_u), 1)
    q10, qo = index_in(q_hs, hs_u), index_in(q_origin, o_u)
    q6, q4 = index_in(q_hs.str[:6], u6), index_in(q_hs.str[:4], u4)

    def pair(a, b):
        out = a * no
        out += b
        out[(a < 0) | (b < 0)] = -1
        return out

    def level(lvl: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(past item group codes, query group codes, number of groups) of a back-off level."""
        if lvl == 0:
            return pair(h10, ho), pair(q10, qo), len(hs_u) * no
        if lvl == 1:
            return pair(p6[h10], ho), pair(q6, qo), len(u6) * no
        if lvl == 2:
            return pair(p4[h10], ho), pair(q4, qo), len(u4) * no
        return p4[h10], q4, len(u4)

    vals = [past.v1, past.v2]
    d0 = int(min(past.day.min(), q_day.min()))
    todo = np.ones(nq, dtype=bool)
    for lvl in range(len(UV_LEVELS)):
        if not todo.any():
            break
        hg, qg, ng = level(lvl)
        qsel = np.where(todo, qg, -1).astype(np.int64)
        n, med, mad = _window_stats(hg, max(int(ng), 1), past.day, vals, qsel, q_day, d0)
        use = todo & (n >= UV_MIN_GROUP)
        with np.errstate(invalid="ignore"):
            for name, x, j in (("unit_value_robust_z", q_v1, 0), ("unit_value_qty_robust_z", q_v2, 1)):
                scale = np.maximum(MAD_SCALE * mad[j], MAD_FLOOR)
                out[name] = np.where(use, (x - med[j]) / scale, out[name])
        out["unit_value_past_log_ratio"] = np.where(use, q_v1 - med[0], out["unit_value_past_log_ratio"])
        out["unit_value_ref_level"] = np.where(use, float(lvl), out["unit_value_ref_level"])
        out["unit_value_ref_n"] = np.where(use, np.minimum(n, UV_WINDOW).astype(float), out["unit_value_ref_n"])
        todo &= ~use
        del hg
    return out


# --- peer deviations (configured groups; none by default) ------------------------------------------------
# value -> (how it is computed from the declared columns, the customs columns it needs)
PEER_VALUES = {
    "log_value": ("log(1 + fob_usd)", ("fob_usd",)),
    "log_kg": ("log(1 + net_weight_kg)", ("net_weight_kg",)),
    "duty_rate": ("duty_rate", ("duty_rate",)),
    "log_unit_value_kg": ("log_unit_value_kg", ("fob_usd", "net_weight_kg")),
}


def peer_name(value: str, group: tuple[str, ...]) -> str:
    return f"{value}_vs_{'_'.join(group)}"


def _group_key(df: pd.DataFrame, group: tuple[str, ...]) -> pd.Series:
    """The group of each row as text (``a|b``); missing where a member is missing."""
    parts = [key_column(df, k) for k in group]
    ok = np.logical_and.reduce([p.notna().to_numpy() for p in parts])
    key = parts[0].astype("str")
    for p in parts[1:]:
        key = key + "|" + p.astype("str")
    return key.where(ok)


def _peer_values(df: pd.DataFrame, rows: np.ndarray | None = None) -> list[np.ndarray]:
    c = numeric(df, rows)
    with np.errstate(invalid="ignore"):
        return [np.log1p(np.maximum(c["fob_usd"], 0)), np.log1p(np.maximum(c["net_weight_kg"], 0)), c["duty_rate"],
                _log_unit_values(c)[0]]


def peer_deviations(items: pd.DataFrame, customs_history: pd.DataFrame, groups: tuple[tuple[str, ...], ...],
                    h_day: np.ndarray | None = None) -> pd.DataFrame:
    """For each group and value (PEER_VALUES): the item's value minus the median over the last UV_WINDOW items
    of its group lodged strictly before its day; NaN when the group has no such item or a key is missing."""
    n = len(items)
    out = {peer_name(v, g): np.full(n, np.nan) for g in groups for v in PEER_VALUES}
    if not n or not len(customs_history) or not groups:
        return pd.DataFrame(out)
    q_day = to_days(items.declaration_date)
    past = past_items(customs_history, int(q_day.max()), to_days(customs_history.declaration_date)
                      if h_day is None else h_day)
    if not len(past.rows):
        return pd.DataFrame(out)
    hv = [a[past.rows] for a in _peer_values(customs_history)]
    qv = _peer_values(items)
    d0 = int(min(past.day.min(), q_day.min()))
    for g in groups:
        hc, uniq = encode(_group_key(customs_history, g))
        qc = index_in(_group_key(items, g), uniq)
        count, med, _ = _window_stats(hc[past.rows], max(len(uniq), 1), past.day, hv, qc, q_day, d0)
        for j, v in enumerate(PEER_VALUES):
            out[peer_name(v, g)] = np.where(count >= 1, qv[j] - med[j], np.nan)
    return pd.DataFrame(out)
