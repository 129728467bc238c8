"""Learned rule weights steer selection: the model and the rules stacked in log-odds (feedback/stacking.py).

The end-to-end tests land outcomes that raise (or lower) one non-mandatory rule's hit rate, fold them in
through the day's feedback and score the next day: the rule's matches move up (or down) the ranking."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tinyworld import SHORT_WORLD, lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import stacking
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.modeling.model import RiskModel
from sunat_pipeline.selection import output, score
from sunat_pipeline.selection.rules import Rule, RuleSet
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings, get_settings

# A weak prior on rule weights (one pseudo-inspection), so the day's outcomes outweigh the legacy history and
# move the rule's weight far enough for its matches to change places in a 55-declaration day.
FB = {"prior_hits": 0.2, "prior_misses": 0.8, "max_step": 1.0}
SEL = SelectionSettings(default_capacity=OfficeCapacity(red=2, yellow=3), random_share=0.0, exploration_share=0.0)


def _rules() -> RuleSet:
    mk = lambda i, area: Rule(id=i, area=area, name=i, weight=0.3, when=(), reason=i)  # noqa: E731
    return RuleSet(areas={"revenue": "", "drugs": ""}, rules=[mk("R1", "revenue"), mk("R2", "revenue"),
                                                               mk("D1", "drugs")])


# --- the maths ---------------------------------------------------------------------------------------------

def test_area_evidence_is_zero_without_hits_and_grows_with_each_hit_and_weight():
    rs = _rules()
    ev = stacking.area_evidence(rs, [[], ["R1"], ["R1", "R2"], ["D1"], None], {"R1": 0.3, "R2": 0.5, "D1": 0.9})
    assert ev.loc[0].sum() == 0 and ev.loc[4].sum() == 0
    assert ev.revenue[1] == pytest.approx(-np.log(0.7))
    assert ev.revenue[2] == pytest.approx(-np.log(0.7) - np.log(0.5))
    assert ev.drugs[3] == pytest.approx(-np.log(0.1)) and ev.revenue[3] == 0


def test_a_higher_rule_weight_raises_only_its_matches():
    rs, settings = _rules(), get_settings()
    stack = stacking.prior(settings, rs)
    p_model = np.array([0.1, 0.1, 0.4])
    hits = [["R1"], [], ["R2"]]
    lo = stacking.risk_score(stack, p_model, stacking.area_evidence(rs, hits, {"R1": 0.1, "R2": 0.3}))
    hi = stacking.risk_score(stack, p_model, stacking.area_evidence(rs, hits, {"R1": 0.8, "R2": 0.3}))
    assert hi[0] > lo[0] and hi[1] == lo[1] == pytest.approx(0.1) and hi[2] == lo[2]
    # the model alone ties items 0 and 1; R1's evidence puts its match first
    assert hi[0] > hi[1]


def _synthetic_rows(rng, n, rule_lift):
    """Inspected items: the model's logit, a revenue rule hit on a third of them whose true effect on the
    log-odds is ``rule_lift``."""
    z = rng.normal(-1.5, 1.0, n)
    hit = rng.random(n) < 1 / 3
    y = rng.random(n) < 1 / (1 + np.exp(-(z + rule_lift * hit)))
    return pd.DataFrame({"declaration_id": [f"d{i}" for i in range(n)], "item_no": 1,
                         "model_fraud_probability": 1 / (1 + np.exp(-z)),
                         "rule_hits": [["R1"] if h else [] for h in hit],
                         "rule_weights_version": rule_weights.INITIAL, "selection_probability": 1.0,
                         "y": y.astype(float)})


@pytest.mark.parametrize("lift", [2.0, -2.0])
def test_the_fit_learns_an_areas_weight_from_outcomes_and_keeps_its_floor(monkeypatch, lift):
    rs, settings = _rules(), get_settings()
    rows = _synthetic_rows(np.random.default_rng(1), 3000, lift)
    monkeypatch.setattr(stacking, "_training_rows", lambda *a: rows)
    monkeypatch.setattr(rule_weights, "load_version", lambda s, v: {"weights": {"R1": 0.3, "R2": 0.3, "D1": 0.3}})
    st = stacking.fit(settings, None, None, rs)
    assert st["fitted"] and st["n"] == 3000
    c, c0, floor = st["areas"]["revenue"], settings.feedback.stack_rule_prior, settings.feedback.stack_rule_min
    if lift > 0:  # a hit of weight 0.3 is 0.36 of evidence: a lift of 2 log-odds needs c about 5.6 (bounded at 5)
        assert c > 3
    else:
        assert c == pytest.approx(floor)
    assert st["areas"]["drugs"] == pytest.approx(c0, abs=1e-3)  # no evidence: stays at the prior
    assert 0.8 < st["model"] < 1.2


def test_too_few_outcomes_give_the_prior(monkeypatch):
    rs, settings = _rules(), get_settings()
    rows = _synthetic_rows(np.random.default_rng(2), 50, 2.0)
    monkeypatch.setattr(stacking, "_training_rows", lambda *a: rows)
    st = stacking.fit(settings, None, None, rs)
    assert not st["fitted"] and st["n"] == 50 and st["areas"] == stacking.prior(settings, rs)["areas"]


# --- end to end: outcomes -> feedback -> the next day's ranking --------------------------------------------

@pytest.fixture(scope="module")
def scored_d1(tiny_world, tmp_path_factory):
    """The short world ingested up to its second live day; D1 scored by a small model trained on the legacy
    labels (handed to scoring in place of the MLflow champion, as in test_audit)."""
    d1, d2 = SHORT_WORLD.live_dates[:2]
    s = tiny_world(SHORT_WORLD, upto=d2).copy(tmp_path_factory.mktemp("stack"), selection=SEL)
    X, meta = train.training_set(s, d1)
    model = RiskModel(n_estimators=30, max_depth=4, bag_size=2).fit(X, meta.y, meta.revenue)
    mp = pytest.MonkeyPatch()
    mp.setattr(registry, "champion", lambda settings, load=True: (SimpleNamespace(version="1"), model))
    mp.setattr(registry, "load_version", lambda settings, version: model)
    score.score_day(s, d1)
    yield SimpleNamespace(s=s, d1=d1, d2=d2, tiny=tiny_world)
    mp.undo()


def _busiest_rule(settings, day) -> str:
    """The non-mandatory rule with the most matches on ``day``."""
    from sunat_pipeline.selection.rules import load_rules

    mand = {r.id for r in load_rules(settings.rules_path).rules if r.mandatory}
    hits = output.read_scored(settings, upto=day, since=day).rule_hits.explode().dropna()
    counts = hits[~hits.isin(mand)].value_counts()
    assert len(counts), "the fixture world should hit a non-mandatory rule"
    return str(counts.index[0])


def _next_day_ranks(w, tmp_path_factory, rule: str, result: str | None) -> tuple[pd.DataFrame, float]:
    """A copy of the lake; outcomes reported on D1 for every D1 item the rule alone hits (``result``, or none);
    D1's feedback, then D2 scored. Returns D2's declarations with their rank in their office and whether
    the rule hit them, and the rule's weight in D1's version."""
    s = lake_settings(tmp_path_factory.mktemp(f"stack_{result}"), selection=SEL, feedback=FB)
    shutil.copytree(w.s.lake, s.lake)
    if result is not None:
        d1 = output.read_scored(s, upto=w.d1, since=w.d1)
        m = d1[d1.rule_hits.apply(lambda h: list(h) == [rule])]  # only this rule's weight may move
        rec = pd.DataFrame({
            "record_id": [f"T-{i}" for i in range(len(m))], "declaration_id": m.declaration_id.to_numpy(),
            "item_no": m.item_no.to_numpy(), "inspection_date": w.d1, "channel": "YELLOW", "result": result,
            "offence_code": "UNDERVALUATION" if result == "FRAUD" else "",
            "revenue_recovered_usd": 100.0 if result == "FRAUD" else 0.0, "penalty_usd": 0.0,
            "reported_date": w.d1, "officer_id": "OF1"})
        path = s.landing / "enforcement" / f"enforcement__{w.d1}__test.csv"
        atomic_write_bytes(path, rec.to_csv(index=False, lineterminator="\n").encode())
        out = ingest.ingest_source(s, "enforcement", w.d1)
        assert [o.status for o in out if o.name == path.name] == ["accepted"], out
    feedback.update(s, w.d1)
    score.score_day(s, w.d2)
    d2 = output.read_scored(s, upto=w.d2, since=w.d2)
    hit = d2.groupby("declaration_id").rule_hits.agg(lambda x: any(rule in list(h) for h in x))
    lq = lambda c: np.log1p(-d2[c].astype(float).clip(0, 0.999999))  # noqa: E731  (noisy-OR roll-up)
    g = d2.assign(_m=lq("model_fraud_probability"), _p=lq("fraud_probability")).groupby("declaration_id")
    decl = pd.DataFrame({"office": g.customs_office.first(), "p": 1 - np.exp(g._p.sum()),
                         "p_model": 1 - np.exp(g._m.sum()), "hit": hit,
                         "any_hit": g.rule_hits.agg(lambda x: any(len(h) for h in x))})
    office = decl.groupby("office")
    decl["rank"] = office.p.rank(ascending=False, method="first")
    decl["rank_model"] = office.p_model.rank(ascending=False, method="first")
    rules_part = (_logit(d2.fraud_probability) - _logit(d2.model_fraud_probability)).groupby(d2.declaration_id).max()
    return decl.assign(rules_part=rules_part), rule_weights.load_version(s, f"rw-{w.d1}")["weights"][rule]


def _logit(p):
    p = np.clip(p.astype(float).to_numpy(), 1e-6, 1 - 1e-6)
    return pd.Series(np.log(p / (1 - p)), index=p.index if hasattr(p, "index") else None)


def test_outcomes_that_raise_or_lower_a_rules_hit_rate_move_its_matches_up_or_down(scored_d1, tmp_path_factory):
    w = scored_d1
    rule = _busiest_rule(w.s, w.d1)
    base, w_base = _next_day_ranks(w, tmp_path_factory, rule, None)
    up, w_up = _next_day_ranks(w, tmp_path_factory, rule, "FRAUD")
    down, w_down = _next_day_ranks(w, tmp_path_factory, rule, "CLEAN")
    assert w_up > w_base > w_down, (w_up, w_base, w_down)
    hit = base.hit
    assert hit.sum() > 0, f"rule {rule} should hit some declarations on the next day"
    # The outcomes also change entity profiles, hence the model's own probability; the rules' part of each
    # risk score (its log-odds over the model's) moves with the rule's weight, and only for its matches.
    assert (up.rules_part[hit] > base.rules_part[hit] + 1e-3).all()
    assert (down.rules_part[hit] < base.rules_part[hit] - 1e-3).all()
    none = ~base.any_hit  # declarations no rule hits keep the model's probability (the stack is still its prior)
    assert none.sum() > 0
    for d in (base, up, down):
        assert np.allclose(d.rules_part[none], 0, atol=1e-4)
    # So, against the model's own order of the same day, the matches climb when the rule's hit rate rose
    # and fall back when it fell.
    lift = lambda d: float((d.rank_model[hit] - d["rank"][hit]).mean())  # noqa: E731
    assert lift(up) > lift(base) >= lift(down), (lift(up), lift(base), lift(down))
