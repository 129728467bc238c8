"""Policy backtest on an external labelled, timestamped extract (``sunat-pipeline backtest``; docs/backtest.md).

The protocol of the DATE/gATE simulations (Kim et al., TKDE 2022), run with the product's own parts:

1. the files are mapped to the canonical customs schema (``ingest.mapping``) and put in time order; weeks are
   7-day blocks from the first day; the first ``labelled_weeks`` weeks are fully labelled (the history an
   administration starts from);
2. then week by week, for each policy separately (each has its own label set): retrain ``RiskModel`` on every
   label the policy knows (the initial weeks and what it selected before) with the training settings'
   parameters (no search: one a week would cost more than the whole backtest); build the week's features with
   the production builder, point in time (declarations lodged before each item's day, the outcomes the policy
   knows, reported the day after the declaration as in ``evaluate``); score with the model or the rules engine
   (``selection.scorer``) and select ``capacity`` of the week's declarations with the production
   ``select_channels`` and the policy's settings (mandatory rules, random quota, exploitation, exploration);
3. reveal the labels of the selected declarations only (every item of each); with learned rule weights, fold
   them into the policy's next weights version (the production feedback's ``weights.derive``);
4. measure (``backtest.measures``) against all of the week's labels, which no policy saw.

Capacity is one pool for the week, ``capacity`` x its declarations whatever the office, as in the simulations
(per office, small offices would round to zero or one inspection a week and the comparison would measure the
rounding); 40% RED and 60% YELLOW (``policies.RED_SHARE_OF_CAPACITY``), which reveals the same labels. The rules
engine runs with the rules whose fields the extract has (declared columns the mapping fills, features whose
inputs exist); the others are listed, and a rules-scored policy without a usable rule is reported as not
evaluable instead of run. The freshly trained model scores every week: the production promotion gate
(champion against challenger) is not replayed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.backtest.measures import pooled, top_k_precision, week_measures
from sunat_pipeline.backtest.policies import RED_SHARE_OF_CAPACITY, Policy, apply, capacity_overlay, load_policy
from sunat_pipeline.features.build import build_features, item_frame
from sunat_pipeline.features.catalog import FeatureSpec, absent_features, catalog
from sunat_pipeline.feedback.weights import INITIAL, derive, load_version, write_version
from sunat_pipeline.ingest.mapping import LABEL, Mapping, load_mapping
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.modeling.evaluate import (
    REPORT_DELAY_DAYS,
    _read,
    available_inputs,
    feature_spec,
    outcomes_from_labels,
)
from sunat_pipeline.modeling.model import RiskModel, resolve_device
from sunat_pipeline.selection.rules import RuleSet, evaluate, load_rules, rules_prediction, summarise
from sunat_pipeline.selection.select import item_embedding, rollup, select_channels
from sunat_pipeline.settings import OfficeCapacity, Settings, get_settings

log = logging.getLogger(__name__)
POOL = "*"  # the one capacity pool of a week (stands in for the office in select_channels)
DEFAULT_POLICIES = ("random", "exploit", "hybrid")
OK, PARTIAL, NOT_EVALUABLE = "ok", "partial_rules", "not_evaluable"


@dataclass
class Extract:
    """The mapped, time-ordered rows of the data files and what the product can compute on them."""

    mapping: Mapping
    items: pd.DataFrame  # canonical columns + label, sorted by date (stable)
    week: np.ndarray  # week index of each row (7-day blocks from first_day)
    first_day: date
    labelled_weeks: int
    spec: FeatureSpec
    names: list[str]  # columns of the feature matrix
    model_names: list[str]  # those the model sees (inputs present, not excluded by the mapping)
    absent: dict[str, list[str]]
    usable: RuleSet  # rules whose fields all exist in the extract
    unusable: dict[str, list[str]]  # rule id -> fields the extract lacks
    n_rules: int
    inputs: list[dict]

    def week_start(self, w: int) -> date:
        return self.first_day + timedelta(days=7 * int(w))

    @property
    def backtest_weeks(self) -> list[int]:
        return sorted(int(w) for w in np.unique(self.week) if w >= self.labelled_weeks)


def usable_rules(rules: RuleSet, mapping: Mapping, spec: FeatureSpec, items: pd.DataFrame
                 ) -> tuple[RuleSet, dict[str, list[str]]]:
    """The rules whose every field the extract has: a declared column the mapping fills (not all empty), or a
    feature whose inputs exist; and, for the others, the fields missing. A missing field is not "false": a
    ``permit_valid ne 1`` rule would hit every item of an extract without a permit register."""
    feats = catalog(spec)
    absent = absent_features(feats, available_inputs(mapping))
    declared = {*mapping.columns, "item_no", *mapping.extra_columns}
    have = {c for c in declared if c in items and items[c].notna().any()} | {f.name for f in feats
                                                                            if f.name not in absent}
    missing = {r.id: sorted({dict(c)["field"] for c in r.when} - have) for r in rules.rules}
    missing = {k: v for k, v in missing.items() if v}
    return RuleSet(areas=rules.areas, rules=[r for r in rules.rules if r.id not in missing]), missing


def load_extract(mapping_path: str | Path, data_paths: Sequence[str | Path], labelled_weeks: int,
                 settings: Settings) -> Extract:
    if labelled_weeks < 1:
        raise ValueError("--labelled-weeks must be at least 1: the first model needs labels")
    mapping = load_mapping(mapping_path)
    items, info = _read([Path(p) for p in data_paths], mapping)
    items = items.sort_values("declaration_date", kind="stable").reset_index(drop=True)
    days = pd.to_datetime(items.declaration_date)
    spans = days.groupby(items.declaration_id).nunique()
    if (spans > 1).any():
        log.warning("%d declaration ids occur on more than one day", int((spans > 1).sum()))
    first = days.min().date()
    week = ((days - days.min()).dt.days // 7).to_numpy()
    init = week < labelled_weeks
    if items.loc[init, LABEL].nunique() < 2:
        raise ValueError(f"the first {labelled_weeks} weeks need both fraud and non-fraud rows")
    if not (week >= labelled_weeks).any():
        raise ValueError(f"the data span {int(week.max()) + 1} weeks: nothing left after {labelled_weeks} "
                         "labelled weeks")
    spec = feature_spec(mapping)
    feats = catalog(spec)
    absent = absent_features(feats, available_inputs(mapping))
    names = [f.name for f in feats]
    model_names = [c for c in names if c not in absent and c not in mapping.exclude_features]
    usable, unusable = usable_rules(load_rules(settings.rules_path), mapping, spec, items)
    log.info("backtest extract %s: %d rows in %d weeks from %s (%d labelled); %d model features; %d of %d rules "
             "usable", mapping.name, len(items), int(week.max()) + 1, first, int(init.sum()), len(model_names),
             len(usable.rules), len(usable.rules) + len(unusable))
    return Extract(mapping=mapping, items=items, week=week, first_day=first, labelled_weeks=labelled_weeks,
                   spec=spec, names=names, model_names=model_names, absent=absent, usable=usable,
                   unusable=unusable, n_rules=len(usable.rules) + len(unusable), inputs=info)


def _no_source(source: str) -> pd.DataFrame:
    return pd.DataFrame(columns=list(SOURCES[source].columns))


def week_features(ext: Extract, settings: Settings, rows: np.ndarray, known: np.ndarray) -> pd.DataFrame:
    """Production features of ``rows`` (contiguous, time-ordered) as the policy knew them: every declaration
    lodged before each row's day, and the outcomes of the ``known`` rows (reported the day after)."""
    items = ext.items
    return build_features(items.iloc[rows], customs_history=items.iloc[: int(rows[-1]) + 1],
                          outcomes=outcomes_from_labels(items.iloc[known], REPORT_DELAY_DAYS),
                          reference=_no_source("reference_prices"), tax=_no_source("tax"),
                          fx=_no_source("exchange_rates"), taxes=settings.tax, spec=ext.spec)


class _RuleWeights:
    """The weights a policy's rules score with: the rules file's, or versions learned from the outcomes the policy
    has seen (the production feedback's Beta-Bernoulli ``derive``; versions kept in a throw-away lake)."""

    def __init__(self, settings: Settings, learned: bool, lake: Path):
        self.settings = apply(settings, {"lake_root": str(lake)})
        self.learned = learned
        self.version = INITIAL
        self.weights = load_version(self.settings, INITIAL)["weights"]

    def fold(self, day: date, rule_hits: Sequence[list[str]], labels: np.ndarray, dates: Sequence) -> None:
        if not self.learned or not len(labels):
            return
        added = pd.DataFrame({"rule_hits": list(rule_hits), "declaration_date": list(dates),
                              "result": np.where(np.asarray(labels) == 1, "FRAUD", "CLEAN")})
        version = f"rw-{day.isoformat()}"
        weights, evidence, _, method = derive(self.settings, day, self.version, added, added.iloc[:0])
        write_version(self.settings, {"version": version, "date": day.isoformat(), "previous": self.version,
                                      "weights": weights, "evidence": evidence, "outcomes_used": len(added),
                                      "method": method})
        self.version, self.weights = version, weights


def feasibility(ext: Extract, s: Settings) -> tuple[str, list[str]]:
    """(status, notes): whether the policy can run on this extract, and what it runs without."""
    sel, notes = s.selection, []
    all_random = _all_random(s)
    if all_random:
        notes.append("every selection is random: the scorer plays no part")
    missing = "; ".join(f"{r} ({', '.join(f)})" for r, f in ext.unusable.items())
    if sel.scorer == "model" and not s.training.enabled and not all_random:
        return NOT_EVALUABLE, [*notes, "the policy scores with the model but training.enabled is false"]
    status = OK
    if sel.scorer == "rules" and not all_random:
        if not ext.usable.rules:
            return NOT_EVALUABLE, [*notes, f"the rules cannot be evaluated on this extract: no rule has all its "
                                           f"fields here (missing: {missing})"]
        if ext.unusable:
            status = PARTIAL
            notes.append(f"the rules engine runs with {len(ext.usable.rules)} of {ext.n_rules} rules "
                         f"({', '.join(ext.usable.ids)}); not evaluable on this extract: {missing}")
    mand = sorted(r for r in ext.unusable if r in _mandatory_ids(s))
    if sel.mandatory_rules and mand:
        notes.append(f"mandatory rules not evaluable on this extract (their fields are missing): {', '.join(mand)}")
    return status, notes


def _all_random(s: Settings) -> bool:
    return s.selection.random_share >= 1 and not s.selection.mandatory_rules


def _mandatory_ids(s: Settings) -> set[str]:
    return {r.id for r in load_rules(s.rules_path).rules if r.mandatory}


def _week_capacity(n_declarations: int, capacity: float) -> tuple[int, OfficeCapacity]:
    k = max(1, int(np.floor(capacity * n_declarations + 0.5)))
    red = int(np.floor(RED_SHARE_OF_CAPACITY * k + 0.5))
    return k, OfficeCapacity(red=red, yellow=k - red)


def run_policy(ext: Extract, settings: Settings, policy: Policy, *, capacity: float, seed: int,
               bag_size: int | None = None, n_jobs: int = 2, max_weeks: int | None = None,
               progress: Callable[[str], None] | None = None, keep_selected: bool = False,
               reveal_all: bool = False) -> dict:
    """One policy through the weekly protocol (module docstring); the record of ``run_backtest``'s JSON.

    ``reveal_all`` (a diagnostic, not a policy): after each week every label of the week is revealed, as if all
    had been inspected; the policy still selects as configured. Its precision is what the model could reach with
    full information, so the gap to the real run is what labelling only the selected costs."""
    t0 = time.time()
    say = progress or log.info
    s = apply(settings, policy, cap=capacity_overlay(capacity))
    sel, tr = s.selection, s.training
    rec = {"name": policy.name, "description": policy.description, "path": policy.path,
           "settings": {"selection": {k: getattr(sel, k) for k in (
               "scorer", "rule_weights", "mandatory_rules", "random_share", "exploration_share",
               "exploitation_revenue_share", "exploration_pool")}, "training": {"enabled": tr.enabled}}}
    status, notes = feasibility(ext, s)
    if reveal_all:
        notes = [*notes, "diagnostic: every label of each week is revealed after it, not only the selected"]
    rec.update(status=status, notes=notes, reveal="all" if reveal_all else "selected")
    if status == NOT_EVALUABLE:
        say(f"{policy.name}: not evaluated: {'; '.join(notes)}")
        return {**rec, **{k: None for k in ("precision", "recall", "norm_precision")}, "n_selected": 0,
                "n_weeks": 0, "weeks": [], "seconds": round(time.time() - t0, 1)}
    by_model = sel.scorer == "model"
    rec["rules_used"] = ext.usable.ids
    items, week = ext.items, ext.week
    y = items[LABEL].to_numpy(dtype=np.int64)
    F = np.full((len(items), len(ext.names)), np.nan)  # each row's features as the policy had them when scored
    hits_of = np.empty(len(items), dtype=object)  # the rules each row hit when scored (for learned weights)
    known = week < ext.labelled_weeks
    init = np.flatnonzero(known)
    cols = [ext.names.index(c) for c in ext.model_names]
    params = {**tr.model_params(), "bag_size": tr.bag_size if bag_size is None else bag_size, "seed": seed,
              "device": resolve_device(tr.device), "n_jobs": n_jobs}
    todo = ext.backtest_weeks[:max_weeks] if max_weeks else ext.backtest_weeks
    weeks: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sunat-backtest-") as tmp:
        rw = _RuleWeights(s, sel.rule_weights == "learned", Path(tmp))
        X0 = week_features(ext, s, init, init)
        F[init] = X0.to_numpy()
        _put(hits_of, init, _rules(ext.usable, item_frame(items.iloc[init], X0), rw.weights)[1].rule_hits)
        rw.fold(ext.week_start(ext.labelled_weeks) - timedelta(days=1), hits_of[init], y[init],
                items.declaration_date.to_numpy()[init])
        for k, w in enumerate(todo, 1):
            tw = time.time()
            idx, day = np.flatnonzero(week == w), ext.week_start(w)
            train = np.flatnonzero(known)
            X = week_features(ext, s, idx, train)
            F[idx] = X.to_numpy()
            wk = items.iloc[idx].reset_index(drop=True)
            frame = item_frame(wk, X)
            hits, rs = _rules(ext.usable, frame, rw.weights)
            if by_model:
                model = RiskModel(**params).fit(pd.DataFrame(F[train][:, cols], columns=ext.model_names), y[train])
                pred = model.predict(X[ext.model_names])
            else:
                pred = rules_prediction(ext.usable, hits, rw.weights, frame)
            scored = pd.concat([wk.assign(customs_office=POOL), pred, rs], axis=1)
            decl = rollup(scored, embedding=item_embedding(X[ext.model_names], wk))
            n_cap, cap = _week_capacity(len(decl), capacity)
            out = select_channels(decl, sel, day, seed, capacity={POOL: cap})
            chosen = out.channel.to_numpy() != "GREEN"
            # Only now are labels read: those of the selected declarations join what the policy knows.
            rev = idx if reveal_all else idx[wk.declaration_id.isin(set(out.declaration_id[chosen])).to_numpy()]
            known[rev] = True
            _put(hits_of, idx, rs.rule_hits)
            rw.fold(day + timedelta(days=6), hits_of[rev], y[rev], items.declaration_date.to_numpy()[rev])
            fraud = pd.Series(y[idx]).groupby(wk.declaration_id.to_numpy()).max().reindex(out.declaration_id)
            m = week_measures(fraud.to_numpy(), chosen, out.selection_reason.to_numpy())
            weeks.append({"week_start": day.isoformat(), "n_items": len(idx), **m, "capacity": n_cap,
                          "top_k_precision": None if _all_random(s) else top_k_precision(
                              fraud.to_numpy(), out.fraud_probability.to_numpy(), n_cap),
                          "n_train_labels": len(train), "n_revealed": len(rev), "seconds": round(time.time() - tw, 2),
                          **({"selected": sorted(map(str, out.declaration_id[chosen]))} if keep_selected else {})})
            run = pooled(weeks)
            say(f"{policy.name}: week {k}/{len(todo)} {day}: {m['n_selected']} selected, precision "
                f"{_fmt(m['precision'])}; running precision {_fmt(run['precision'])} ({time.time() - tw:.1f} s)")
    if sel.rule_weights == "learned" and rw.version != INITIAL:
        rec["rule_weights"] = {"version": rw.version, "weights": {r: rw.weights[r] for r in ext.usable.ids}}
    return {**rec, **pooled(weeks), "seconds": round(time.time() - t0, 1), "weeks": weeks}


def _rules(rules: RuleSet, frame: pd.DataFrame, weights: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rules engine's hits and per-item summary; without a usable rule, no hits (``summarise`` needs one)."""
    if rules.rules:
        hits = evaluate(rules, frame)
        return hits, summarise(rules, hits, weights, frame)
    n = len(frame)
    return pd.DataFrame(index=frame.index), pd.DataFrame({
        "rule_score": np.zeros(n), "rule_hits": [[] for _ in range(n)], "mandatory": np.zeros(n, dtype=bool),
        "rule_reasons": [[] for _ in range(n)]}, index=frame.index)


def _put(arr: np.ndarray, rows: np.ndarray, values) -> None:
    """Element by element: numpy would read a list of equally long lists as a 2-D block."""
    for i, v in zip(rows, values, strict=True):
        arr[i] = v


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def run_backtest(mapping_path: str | Path, data_paths: Sequence[str | Path], policies: Sequence[str] = DEFAULT_POLICIES,
                 *, labelled_weeks: int = 4, capacity: float = 0.10, seed: int | None = None,
                 settings: Settings | None = None, bag_size: int | None = None, n_jobs: int = 2,
                 max_weeks: int | None = None, progress: Callable[[str], None] | None = None,
                 keep_selected: bool = False, reveal_all: bool = False) -> dict:
    """Every policy through the weekly protocol on the same extract; the JSON of ``sunat-pipeline backtest``."""
    t0 = time.time()
    settings = settings or get_settings()
    seed = settings.seed if seed is None else seed
    capacity_overlay(capacity)  # a bad share fails before any work
    pols = [load_policy(settings, p) for p in policies]
    dup = sorted({p.name for p in pols if [q.name for q in pols].count(p.name) > 1})
    if dup:
        raise ValueError(f"policies named twice: {dup}")
    ext = load_extract(mapping_path, data_paths, labelled_weeks, settings)
    tr = settings.training
    todo = ext.backtest_weeks[:max_weeks] if max_weeks else ext.backtest_weeks
    out = {
        "mapping": ext.mapping.name,
        "inputs": ext.inputs,
        "protocol": {
            "labelled_weeks": labelled_weeks, "capacity": capacity, "seed": seed,
            "weeks": "7-day blocks from the first day of the data", "first_day": ext.first_day.isoformat(),
            "labelled_until": (ext.week_start(labelled_weeks) - timedelta(days=1)).isoformat(),
            "n_backtest_weeks": len(ext.backtest_weeks), "n_weeks_run": len(todo),
            "unit": "declaration (a fraud when any of its items is)",
            "capacity_pool": "the week's declarations, one pool whatever the office",
            "red_share_of_capacity": RED_SHARE_OF_CAPACITY, "report_delay_days": REPORT_DELAY_DAYS,
            "retraining": "every week, on every label the policy knows",
            "reveal": "all (diagnostic)" if reveal_all else "the selected declarations' labels only",
            "model": {"class": "sunat_pipeline.modeling.model.RiskModel", "params": tr.model_params(),
                      "bag_size": tr.bag_size if bag_size is None else bag_size, "n_jobs": n_jobs,
                      "search": "none: the training settings' parameters"},
        },
        "features": {"n_model_features": len(ext.model_names), "absent": sorted(ext.absent),
                     "excluded": list(ext.mapping.exclude_features)},
        "rules": {"file": str(settings.rules_path), "usable": ext.usable.ids, "not_evaluable": ext.unusable},
        "policies": {},
    }
    for pol in pols:
        out["policies"][pol.name] = run_policy(ext, settings, pol, capacity=capacity, seed=seed, bag_size=bag_size,
                                               n_jobs=n_jobs, max_weeks=max_weeks, progress=progress,
                                               keep_selected=keep_selected, reveal_all=reveal_all)
    base = (out["policies"].get("random") or {}).get("precision")
    for rec in out["policies"].values():
        rec["lift_over_random"] = round(rec["precision"] / base, 4) if base and rec["precision"] is not None \
            else None
    out["seconds"] = round(time.time() - t0, 1)
    return out


def summary_lines(result: dict) -> list[str]:
    """The result as a small table (what the command prints at the end)."""
    lines = [f"{'policy':<20} {'precision':>9} {'recall':>7} {'norm_prec':>9} {'selected':>8} {'weeks':>5} "
             f"{'lift':>5} {'seconds':>7}  status"]
    for name, r in result["policies"].items():
        lift = r.get("lift_over_random")
        lines.append(f"{name:<20} {_fmt(r['precision']):>9} {_fmt(r['recall']):>7} {_fmt(r['norm_precision']):>9} "
                     f"{r['n_selected']:>8} {r['n_weeks']:>5} {'' if lift is None else f'{lift:.2f}':>5} "
                     f"{r['seconds']:>7.0f}  {r['status']}")
    return lines
