"""Entity risk profiles: smoothed fraud rates per entity from the outcomes known on a day.

An outcome counts for day D when its extract was available on or before D (``reported_date <= D``).
Each inspected item counts once, with the latest result reported by D: a later correction never
changes what an earlier day knew. Profiles exist per single key (importer, declarant, supplier, HS6,
origin, office) and per cross (office x importer, HS6 x origin): the default :class:`ProfileSpec`, which the
daily pipeline uses. An external extract may ask for more keys and crosses (``sunat-pipeline evaluate``, from
its mapping) and another smoothing; the same code computes them.

Two ways to the same numbers (tested equal):

* **full rebuild** (:func:`profile_features`): cumulative counts per (entity, reported_date) joined as of
  each item's date; used for training sets that span many days;
* **incremental** (:class:`ProfileState`, :func:`update_profiles`): the counts as of one day, persisted as
  ``gold/profiles/reported_date=D/part-0.parquet``; the daily run loads the state of the latest earlier
  day, checks it was built from the same outcomes (a fingerprint), adds the outcomes reported since,
  and writes the state of D. Scoring a day looks its items up in that state.

Smoothing: a single key's rate is ``(frauds + S * prior) / (inspections + S)`` with the global prior
``(all frauds + 1) / (all inspections + 10)``; a cross shrinks towards its parent's rate instead of the
global prior (office x importer towards the importer, HS6 x origin towards the HS6).

The vectorised helpers (day numbers, codes, as-of sums) are in ``sunat_pipeline.features.arrays``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import HS_LEVELS, cumulative_asof, encode, index_in, key_column, to_days

log = logging.getLogger(__name__)

PROFILE_KEYS = ("importer_id", "declarant_id", "supplier_id", "hs6", "origin_country", "customs_office")
# cross name -> (first key, second key, parent key whose rate the cross shrinks towards)
CROSSES = {
    "office_importer": ("customs_office", "importer_id", "importer_id"),
    "hs6_origin": ("hs6", "origin_country", "hs6"),
}
SMOOTHING = 20.0  # pseudo-inspections at the prior: a new entity starts at the prior
PRIOR_FRAUDS, PRIOR_INSPECTIONS = 1.0, 10.0  # global prior (frauds + 1) / (inspections + 10); 0.1 with no outcome
SNAPSHOT_KEEP_DAYS = 35  # daily states older than this (before the newest) are pruned
_LABEL, _ALL, _FINGERPRINT = "_label", "_all", "_fingerprint"


# --- which profiles -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileSpec:
    """The profile kinds: single keys (item columns, or hs6/hs4/hs2 of hs_code), crosses of two keys
    ``(name, first, second, parent)`` shrunk towards the parent key's rate, and the smoothing S."""

    keys: tuple[str, ...] = PROFILE_KEYS
    crosses: tuple[tuple[str, str, str, str], ...] = field(
        default=tuple((n, a, b, p) for n, (a, b, p) in CROSSES.items()))
    smoothing: float = SMOOTHING

    def __post_init__(self):
        names = set(self.keys)
        for name, a, b, parent in self.crosses:
            if a not in names or b not in names or parent not in names:
                raise ValueError(f"profile cross {name}: {a}, {b} and its parent {parent} must be profile keys")
            if name in names:
                raise ValueError(f"profile kind {name!r} defined twice")
            names.add(name)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*self.keys, *(c[0] for c in self.crosses))

    @property
    def cross_map(self) -> dict[str, tuple[str, str, str]]:
        return {n: (a, b, p) for n, a, b, p in self.crosses}

    @property
    def columns(self) -> list[str]:
        """The item columns the keys read (``hs_code`` for the HS levels)."""
        cols = [k for k in self.keys if k not in HS_LEVELS]
        return cols + (["hs_code"] if any(k in HS_LEVELS for k in self.keys) else [])


DEFAULT_PROFILES = ProfileSpec()


# --- labelled outcomes -----------------------------------------------------------------------------------
def attach_entities(o: pd.DataFrame, customs: pd.DataFrame, spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Rows of ``o`` (declaration_id, item_no) whose item is in ``customs``, with its entities (an inner
    join in ``o``'s order; the last customs row of an item wins). Integer keys: no join on text columns."""
    ids = pd.Index(pd.unique(o.declaration_id.dropna().astype("str")), dtype="str")
    dc = index_in(customs.declaration_id, ids)
    pos = np.flatnonzero(dc >= 0)
    c_item = pd.to_numeric(customs.item_no.iloc[pos], errors="coerce").to_numpy(float, na_value=np.nan)
    o_item = pd.to_numeric(o.item_no, errors="coerce").to_numpy(float, na_value=np.nan)
    mult = int(np.nanmax(np.r_[c_item, o_item, 0.0])) + 1
    ck = np.where(np.isnan(c_item), -1, dc[pos] * mult + np.nan_to_num(c_item).astype(np.int64))
    oc = index_in(o.declaration_id, ids)
    ok = np.where(np.isnan(o_item) | (oc < 0), -2, oc * mult + np.nan_to_num(o_item).astype(np.int64))
    order = np.argsort(ck, kind="stable")
    cks = ck[order]
    last = np.r_[cks[1:] != cks[:-1], True] if len(cks) else np.zeros(0, dtype=bool)
    cks, order = cks[last], order[last]
    p = np.searchsorted(cks, ok).clip(0, max(len(cks) - 1, 0))
    hit = np.flatnonzero((cks[p] == ok) & (ok >= 0)) if len(cks) else np.zeros(0, dtype=np.int64)
    out = o.iloc[hit].reset_index(drop=True)
    cols = [c for c in spec.columns if c != "hs_code"]
    ent = customs[[*cols, "hs_code"]].iloc[pos[order[p[hit]]]].reset_index(drop=True)
    for k in cols:
        out[k] = ent[k]
    for k in spec.keys:
        if k in HS_LEVELS:
            out[k] = key_column(ent, k)
    return out


def _report_deltas(o: pd.DataFrame, previous: pd.Series | None = None) -> pd.DataFrame:
    """Reports (deduplicated per item and day) with ``n_delta`` / ``fraud_delta`` against what came before.

    ``previous``: the latest result (1.0 fraud / 0.0 clean) of each item known before these reports,
    indexed by (declaration_id, item_no).
    """
    o = o.sort_values(["reported_date", "record_id"], kind="stable").drop_duplicates(
        ["declaration_id", "item_no", "reported_date"], keep="last")
    o = o.assign(fraud=(o.result == "FRAUD").astype(float), revenue=o.revenue_recovered_usd.astype(float))
    before = o.groupby(["declaration_id", "item_no"]).fraud.shift()
    if previous is not None and len(previous):
        idx = pd.MultiIndex.from_arrays([o.declaration_id, o.item_no.astype("int64")])
        prev = previous.reindex(idx).to_numpy()
        first = before.isna().to_numpy()
        before = pd.Series(np.where(first, prev, before.to_numpy()), index=o.index)
    return o.assign(n_delta=before.isna().astype(float), fraud_delta=o.fraud - before.fillna(0.0))


def labelled_outcomes(outcomes: pd.DataFrame, customs: pd.DataFrame,
                      spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Outcome reports of inspected items, joined to the item's entities: one row per item and report date.

    An item reported again later (a correction) has several rows. ``n_delta`` (1 on the item's first
    report, else 0) and ``fraud_delta`` (change of its result) make cumulative sums up to a day count
    each item once with the latest result reported by that day, so a later report never changes
    what an earlier day knew.
    """
    cols = ["declaration_id", "item_no", "reported_date", "fraud", "revenue", "n_delta", "fraud_delta"]
    if outcomes.empty:
        return pd.DataFrame(columns=[*cols, *spec.keys])
    return attach_entities(_report_deltas(outcomes)[cols], customs, spec)


# --- rates -----------------------------------------------------------------------------------------------
def profile_rates(counts: dict[str, tuple[np.ndarray, np.ndarray]], total_n: np.ndarray,
                  total_f: np.ndarray, spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Feature columns from (inspections, frauds) per profile kind and the global totals."""
    prior = (total_f + PRIOR_FRAUDS) / (total_n + PRIOR_INSPECTIONS)
    s = spec.smoothing
    out: dict[str, np.ndarray] = {}
    rates: dict[str, np.ndarray] = {}
    for k in spec.keys:
        n, f = counts[k]
        rates[k] = (f + s * prior) / (n + s)
    for c, _, _, parent in spec.crosses:
        n, f = counts[c]
        rates[c] = (f + s * rates[parent]) / (n + s)
    for k in spec.kinds:
        out[f"{k}_n_insp"] = counts[k][0]
    for k in spec.kinds:
        out[f"{k}_fraud_rate"] = rates[k]
    return pd.DataFrame(out)


def _item_keys(items: pd.DataFrame, spec: ProfileSpec = DEFAULT_PROFILES) -> dict[str, pd.Series]:
    return {k: key_column(items, k) for k in spec.keys}


def profile_features(items: pd.DataFrame, labelled: pd.DataFrame,
                     spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Full rebuild: profiles of each item from outcomes reported on or before the item's date."""
    q_day = to_days(items.declaration_date)
    nq = len(items)
    if labelled.empty:
        zero = (np.zeros(nq), np.zeros(nq))
        return profile_rates(dict.fromkeys(spec.kinds, zero), np.zeros(nq), np.zeros(nq), spec)
    l_day = to_days(labelled.reported_date)
    dn, df_ = labelled.n_delta.to_numpy(float), labelled.fraud_delta.to_numpy(float)
    total_n, total_f = cumulative_asof(np.zeros(len(labelled), np.int64), l_day, [dn, df_],
                                       np.zeros(nq, np.int64), q_day)
    qkeys = _item_keys(items, spec)
    codes: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    counts = {}
    for k in spec.keys:
        lc, uniq = encode(labelled[k])
        codes[k] = (lc, index_in(qkeys[k], uniq), len(uniq))
    for c, a, b, _ in spec.crosses:
        (la, qa, _), (lb, qb, nb) = codes[a], codes[b]
        lc = np.where((la >= 0) & (lb >= 0), la * nb + lb, -1)
        qc = np.where((qa >= 0) & (qb >= 0), qa * nb + qb, -1)
        codes[c] = (lc, qc, 0)
    for k in spec.kinds:
        lc, qc, _ = codes[k]
        n, f = cumulative_asof(lc, l_day, [dn, df_], qc, q_day)
        counts[k] = (n, f)
    return profile_rates(counts, total_n, total_f, spec)


# --- incremental state -----------------------------------------------------------------------------------
def _kind_keys(df: pd.DataFrame, kind: str, spec: ProfileSpec = DEFAULT_PROFILES) -> pd.Series:
    crosses = spec.cross_map
    if kind in crosses:
        a, b, _ = crosses[kind]
        return df[a].astype("str") + "|" + df[b].astype("str")
    return df[kind].astype("str")


def _sum_counts(lab: pd.DataFrame, spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Totals of n_delta / fraud_delta per (kind, key), plus the global row."""
    frames = [pd.DataFrame({"kind": [_ALL], "key": [""], "n": [float(lab.n_delta.sum())],
                            "f": [float(lab.fraud_delta.sum())]})]
    crosses = spec.cross_map
    for kind in spec.kinds:
        key = _kind_keys(lab, kind, spec)
        if kind not in crosses:
            ok = (key.notna() & lab[kind].notna()).to_numpy()
        else:
            a, b, _ = crosses[kind]
            ok = (key.notna() & lab[a].notna() & lab[b].notna()).to_numpy()
        g = pd.DataFrame({"key": key[ok].to_numpy(), "n": lab.n_delta[ok].to_numpy(float),
                          "f": lab.fraud_delta[ok].to_numpy(float)}).groupby("key", sort=True).sum()
        frames.append(g.reset_index().assign(kind=kind)[["kind", "key", "n", "f"]])
    return pd.concat(frames, ignore_index=True)


def outcomes_fingerprint(outcomes: pd.DataFrame) -> str:
    """sha256 of the outcome records (id, item, result, report date), independent of row order and dtypes: the
    sorted 64-bit hashes of the rows (string columns hashed as they are: a Python-object copy and a string sort
    took three times as long, twice a day over every outcome)."""
    if outcomes.empty:
        return hashlib.sha256(b"").hexdigest()
    o = pd.DataFrame({
        "record_id": outcomes.record_id.astype("str"),
        "declaration_id": outcomes.declaration_id.astype("str"),
        "item_no": outcomes.item_no.astype("int64").to_numpy(),
        "result": outcomes.result.astype("str"),
        "reported_date": to_days(outcomes.reported_date),
    })
    return hashlib.sha256(np.sort(pd.util.hash_pandas_object(o, index=False).to_numpy()).tobytes()).hexdigest()


@dataclass
class ProfileState:
    """Profile counts as of the end of ``asof``: every outcome reported on or before that day."""

    asof: date
    counts: pd.DataFrame  # kind, key, n (inspections), f (frauds); kind "_all" holds the totals
    labels: pd.DataFrame  # declaration_id, item_no, fraud: the latest result of every reported item
    fingerprint: str  # of the outcomes reported by asof (see outcomes_fingerprint)
    n_records: int

    @classmethod
    def empty(cls, asof: date) -> ProfileState:
        return cls(asof, pd.DataFrame({"kind": pd.Series(dtype="str"), "key": pd.Series(dtype="str"),
                                       "n": pd.Series(dtype=float), "f": pd.Series(dtype=float)}),
                   pd.DataFrame({"declaration_id": pd.Series(dtype="str"), "item_no": pd.Series(dtype="int64"),
                                 "fraud": pd.Series(dtype=float)}),
                   outcomes_fingerprint(pd.DataFrame()), 0)

    def to_frame(self) -> pd.DataFrame:
        """One table: counts, then labels (kind _label: key = declaration, n = item, f = result), fingerprint."""
        labels = pd.DataFrame({"kind": _LABEL, "key": self.labels.declaration_id.astype("str"),
                               "n": self.labels.item_no.astype(float), "f": self.labels.fraud.astype(float)})
        fp = pd.DataFrame({"kind": [_FINGERPRINT], "key": [self.fingerprint], "n": [float(self.n_records)],
                           "f": [0.0]})
        out = pd.concat([self.counts, labels, fp], ignore_index=True)
        return out.astype({"kind": "str", "key": "str", "n": "float64", "f": "float64"})

    @classmethod
    def from_frame(cls, asof: date, t: pd.DataFrame) -> ProfileState:
        fp = t[t.kind == _FINGERPRINT]
        lab = t[t.kind == _LABEL]
        labels = pd.DataFrame({"declaration_id": lab.key.astype("str").to_numpy(),
                               "item_no": lab.n.astype("int64").to_numpy(), "fraud": lab.f.to_numpy(float)})
        counts = t[~t.kind.isin([_LABEL, _FINGERPRINT])].reset_index(drop=True)
        return cls(asof, counts, labels, str(fp.key.iloc[0]), int(fp.n.iloc[0]))


def _reported_by(outcomes: pd.DataFrame, asof: date) -> pd.DataFrame:
    if outcomes.empty:
        return outcomes
    return outcomes[to_days(outcomes.reported_date) <= to_days([asof])[0]]


def advance(state: ProfileState, outcomes: pd.DataFrame, customs: pd.DataFrame, asof: date,
            spec: ProfileSpec = DEFAULT_PROFILES) -> ProfileState:
    """The state as of ``asof``: ``state`` plus the outcomes reported after ``state.asof`` up to ``asof``.

    ``outcomes`` may hold any reports (earlier ones are ignored, later ones too); ``customs`` must hold
    the reported items (their entities).
    """
    if asof < state.asof:
        raise ValueError(f"cannot move a profile state back from {state.asof} to {asof}")
    known = _reported_by(outcomes, asof)
    fp, nrec = outcomes_fingerprint(known), len(known)
    if known.empty:
        return ProfileState(asof, state.counts, state.labels, fp, nrec)
    rd = to_days(known.reported_date)
    new = known[rd > to_days([state.asof])[0]]
    if new.empty:
        return ProfileState(asof, state.counts, state.labels, fp, nrec)
    prev = state.labels.set_index(["declaration_id", "item_no"]).fraud if len(state.labels) else None
    o = _report_deltas(new, prev)
    lab = attach_entities(o, customs, spec)
    delta = _sum_counts(lab, spec)
    counts = pd.concat([state.counts, delta], ignore_index=True).groupby(["kind", "key"], sort=True)[
        ["n", "f"]].sum().reset_index()
    latest = o.drop_duplicates(["declaration_id", "item_no"], keep="last")
    labels = pd.concat([state.labels, pd.DataFrame({
        "declaration_id": latest.declaration_id.astype("str").to_numpy(),
        "item_no": latest.item_no.astype("int64").to_numpy(), "fraud": latest.fraud.to_numpy(float)})],
        ignore_index=True).drop_duplicates(["declaration_id", "item_no"], keep="last")
    labels = labels.sort_values(["declaration_id", "item_no"], kind="stable").reset_index(drop=True)
    counts = counts.astype({"kind": "str", "key": "str", "n": "float64", "f": "float64"})
    return ProfileState(asof, counts, labels, fp, nrec)


def build_state(outcomes: pd.DataFrame, customs: pd.DataFrame, asof: date,
                spec: ProfileSpec = DEFAULT_PROFILES) -> ProfileState:
    """Full rebuild of the state as of ``asof`` from every outcome reported by then."""
    return advance(ProfileState.empty(date(1970, 1, 1)), outcomes, customs, asof, spec)


def state_features(items: pd.DataFrame, state: ProfileState, spec: ProfileSpec = DEFAULT_PROFILES) -> pd.DataFrame:
    """Profile features of items lodged on ``state.asof`` (what the daily scoring run uses)."""
    days = to_days(items.declaration_date)
    if len(days) and (days != to_days([state.asof])[0]).any():
        raise ValueError(f"profile state as of {state.asof} used for items of other days")
    n_items = len(items)
    c = state.counts
    tot = c[c.kind == _ALL]
    total_n = np.full(n_items, float(tot.n.sum()))
    total_f = np.full(n_items, float(tot.f.sum()))
    frame = pd.DataFrame(_item_keys(items, spec)).reset_index(drop=True)
    crosses = spec.cross_map
    counts = {}
    for kind in spec.kinds:
        ck = c[c.kind == kind]
        keys = _kind_keys(frame, kind, spec)
        if kind in crosses:
            a, b, _ = crosses[kind]
            keys = keys.where(frame[a].notna() & frame[b].notna())
        else:
            keys = keys.where(frame[kind].notna())
        pos = index_in(keys, pd.Index(ck.key.to_numpy(), dtype="str"))
        n = np.where(pos >= 0, ck.n.to_numpy()[pos.clip(0)] if len(ck) else 0.0, 0.0)
        f = np.where(pos >= 0, ck.f.to_numpy()[pos.clip(0)] if len(ck) else 0.0, 0.0)
        counts[kind] = (n, f)
    return profile_rates(counts, total_n, total_f, spec)


# --- persistence (the daily run) -------------------------------------------------------------------------
def _base(settings) -> Path:
    return Path(settings.gold) / "profiles"


def snapshot_dates(base: Path) -> list[date]:
    if not base.exists():
        return []
    return sorted(date.fromisoformat(p.name.split("=", 1)[1]) for p in base.glob("reported_date=*")
                  if (p / "part-0.parquet").exists())


def load_state(base: Path, asof: date) -> ProfileState:
    return ProfileState.from_frame(asof, pd.read_parquet(Path(base) / f"reported_date={asof}" / "part-0.parquet"))


def save_state(base: Path, state: ProfileState) -> Path:
    from sunat_pipeline.lake.store import partition, replace_partition

    return replace_partition(state.to_frame(), partition(base, "reported_date", state.asof))


def update_profiles(settings, day: date, outcomes: pd.DataFrame | None = None,
                    customs: pd.DataFrame | None = None) -> ProfileState:
    """The daily run: extend the latest earlier state by the outcomes reported since, persist it, return it.

    Falls back to a full rebuild when there is no earlier state or when the outcomes it was built from
    changed since (a late or corrected extract for an earlier reported date).
    """
    if outcomes is None or customs is None:
        from sunat_pipeline import ingest

        outcomes = ingest.silver(settings, "enforcement", upto=day) if outcomes is None else outcomes
        customs = ingest.silver(settings, "customs", upto=day) if customs is None else customs
    base = _base(settings)
    earlier = [d for d in snapshot_dates(base) if d < day]
    state = None
    if earlier:
        prev = load_state(base, earlier[-1])
        if prev.fingerprint == outcomes_fingerprint(_reported_by(outcomes, prev.asof)):
            state = advance(prev, outcomes, customs, day)
            log.info("profiles %s: extended the state of %s by %d outcome records", day, prev.asof,
                     state.n_records - prev.n_records)
        else:
            log.warning("profiles %s: outcomes reported by %s changed since its state was built: full rebuild",
                        day, prev.asof)
    if state is None:
        state = build_state(outcomes, customs, day)
        log.info("profiles %s: full rebuild from %d outcome records", day, state.n_records)
    save_state(base, state)
    newest = snapshot_dates(base)[-1]
    for d in snapshot_dates(base):
        if d < newest - timedelta(days=SNAPSHOT_KEEP_DAYS):
            shutil.rmtree(base / f"reported_date={d}", ignore_errors=True)
    return state
