"""Channel selection under each office's daily capacity.

A declaration (not an item) gets one channel. Item scores roll up to the declaration:
fraud probability = 1 - prod(1 - p_item) (some item is fraudulent), expected revenue = sum over items,
uncertainty = max over items, rule score = max, mandatory = any item hit a mandatory rule.

Fill order per office, as in ASYCUDA: (1) mandatory rules -> RED; (2) a random quality-control share
of the capacity; (3) exploitation by expected revenue; (4) exploration of uncertain cases
(uncertainty x revenue if fraud, spread over importers and HS chapters so one pattern does not take
every slot); the rest GREEN. RED slots are filled before YELLOW within each step.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.settings import SelectionSettings

log = logging.getLogger(__name__)


def rollup(items: pd.DataFrame) -> pd.DataFrame:
    g = items.assign(_lq=np.log1p(-items.fraud_probability.clip(0, 0.999999))).groupby(
        "declaration_id", sort=True)
    d = pd.DataFrame({
        "customs_office": g.customs_office.first(),
        "importer_id": g.importer_id.first(),
        "hs2": g.hs_code.first().str[:2],
        "fraud_probability": 1 - np.exp(g._lq.sum()),
        "expected_revenue_usd": g.expected_revenue_usd.sum(),
        "revenue_if_fraud_usd": g.revenue_if_fraud_usd.max(),
        "uncertainty": g.uncertainty.max(),
        "rule_score": g.rule_score.max(),
        "mandatory": g.mandatory.any(),
    })
    return d.reset_index()


def _take(order: list[str], n: int, chosen: dict, reason: str, red_left: int, yellow_left: int):
    """Assign up to n declarations from ``order`` to RED then YELLOW; returns remaining capacity."""
    for did in order:
        if n <= 0 or (red_left <= 0 and yellow_left <= 0):
            break
        if did in chosen:
            continue
        if red_left > 0:
            chosen[did] = ("RED", reason)
            red_left -= 1
        else:
            chosen[did] = ("YELLOW", reason)
            yellow_left -= 1
        n -= 1
    return red_left, yellow_left


def _diverse(cands: pd.DataFrame, n: int) -> list[str]:
    """Greedy pick by score with a penalty for repeating an importer or HS chapter (diversity)."""
    picked, seen_imp, seen_hs = [], {}, {}
    pool = cands.copy()
    while len(picked) < n and len(pool):
        pen = pool.importer_id.map(seen_imp).fillna(0) + 0.5 * pool.hs2.map(seen_hs).fillna(0)
        adj = pool.explore_score / (1 + pen)
        i = adj.to_numpy().argmax()
        row = pool.iloc[i]
        picked.append(row.declaration_id)
        seen_imp[row.importer_id] = seen_imp.get(row.importer_id, 0) + 1
        seen_hs[row.hs2] = seen_hs.get(row.hs2, 0) + 1
        pool = pool.drop(pool.index[i])
    return picked


def select_channels(decl: pd.DataFrame, cfg: SelectionSettings, day: date, seed: int) -> pd.DataFrame:
    """Returns decl with ``channel`` and ``selection_reason`` (mandatory_rule/random/exploitation/exploration/none)."""
    chosen: dict[str, tuple[str, str]] = {}
    over = 0
    for office, g in decl.groupby("customs_office", sort=True):
        cap = cfg.capacity_for(office)
        red, yellow = cap.red, cap.yellow
        total = red + yellow
        g = g.sort_values("declaration_id")
        # 1. Mandatory rules always select; beyond the office's capacity they are counted and logged.
        mand = g[g.mandatory].sort_values(["rule_score", "declaration_id"], ascending=[False, True])
        for did in mand.declaration_id:
            if red > 0:
                chosen[did] = ("RED", "mandatory_rule")
                red -= 1
            elif yellow > 0:
                chosen[did] = ("YELLOW", "mandatory_rule")
                yellow -= 1
            else:
                chosen[did] = ("RED", "mandatory_rule")
                over += 1
        # 2. Random quality control: uniform over what is left, seeded by day and office.
        n_rand = int(round(cfg.random_share * total))
        rest = g[~g.declaration_id.isin(chosen)]
        rng = np.random.default_rng([seed, day.toordinal(), int(office) if str(office).isdigit() else 0])
        order = list(rest.declaration_id.to_numpy()[rng.permutation(len(rest))])
        red, yellow = _take(order, n_rand, chosen, "random", red, yellow)
        # 3. Exploitation: highest expected revenue, keeping the exploration quota free.
        n_explore = int(round(cfg.exploration_share * total))
        n_exploit = max(0, red + yellow - n_explore)
        rest = g[~g.declaration_id.isin(chosen)].sort_values(
            ["expected_revenue_usd", "fraud_probability", "declaration_id"], ascending=[False, False, True])
        red, yellow = _take(list(rest.declaration_id), n_exploit, chosen, "exploitation", red, yellow)
        # 4. Exploration: uncertain and valuable, spread across importers and chapters.
        rest = g[~g.declaration_id.isin(chosen)].assign(
            explore_score=lambda x: x.uncertainty * x.revenue_if_fraud_usd.clip(lower=1))
        rest = rest.sort_values(["explore_score", "declaration_id"], ascending=[False, True])
        picks = _diverse(rest.head(max(1, 10 * (red + yellow))), red + yellow)
        _take(picks, red + yellow, chosen, "exploration", red, yellow)
    if over:
        log.warning("%d mandatory selections exceeded office capacity on %s", over, day)
    ch = decl.declaration_id.map(lambda d: chosen.get(d, ("GREEN", "none")))
    out = decl.assign(channel=[c for c, _ in ch], selection_reason=[r for _, r in ch])
    log.info("selection %s: %d declarations -> %s", day, len(out), out.channel.value_counts().to_dict())
    return out
