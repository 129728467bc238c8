"""Rules engine: declarative risk rules (config/rules.yaml) evaluated on items and their features."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

_OPS = {
    "eq": lambda s, v: s == v, "ne": lambda s, v: s != v, "lt": lambda s, v: s < v, "le": lambda s, v: s <= v,
    "gt": lambda s, v: s > v, "ge": lambda s, v: s >= v, "in": lambda s, v: s.isin(v),
    "not_in": lambda s, v: ~s.isin(v),
    "prefix_in": lambda s, v: s.astype(str).str.startswith(tuple(str(x) for x in v)),
}


_REQUIRED = ("id", "area", "name", "weight", "when", "reason")


@dataclass(frozen=True)
class Rule:
    id: str
    area: str
    name: str
    weight: float
    when: tuple
    reason: str
    mandatory: bool = False


@dataclass
class RuleSet:
    areas: dict[str, str]
    rules: list[Rule] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rules]

    def initial_weights(self) -> dict[str, float]:
        return {r.id: r.weight for r in self.rules}

    def by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.rules}


# The rule file's text -> its parsed rules: scoring and feedback read the file several times a day, and parsing
# it is most of the cost. Keyed by the text itself, so an edited file is parsed again.
_PARSED: dict[str, RuleSet] = {}


def load_rules(path: Path) -> RuleSet:
    text = Path(path).read_text()
    known = _PARSED.get(text)
    if known is None:
        known = _parse(text)
        _PARSED.clear()  # one rule file in use at a time; a changed one replaces it
        _PARSED[text] = known
    return RuleSet(areas=dict(known.areas), rules=list(known.rules))  # the caller's own copy


def _parse(text: str) -> RuleSet:
    spec = yaml.safe_load(text)
    rules = []
    for r in spec["rules"]:
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(f"rule {r.get('id', '?')}: missing {', '.join(missing)}")
        if not 0 <= float(r["weight"]) <= 1:
            raise ValueError(f"rule {r['id']}: weight {r['weight']} is not in [0, 1]")
        if not str(r["reason"]).strip():
            raise ValueError(f"rule {r['id']}: a rule needs a plain-language reason")
        for c in r["when"]:
            if c["op"] not in _OPS:
                raise ValueError(f"rule {r['id']}: unknown op {c['op']!r}")
        if r["area"] not in spec["areas"]:
            raise ValueError(f"rule {r['id']}: unknown area {r['area']!r}")
        rules.append(Rule(id=r["id"], area=r["area"], name=r["name"], weight=float(r["weight"]),
                          when=tuple(tuple(sorted(c.items())) for c in r["when"]), reason=r["reason"],
                          mandatory=bool(r.get("mandatory", False))))
    if len({r.id for r in rules}) != len(rules):
        raise ValueError("duplicate rule ids in rules file")
    return RuleSet(areas=spec["areas"], rules=rules)


def evaluate(rules: RuleSet, frame: pd.DataFrame) -> pd.DataFrame:
    """Boolean hit matrix (items x rule ids). ``frame`` holds item columns and features together."""
    hits = {}
    for r in rules.rules:
        mask = pd.Series(True, index=frame.index)
        for cond in r.when:
            c = dict(cond)
            if c["field"] not in frame.columns:
                raise KeyError(f"rule {r.id}: field {c['field']!r} not in the item frame")
            mask &= _OPS[c["op"]](frame[c["field"]], c["value"]).fillna(False).astype(bool)
        hits[r.id] = mask.to_numpy()
    return pd.DataFrame(hits, index=frame.index)


def summarise(rules: RuleSet, hits: pd.DataFrame, weights: dict[str, float], frame: pd.DataFrame) -> pd.DataFrame:
    """Per item: rule_score (sum of hit weights), rule_hits (ids), mandatory flag and reason texts."""
    ids = np.array(rules.ids)
    w = np.array([weights.get(i, 0.0) for i in ids])
    mand = np.array([r.mandatory for r in rules.rules])
    h = hits[list(ids)].to_numpy()
    by_id = rules.by_id()
    hit_lists = [list(ids[row]) for row in h]
    reasons = [[] for _ in hit_lists]
    hit_rows = np.flatnonzero(h.any(axis=1))  # only items a rule hit need their values in words
    for k, rec in zip(hit_rows, frame.iloc[hit_rows].to_dict("records"), strict=True):
        reasons[k] = [f"rule {i}: " + by_id[i].reason.format_map(_Fmt(rec)) for i in hit_lists[k]]
    return pd.DataFrame({
        "rule_score": (h * w).sum(axis=1).round(6),
        "rule_hits": hit_lists,
        "mandatory": (h & mand).any(axis=1),
        "rule_reasons": reasons,
    }, index=frame.index)


class _Fmt(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def rules_prediction(rules: RuleSet, hits: pd.DataFrame, weights: dict[str, float], frame: pd.DataFrame,
                     mandatory: bool = True) -> pd.DataFrame:
    """The rules alone as a scorer (``selection.scorer: rules``), in the model's prediction columns.

    A rule's weight estimates its precision, so an item's fraud probability is the noisy-OR of the weights of
    the rules it hits (1 - prod(1 - w)); with ``mandatory`` off (a random baseline) mandatory hits count like
    any rule. The rules do not estimate revenue: what a fraud would cost is taken as the taxes declared on the
    item (duty, IGV and IPM on CIF), so expected revenue still orders larger declarations first. No spread of
    opinion: uncertainty 0."""
    ids = rules.ids
    w = np.array([weights.get(i, 0.0) for i in ids]).clip(0, 0.999)
    h = hits[list(ids)].to_numpy(dtype=bool)
    p = 1 - np.exp((h * np.log1p(-w)).sum(axis=1)) if len(ids) else np.zeros(len(frame))
    cif = pd.to_numeric(frame.get("cif_usd", pd.Series(0.0, index=frame.index)), errors="coerce").fillna(0)
    rate = pd.to_numeric(frame.get("taxes_over_cif", pd.Series(0.0, index=frame.index)), errors="coerce").fillna(0)
    rev = (cif * rate).to_numpy(dtype=float).clip(0)
    return pd.DataFrame({"fraud_probability": p.round(6), "revenue_if_fraud_usd": rev.round(2),
                         "expected_revenue_usd": (p * rev).round(2), "uncertainty": np.zeros(len(frame))},
                        index=frame.index)
