"""Rules engine: ops, validation of the rules file, hit matrix, rule score, mandatory flag and reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sunat_pipeline.features.catalog import FEATURES
from sunat_pipeline.selection.rules import evaluate, load_rules, summarise
from sunat_pipeline.settings import get_settings
from sunat_sim.world import CUSTOMS_COLUMNS

AREAS = {"revenue": "Revenue leakage", "drugs": "Drugs"}


def _write(tmp_path, rules: list[dict], areas: dict | None = None):
    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump({"areas": areas or AREAS, "rules": rules}))
    return p


def _rule(rid: str, *conds: tuple, weight: float = 0.5, area: str = "revenue", mandatory: bool = False,
          reason: str = "because") -> dict:
    r = {"id": rid, "area": area, "name": rid, "weight": weight, "reason": reason,
         "when": [{"field": f, "op": op, "value": v} for f, op, v in conds]}
    if mandatory:
        r["mandatory"] = True
    return r


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "hs_code": ["2914110000", "3915900000", "8517130000", "2902300000", None],
        "origin_country": ["CN", "CO", "US", "EC", "BO"],
        "duty_rate": [0.0, 0.06, 0.11, 0.04, np.nan],
        "has_permit": [0.0, 1.0, 0.0, 1.0, 0.0],
    })


OPS = [
    ("eq", "duty_rate", 0.06, [False, True, False, False, False]),
    ("ne", "origin_country", "CN", [False, True, True, True, True]),
    ("lt", "duty_rate", 0.06, [True, False, False, True, False]),
    ("le", "duty_rate", 0.06, [True, True, False, True, False]),
    ("gt", "duty_rate", 0.04, [False, True, True, False, False]),
    ("ge", "duty_rate", 0.04, [False, True, True, True, False]),
    ("in", "origin_country", ["CO", "EC", "BO"], [False, True, False, True, True]),
    ("not_in", "origin_country", ["CO", "EC", "BO"], [True, False, True, False, False]),
    ("prefix_in", "hs_code", ["2914110", "2902300"], [True, False, False, True, False]),
    ("prefix_in", "hs_code", ["39", "85"], [False, True, True, False, False]),
]


@pytest.mark.parametrize(("op", "field", "value", "expected"), OPS, ids=[f"{o[0]}-{i}" for i, o in enumerate(OPS)])
def test_each_op(tmp_path, frame, op, field, value, expected):
    rules = load_rules(_write(tmp_path, [_rule("R-1", (field, op, value))]))
    hits = evaluate(rules, frame)
    assert list(hits.columns) == ["R-1"]
    assert hits["R-1"].dtype == bool
    assert hits["R-1"].tolist() == expected


def test_conditions_are_anded(tmp_path, frame):
    rules = load_rules(_write(tmp_path, [
        _rule("DRG-X", ("hs_code", "prefix_in", ["2914110", "2902300"]), ("has_permit", "eq", 0), area="drugs"),
    ]))
    assert evaluate(rules, frame)["DRG-X"].tolist() == [True, False, False, False, False]


def test_unknown_op_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown op 'between'"):
        load_rules(_write(tmp_path, [_rule("R-1", ("duty_rate", "between", [0, 1]))]))


def test_unknown_area_raises(tmp_path):
    with pytest.raises(ValueError, match="unknown area 'tobacco'"):
        load_rules(_write(tmp_path, [_rule("R-1", ("duty_rate", "gt", 0), area="tobacco")]))


def test_duplicate_ids_raise(tmp_path):
    with pytest.raises(ValueError, match="duplicate rule ids"):
        load_rules(_write(tmp_path, [_rule("R-1", ("duty_rate", "gt", 0)), _rule("R-1", ("duty_rate", "lt", 1))]))


def test_unknown_field_raises_at_evaluation(tmp_path, frame):
    rules = load_rules(_write(tmp_path, [_rule("R-1", ("no_such_field", "eq", 1))]))
    with pytest.raises(KeyError, match="no_such_field"):
        evaluate(rules, frame)


def test_summarise_scores_mandatory_and_reasons(tmp_path, frame):
    rules = load_rules(_write(tmp_path, [
        _rule("M-1", ("has_permit", "eq", 0), ("hs_code", "prefix_in", ["29"]), area="drugs", mandatory=True,
              weight=0.6, reason="precursor HS {hs_code} from {origin_country} without permit"),
        _rule("R-1", ("duty_rate", "lt", 0.1), weight=0.25, reason="low duty {duty_rate}"),
        _rule("R-2", ("origin_country", "in", ["CO", "EC", "BO"]), weight=0.1, reason="origin {origin_country}"),
        _rule("R-3", ("origin_country", "eq", "CN"), weight=0.2, reason="{missing_key} stays readable"),
    ]))
    frame.index = [10, 11, 12, 13, 14]  # results align with the frame's index
    hits = evaluate(rules, frame)
    assert rules.initial_weights() == {"M-1": 0.6, "R-1": 0.25, "R-2": 0.1, "R-3": 0.2}
    s = summarise(rules, hits, rules.initial_weights(), frame)
    assert list(s.index) == [10, 11, 12, 13, 14]
    assert s.rule_hits.tolist() == [["M-1", "R-1", "R-3"], ["R-1", "R-2"], [], ["R-1", "R-2"], ["R-2"]]
    np.testing.assert_allclose(s.rule_score, [0.6 + 0.25 + 0.2, 0.35, 0.0, 0.35, 0.1])
    assert s.mandatory.tolist() == [True, False, False, False, False]
    assert s.rule_reasons[10] == ["rule M-1: precursor HS 2914110000 from CN without permit",
                                  "rule R-1: low duty 0.0", "rule R-3: ? stays readable"]
    assert s.rule_reasons[12] == []
    # Versioned weights replace the file's; a rule missing from the version weighs nothing.
    s2 = summarise(rules, hits, {"M-1": 0.1, "R-1": 0.5, "R-2": 0.3}, frame)
    np.testing.assert_allclose(s2.rule_score, [0.6, 0.8, 0.0, 0.8, 0.3])
    assert s2.mandatory.tolist() == s.mandatory.tolist()


def test_project_rules_file_is_valid_and_uses_known_fields():
    settings = get_settings()
    rules = load_rules(settings.rules_path)
    assert len(rules.rules) == len(set(rules.ids)) > 0
    assert {r.area for r in rules.rules} <= set(rules.areas)
    assert {r.id for r in rules.rules if r.mandatory} == {"DRG-01", "ENV-01", "WLD-01"}
    fields = {dict(c)["field"] for r in rules.rules for c in r.when}
    assert fields <= set(CUSTOMS_COLUMNS) | set(FEATURES)
    assert all(0 < r.weight < 1 for r in rules.rules)


def test_project_rules_on_typical_items():
    rules = load_rules(get_settings().rules_path)
    frame = pd.DataFrame({
        "hs_code": ["2914110000", "3915900000", "0106200000", "8517130000", "6109100000"],
        "origin_country": ["CN", "US", "BR", "CN", "CO"],
        "supplier_country": ["CN", "US", "BR", "CN", "CN"],
        "has_permit": [0.0, 1.0, 0.0, 1.0, 1.0],
        "permit_valid": [np.nan, 1.0, np.nan, 0.0, 0.0],  # the waste permit is valid in the register
        "importer_is_new": [1.0, 0.0, 0.0, 0.0, 0.0],
        "log_ref_ratio": [0.0, 0.0, 0.0, -1.2, 0.0],
        "duty_rate": [0.0, 0.0, 0.0, 0.0, 0.0],
        "origin_differs_supplier": [0.0, 0.0, 0.0, 0.0, 1.0],
        "importer_id_fraud_rate": [0.1, 0.1, 0.1, 0.5, 0.1],
        "importer_id_n_insp": [0.0, 0.0, 0.0, 4.0, 0.0],
    })
    s = summarise(rules, evaluate(rules, frame), rules.initial_weights(), frame)
    assert s.rule_hits.tolist() == [["DRG-01", "DRG-02"], ["ENV-02"], ["WLD-01", "WLD-02"],
                                    ["REV-01", "REV-04", "IPR-01"], ["REV-02"]]
    assert s.mandatory.tolist() == [True, False, True, False, False]
    assert "HS 2914110000" in s.rule_reasons[0][0]
    assert s.rule_reasons[4] == ["rule REV-02: preferential origin CO declared for goods from a supplier in CN"]
