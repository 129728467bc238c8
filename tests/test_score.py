"""Reasons an officer reads: model contributions phrased in words."""

from __future__ import annotations

import math

from sunat_pipeline.selection.output import CONTRACT_COLUMNS
from sunat_pipeline.selection.reasons import explain


def test_reference_deviation_in_words():
    txt = explain("log_ref_ratio", math.log(0.36), {"hs_code": "8471300000", "origin_country": "CN"})
    assert txt == "unit value 64% below the reference for HS 8471300000 from CN"


def test_entity_rate_in_words():
    txt = explain("importer_id_fraud_rate", 0.42, {"importer_id": "20100000001", "importer_id_n_insp": 12})
    assert txt == "importer 20100000001 has an offence rate of 42% over 12 past inspections"


def test_unknown_feature_falls_back_to_its_name():
    # Every catalogue feature has its own phrase (tests/test_select_policy.py); others read "name: value".
    assert explain("not_a_catalogue_feature", 9.2, {}) == "not_a_catalogue_feature: 9.2"
    assert explain("log_cif", 9.2, {}) == "declared CIF value of 9,896 USD"


def test_contract_columns_match_the_brief():
    brief = ["declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
             "hs_code", "origin_country", "fob_usd", "cif_usd", "fraud_probability", "expected_revenue_usd",
             "uncertainty", "rule_score", "rule_hits", "channel", "selection_reason", "reasons", "model_name",
             "model_version", "rule_weights_version", "run_id", "scored_at"]
    assert brief == CONTRACT_COLUMNS
