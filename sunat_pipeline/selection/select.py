"""Channel selection under each office's daily capacity (the policy is documented in docs/selection.md).

A declaration (not an item) gets one channel. Item scores roll up to the declaration (``rollup``):
fraud probability = 1 - prod(1 - p_item) (some item is fraudulent), expected revenue = sum over items,
revenue if fraudulent = max, uncertainty = max, rule score = max, mandatory = any item hit a mandatory
rule, and the exploration embedding is the mean of the items' embeddings.

Capacity is per office and per channel, counted in declarations or in workload units (ASYCUDA-style:
``per_declaration + per_item x items`` units a declaration). Fill order per office, as in ASYCUDA:

1. mandatory rules always select (RED while RED has room, then YELLOW, then RED beyond capacity);
2. random quality-control quotas: ``random_share`` of each channel's capacity, uniform over the rest;
3. exploitation up to capacity minus the exploration quota: a configurable mix of the rankings by expected
   revenue and by fraud probability (``exploitation_revenue_share``), highest first into RED;
4. exploration quota (``exploration_share`` of each channel): gATE-style, the candidates with the highest
   uncertainty x revenue at stake form a pool, and k-means++ seeding over their feature embedding (scaled
   by that score) picks valuable yet mutually different declarations;
5. capacity left over (e.g. no exploration candidates) goes to exploitation; everything else is GREEN;
6. an office with fewer candidates than capacity moves YELLOW selections up to RED while RED has room;
7. with ``channel_by_mechanism``, RED among the model's picks goes to those most likely to hide an offence
   only a physical examination finds (``by_mechanism``).

Everything is seeded by (seed, day, office), sorted by declaration id first, so a day's selection is the
same whatever the row order and however often it runs.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.selection.exploration import exploration_score, kmeanspp_order, standardise
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings

log = logging.getLogger(__name__)

CHANNELS = ("RED", "YELLOW")
REASONS = ("mandatory_rule", "random", "exploitation", "exploration", "none")
# selection_basis: the reason, with the ranking that chose an exploitation pick.
BASIS = ("mandatory_rule", "random", "exploitation:expected_revenue", "exploitation:fraud_probability",
         "exploration", "none")
EMB_PREFIX = "emb_"
# Features of the exploration embedding (numeric; standardised per day). Heavy-tailed ones are log-scaled.
EMBED_FEATURES = (
    "log_cif", "log_unit_value_kg", "log_ref_ratio", "cif_fob_ratio", "freight_share", "duty_rate",
    "taxes_over_cif", "kg_per_unit", "has_permit", "origin_differs_supplier", "n_items",
    "importer_id_fraud_rate", "declarant_id_fraud_rate", "supplier_id_fraud_rate", "hs6_fraud_rate",
    "origin_country_fraud_rate", "importer_past_items", "importer_days_active", "importer_is_new",
    "tax_purchases_over_imports",
)
_LOG_SCALED = {"kg_per_unit", "n_items", "importer_past_items", "importer_days_active", "cif_fob_ratio",
               "freight_share", "tax_purchases_over_imports"}
HASH_DIMS = 16  # categorical columns (HS chapter, origin) are one-hot hashed into this many dimensions each
CAT_WEIGHT = 1.5  # distance between two different categories, relative to one standard deviation
_EPS = 1e-9


# --- embedding and rollup ------------------------------------------------------------------------

def _hashed_onehot(values: pd.Series, dims: int = HASH_DIMS, weight: float = CAT_WEIGHT) -> np.ndarray:
    """Deterministic one-hot hashing (crc32, not Python's salted hash) of a categorical column."""
    codes, uniques = pd.factorize(values.astype(str), sort=True)
    buckets = np.array([zlib.crc32(str(u).encode()) % dims for u in uniques], dtype=np.int64)
    out = np.zeros((len(values), dims))
    ok = codes >= 0
    out[np.flatnonzero(ok), buckets[codes[ok]]] = weight / np.sqrt(2.0)
    return out


def item_embedding(X: pd.DataFrame, items: pd.DataFrame | None = None) -> np.ndarray:
    """Feature embedding of items for exploration: standardised numeric features + hashed HS chapter/origin.

    ``X`` is the feature matrix (``features.FEATURES`` columns, any subset); ``items`` the declared columns
    (for ``hs_code`` and ``origin_country``). Rows align with ``X``.
    """
    cols = [c for c in EMBED_FEATURES if c in X.columns]
    a = X[cols].to_numpy(dtype=np.float64, copy=True) if cols else np.zeros((len(X), 0))
    for k, c in enumerate(cols):
        if c in _LOG_SCALED:
            with np.errstate(invalid="ignore"):
                a[:, k] = np.log1p(np.clip(a[:, k], 0, None))
    parts = [standardise(a)]
    if items is not None:
        items = items.reset_index(drop=True)
        if "hs_code" in items:
            parts.append(_hashed_onehot(items.hs_code.astype(str).str[:2]))
        if "origin_country" in items:
            parts.append(_hashed_onehot(items.origin_country))
    return np.hstack(parts)


def _any_of(p: pd.Series, declaration_id: pd.Series) -> pd.Series:
    """Per declaration (sorted by id): the probability that any of its items is positive, 1 - prod(1 - p)."""
    lq = np.log1p(-p.astype(float).clip(0, 0.999999))
    return (1 - np.exp(lq.groupby(declaration_id.to_numpy(), sort=True).sum())).rename_axis("declaration_id")


def rollup(items: pd.DataFrame, embedding: np.ndarray | None = None) -> pd.DataFrame:
    """One row per declaration (sorted by id) from item scores; see the module docstring for the rules.

    ``embedding`` (items x d, aligned with ``items``' rows) becomes columns ``emb_0..emb_{d-1}``: the mean
    over the declaration's items.
    """
    g = items.groupby("declaration_id", sort=True)
    d = pd.DataFrame({
        "customs_office": g.customs_office.first(),
        "importer_id": g.importer_id.first(),
        "hs2": g.hs_code.first().str[:2],
        "n_items": g.size().astype("int64"),
        "fraud_probability": _any_of(items.fraud_probability, items.declaration_id),
        "expected_revenue_usd": g.expected_revenue_usd.sum(),
        "revenue_if_fraud_usd": g.revenue_if_fraud_usd.max(),
        "uncertainty": g.uncertainty.max(),
        "novelty": g.novelty.max() if "novelty" in items else 0.0,
        "rule_score": g.rule_score.max(),
        "mandatory": g.mandatory.any(),
    })
    if "model_fraud_probability" in items and items.model_fraud_probability.notna().all():
        # the model's own probability beside the stacked one (feedback/stacking.py), for the reasons
        d["model_fraud_probability"] = _any_of(items.model_fraud_probability, items.declaration_id)
    if "documentary_blind_share" in items and items.documentary_blind_share.notna().all():
        # P(the declaration hides an offence only a physical examination finds): channel choice (step 7)
        d["blind_fraud_probability"] = _any_of(items.fraud_probability * items.documentary_blind_share,
                                               items.declaration_id)
    if embedding is not None:
        emb = np.asarray(embedding, dtype=np.float64)
        if emb.shape[0] != len(items):
            raise ValueError(f"embedding has {emb.shape[0]} rows for {len(items)} items")
        cols = [f"{EMB_PREFIX}{k}" for k in range(emb.shape[1])]
        m = pd.DataFrame(emb, columns=cols).groupby(items.declaration_id.to_numpy(), sort=True).mean()
        d = d.join(m)
    return d.reset_index()


def _fallback_embedding(decl: pd.DataFrame) -> np.ndarray:
    """Embedding from the declaration scores alone, when no feature embedding was rolled up."""
    p = decl.fraud_probability.to_numpy(dtype=float).clip(1e-6, 1 - 1e-6)
    num = np.column_stack([
        np.log(p / (1 - p)), np.log1p(decl.expected_revenue_usd.to_numpy(dtype=float).clip(0)),
        np.log1p(decl.revenue_if_fraud_usd.to_numpy(dtype=float).clip(0)), decl.uncertainty.to_numpy(dtype=float),
        decl.rule_score.to_numpy(dtype=float),
        np.log1p(decl.n_items.to_numpy(dtype=float)) if "n_items" in decl else np.zeros(len(decl)),
    ])
    parts = [standardise(num)]
    for c in ("hs2", "importer_id"):
        if c in decl:
            parts.append(_hashed_onehot(decl[c]))
    return np.hstack(parts)


# --- costs and quotas ----------------------------------------------------------------------------

def unit_costs(cfg: SelectionSettings, cap: OfficeCapacity) -> tuple[float, float]:
    """(units per declaration, units per item) of an office: its own override, else the global setting."""
    per_decl = cap.per_declaration if cap.per_declaration is not None else cfg.workload_per_declaration
    per_item = cap.per_item if cap.per_item is not None else cfg.workload_per_item
    return float(per_decl), float(per_item)


def workload(n_items: np.ndarray, cfg: SelectionSettings, cap: OfficeCapacity) -> np.ndarray:
    per_decl, per_item = unit_costs(cfg, cap)
    return per_decl + per_item * np.asarray(n_items, dtype=np.float64)


def _quota(share: float, cap: np.ndarray, in_declarations: bool, draw: float | None = None) -> np.ndarray:
    """Per-channel quota of a step: ``share`` of each channel's capacity.

    In declarations the total is rounded half up (with ``draw``, a uniform number in [0, 1): rounded at random,
    up with the probability of its fraction, so that over days the step takes exactly ``share`` of the capacity
    and a small office whose share is under one declaration still draws some days) and split over RED and YELLOW
    in proportion to their capacity; in workload units it is the exact share (a step stops once it reaches it).
    """
    if not in_declarations:
        return share * cap
    x = round(float(share * cap.sum()), 9)  # (0.2 x 15 is 3, not 3.0000000000000004)
    total = int(np.floor(x + 0.5)) if draw is None else int(np.floor(x)) + int(draw < x - np.floor(x))
    red = min(int(np.floor(share * cap[0] + 0.5)), total, int(cap[0]))
    yellow = min(total - red, int(cap[1]))
    red = min(total - yellow, int(cap[0]))
    return np.array([red, yellow], dtype=np.float64)


# --- orders --------------------------------------------------------------------------------------

def exploit_order(fraud_probability: np.ndarray, expected_revenue: np.ndarray, revenue_share: float,
                  eligible: np.ndarray) -> Iterator[tuple[int, str]]:
    """Positions (best first) interleaving the ranking by expected revenue (a ``revenue_share`` of the picks)
    and the ranking by fraud probability; ties by position. Yields (position, basis)."""
    p = np.asarray(fraud_probability, dtype=np.float64)
    er = np.asarray(expected_revenue, dtype=np.float64)
    pos = np.arange(len(p))
    by_rev = np.lexsort((pos, -p, -er))
    by_p = np.lexsort((pos, -er, -p))
    by_rev = by_rev[eligible[by_rev]]
    by_p = by_p[eligible[by_p]]
    seen = np.zeros(len(p), dtype=bool)
    i_rev = i_p = n_rev = k = 0
    while True:
        use_rev = n_rev + 1 <= revenue_share * (k + 1) + 0.5 - _EPS
        if use_rev:
            while i_rev < len(by_rev) and seen[by_rev[i_rev]]:
                i_rev += 1
            if i_rev >= len(by_rev):
                use_rev = False
        if not use_rev:
            while i_p < len(by_p) and seen[by_p[i_p]]:
                i_p += 1
            if i_p >= len(by_p):
                while i_rev < len(by_rev) and seen[by_rev[i_rev]]:
                    i_rev += 1
                if i_rev >= len(by_rev):
                    return
                use_rev = True
        j = int(by_rev[i_rev] if use_rev else by_p[i_p])
        seen[j] = True
        n_rev += use_rev
        k += 1
        yield j, ("exploitation:expected_revenue" if use_rev else "exploitation:fraud_probability")


# --- the fill ------------------------------------------------------------------------------------

class _Office:
    """Selection state of one office: channel and reason per declaration, capacity left per channel."""

    def __init__(self, n: int, cost: np.ndarray, cap: np.ndarray):
        self.cost = cost
        self.left = cap.astype(np.float64).copy()
        self.channel = np.full(n, "GREEN", dtype=object)
        self.reason = np.full(n, "none", dtype=object)
        self.basis = np.full(n, "none", dtype=object)
        self.taken = np.zeros(n, dtype=bool)
        self.min_cost = float(cost.min()) if n else 0.0

    def assign(self, j: int, c: int, reason: str, basis: str) -> None:
        self.channel[j], self.reason[j], self.basis[j] = CHANNELS[c], reason, basis
        self.taken[j] = True
        self.left[c] -= self.cost[j]

    def fill(self, order, quota: np.ndarray, reason: str, strict: bool = False) -> np.ndarray:
        """Assign candidates of ``order`` (positions or (position, basis), best first) to RED, then YELLOW,
        while the channel's quota of this step is not reached and the declaration fits in what is left.

        A quota is a minimum (the last declaration may overshoot it, within capacity) unless ``strict``:
        then a declaration must fit in what is left of the quota (exploitation keeps exploration's share)."""
        used = np.zeros(2)
        quota = np.minimum(np.asarray(quota, dtype=np.float64), self.left)
        for item in order:
            room = quota - used if strict else self.left
            open_ = (used < quota - _EPS) & (np.minimum(room, self.left) >= self.min_cost - _EPS)
            if not open_.any():
                break
            j, basis = item if isinstance(item, tuple) else (item, reason)
            if self.taken[j]:
                continue
            for c in (0, 1):
                if open_[c] and self.cost[j] <= min(room[c], self.left[c]) + _EPS:
                    self.assign(j, c, reason, basis)
                    used[c] += self.cost[j]
                    break
        return used


def by_mechanism(st: _Office, blind: np.ndarray, p: np.ndarray) -> None:
    """Step 7 (``channel_by_mechanism``, capacity in declarations): among the model's picks (exploitation and
    exploration), the RED places go to those most likely to hide an offence a documentary check cannot see,
    the rest to YELLOW; as many of each as before. Mandatory and random picks keep their channel (the random
    share stays an unbiased sample of each channel)."""
    picks = np.flatnonzero(np.isin(st.reason, ["exploitation", "exploration"]))
    n_red = int((st.channel[picks] == "RED").sum())
    order = picks[np.lexsort((picks, -p[picks], -np.nan_to_num(blind[picks])))]
    st.channel[order[:n_red]] = "RED"
    st.channel[order[n_red:]] = "YELLOW"


def _random_propensity(picked: int, quota: int, pool: int, expected: float | None) -> float:
    """Each declaration's chance in the day's random draw (every one of the ``pool`` had the same): the picks the
    draw expected over the pool where the randomly rounded quota was taken in full (``expected``: share x
    capacity, in declarations), else (a capacity full of mandatory hits, workload units) the picks it made."""
    if not pool:
        return 0.0
    if expected is not None and picked == quota:
        return min(expected, pool) / pool
    return picked / pool


def selection_probability(reason: np.ndarray, p_random: float, p_explore: np.ndarray) -> np.ndarray:
    """Each declaration's probability of being selected under the day's policy, given the scores (the
    propensity that inverse-propensity estimates divide by; docs/models.md):

    * mandatory rules and the model's ranking are deterministic: 1;
    * a random pick: its sampling probability (random picks over the declarations drawn from);
    * an exploration pick: its chance in the k-means++ draw (picks over pool size), or of the random draw
      before it, whichever is larger (an approximation: the draw is not uniform over the pool);
    * a declaration not selected: the chance the random draw or exploration had of taking it."""
    pe = np.asarray(p_explore, dtype=np.float64)
    chance = p_random + (1 - p_random) * pe
    return np.select([np.isin(reason, ["mandatory_rule", "exploitation"]), reason == "random",
                      reason == "exploration"], [1.0, p_random, np.maximum(chance, p_random)], chance)


def _office_key(office) -> int:
    s = str(office)
    return int(s) if s.isdigit() else zlib.crc32(s.encode())


def select_channels(decl: pd.DataFrame, cfg: SelectionSettings, day: date, seed: int,
                    capacity: Mapping[str, OfficeCapacity] | None = None,
                    explore_share: float | None = None) -> pd.DataFrame:
    """Returns ``decl`` with ``channel``, ``selection_reason`` (mandatory_rule/random/exploitation/exploration/
    none), ``selection_basis`` (the reason, with the exploitation ranking) and ``workload_units``.
    ``capacity``: each office's capacity for the day (``capacity.office_capacities``); an office missing from
    it gets ``cfg.capacity_for`` without volume (explicit, else the default). ``explore_share``: the day's
    exploration share (``exploration.adaptive_share``), else ``cfg.exploration_share``."""
    explore_share = cfg.exploration_share if explore_share is None else explore_share
    n = len(decl)
    channel = np.full(n, "GREEN", dtype=object)
    reason = np.full(n, "none", dtype=object)
    basis = np.full(n, "none", dtype=object)
    units = np.zeros(n)
    prob = np.zeros(n)
    ids = decl.declaration_id.astype(str).to_numpy()
    n_items = decl.n_items.to_numpy(dtype=np.float64) if "n_items" in decl else np.ones(n)
    emb_cols = [c for c in decl.columns if c.startswith(EMB_PREFIX)]
    over = 0
    for office, idx in sorted(decl.groupby("customs_office", sort=True).indices.items()):
        idx = idx[np.argsort(ids[idx], kind="stable")]  # row order never matters
        g = decl.iloc[idx]
        cap = (capacity or {}).get(str(office)) or cfg.capacity_for(office)
        in_decl = cap.unit == "declarations"
        wl = workload(n_items[idx], cfg, cap)
        cost = np.ones(len(idx)) if in_decl else wl
        capv = np.array([cap.red, cap.yellow], dtype=np.float64)
        st = _Office(len(idx), cost, capv)
        p = g.fraud_probability.to_numpy(dtype=np.float64)
        er = g.expected_revenue_usd.to_numpy(dtype=np.float64)

        # 1. Mandatory rules always select: RED while it has room, then YELLOW, then RED beyond capacity.
        mand = np.flatnonzero(g.mandatory.to_numpy(dtype=bool) & cfg.mandatory_rules)
        mand = mand[np.lexsort((mand, -g.rule_score.to_numpy(dtype=np.float64)[mand]))]
        for j in mand:
            fits = [c for c in (0, 1) if st.cost[j] <= st.left[c] + _EPS]
            if fits:
                st.assign(j, fits[0], "mandatory_rule", "mandatory_rule")
            else:
                st.assign(j, 0, "mandatory_rule", "mandatory_rule")
                st.left[0] += st.cost[j]  # beyond capacity: counted, not charged
                over += 1
        st.left = np.maximum(st.left, 0.0)

        # 2. Random quality control: a share of each channel, uniform over the rest (seeded by day and office).
        rng = np.random.default_rng([seed, day.toordinal(), _office_key(office)])
        rest = np.flatnonzero(~st.taken)
        draw = np.random.default_rng([seed, day.toordinal(), _office_key(office), 1]).random()
        quota = _quota(cfg.random_share, capv, in_decl, draw)
        st.fill(rest[rng.permutation(len(rest))], quota, "random")
        p_random = _random_propensity(int((st.reason[rest] == "random").sum()), int(quota.sum()), len(rest),
                                      cfg.random_share * capv.sum() if in_decl else None)

        # 3. Exploitation, keeping the exploration quota free.
        q_explore = np.minimum(_quota(explore_share, capv, in_decl), st.left)
        st.fill(exploit_order(p, er, cfg.exploitation_revenue_share, ~st.taken), st.left - q_explore,
                "exploitation", strict=True)

        # 4. Exploration: uncertain and valuable, spread over the feature space (k-means++ seeding).
        p_explore = np.zeros(len(idx))
        if q_explore.sum() > _EPS:
            slots = max(1, int(np.ceil(q_explore.sum() / max(float(np.median(cost)), _EPS))))
            score = exploration_score(g)
            emb = g[emb_cols].to_numpy(dtype=np.float64) if emb_cols else _fallback_embedding(g)
            erng = np.random.default_rng([seed, day.toordinal(), _office_key(office), 2])
            free = ~st.taken
            order = list(kmeanspp_order(score, emb, slots * cfg.exploration_pool, erng, free))
            st.fill(iter(order), q_explore, "exploration")
            # k-means++ draws its picks from the pool: a pool member's chance is about picks over pool size.
            picked = int((st.reason == "exploration").sum())
            if order:
                p_explore[order] = picked / len(order)

        # 5. What is still free goes to the model's ranking.
        st.fill(exploit_order(p, er, cfg.exploitation_revenue_share, ~st.taken), st.left, "exploitation")
        # 6. An office with fewer candidates than capacity: physical exams never stay idle while documentary
        #    checks are done; YELLOW selections move up to RED (mandatory, then most likely fraud, first).
        yellow = np.flatnonzero(st.channel == "YELLOW")
        for j in yellow[np.lexsort((yellow, -p[yellow], ~g.mandatory.to_numpy(dtype=bool)[yellow]))]:
            if st.left[0] < st.min_cost - _EPS:
                break
            if st.cost[j] <= st.left[0] + _EPS:
                st.channel[j] = "RED"
                st.left += np.array([-st.cost[j], st.cost[j]])
        if cfg.channel_by_mechanism and in_decl and "blind_fraud_probability" in g:
            by_mechanism(st, g.blind_fraud_probability.to_numpy(dtype=np.float64), p)
        channel[idx], reason[idx], basis[idx], units[idx] = st.channel, st.reason, st.basis, wl
        prob[idx] = selection_probability(st.reason, p_random, p_explore)
    if over:
        log.warning("%d mandatory selections exceeded office capacity on %s", over, day)
    out = decl.assign(channel=channel, selection_reason=reason, selection_basis=basis, workload_units=units,
                      selection_probability=prob.round(6))
    log.info("selection %s: %d declarations -> %s", day, len(out), out.channel.value_counts().to_dict())
    return out
