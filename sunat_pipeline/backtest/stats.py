"""Paired comparisons of two policies with bootstrap intervals.

Two policies replayed on the same days (same worlds, same declarations) give paired daily figures. The
interval of a ratio (or a difference) of their totals resamples whole days with replacement - the same days
for both policies, within each seed (stratified), so a seed's share of the days stays fixed - and takes the
2.5% and 97.5% quantiles (percentile bootstrap). Days, not items, are the unit: a day's selections share
the same model and weights, so items of a day are not independent.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 2000


def _resampled_sums(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    sa = np.zeros(n_boot)
    sb = np.zeros(n_boot)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        draw = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        sa += a[draw].sum(axis=1)
        sb += b[draw].sum(axis=1)
    return sa, sb


def _check(a, b, groups):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    groups = np.zeros(len(a), dtype=int) if groups is None else np.asarray(groups)
    if not (len(a) == len(b) == len(groups)):
        raise ValueError(f"paired figures need equal lengths, got {len(a)}, {len(b)}, {len(groups)}")
    return a, b, groups


def paired_ratio(a, b, groups=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """sum(a) / sum(b) with its 95% paired bootstrap interval (None where b sums to 0)."""
    a, b, groups = _check(a, b, groups)
    point = a.sum() / b.sum() if b.sum() > 0 else None
    sa, sb = _resampled_sums(a, b, groups, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(sb > 0, sa / np.where(sb > 0, sb, 1), np.inf)
    lo, hi = np.quantile(r, [0.025, 0.975], method="inverted_cdf")  # no interpolation: an infinite end stays one
    return {"ratio": None if point is None else round(float(point), 4), "ci95": [_r(lo), _r(hi)],
            "a": round(float(a.sum()), 2), "b": round(float(b.sum()), 2), "units": int(len(a))}


def paired_difference(a, b, groups=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """sum(a) - sum(b) with its 95% paired bootstrap interval."""
    a, b, groups = _check(a, b, groups)
    sa, sb = _resampled_sums(a, b, groups, n_boot, seed)
    lo, hi = np.quantile(sa - sb, [0.025, 0.975], method="inverted_cdf")
    return {"difference": round(float(a.sum() - b.sum()), 4), "ci95": [_r(lo), _r(hi)],
            "a": round(float(a.sum()), 2), "b": round(float(b.sum()), 2), "units": int(len(a))}


def _r(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 4)
