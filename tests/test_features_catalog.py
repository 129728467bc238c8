"""The feature catalog: one description per feature, exported to docs/features.md and logged with models."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sunat_pipeline.features.catalog import (
    CATALOG,
    DEFAULT_SPEC,
    FEATURES,
    Feature,
    FeatureSpec,
    absent_features,
    catalog,
    catalog_frame,
    catalog_markdown,
    feature_names,
)
from sunat_pipeline.features.history import ProfileSpec
from sunat_pipeline.ingest.sources import SOURCES

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["name", "description", "source", "type", "transformation", "risk_area", "inputs"]
TYPES = {"continuous", "ratio", "binary", "count", "ordinal", "categorical code", "days", "score"}
INPUT_SOURCES = set(SOURCES) - {"customs"}
CUSTOMS = set(SOURCES["customs"].columns)


def _check(f: Feature) -> None:
    """Every field of a feature: present (no more, no fewer), of its type, not empty, inputs known."""
    assert [x.name for x in dataclasses.fields(f)] == FIELDS, f
    for k in FIELDS[:-1]:
        v = getattr(f, k)
        assert isinstance(v, str) and v.strip() == v and v, (f.name, k)
    assert f.type in TYPES, f
    assert isinstance(f.inputs, tuple) and f.inputs and len(set(f.inputs)) == len(f.inputs), f
    for i in f.inputs:
        src, _, col = i.partition(".")
        assert (src in INPUT_SOURCES and not col) or (src == "customs" and (col in CUSTOMS or col.startswith("x_"))), i
    assert any(i.startswith("customs.") for i in f.inputs), f  # every feature is about a declared item


def test_every_feature_is_fully_described():
    assert len(FEATURES) == len(set(FEATURES)) == len(CATALOG)
    assert list(catalog_frame().columns) == FIELDS
    for f in CATALOG:
        _check(f)
    # The table logged with each model holds every field of every feature.
    frame = catalog_frame()
    assert frame.name.tolist() == FEATURES
    for f, row in zip(CATALOG, frame.to_dict("records"), strict=True):
        assert row == {**dataclasses.asdict(f), "inputs": ", ".join(f.inputs)}


def test_catalog_covers_the_issue_feature_families():
    names = set(FEATURES)
    required = {
        # value
        "log_cif", "log_unit_value_qty", "log_unit_value_kg", "cif_fob_ratio", "freight_share", "insurance_share",
        "duty_rate", "taxes_over_cif",
        # valuation against past declarations
        "unit_value_robust_z", "unit_value_ref_level",
        # history, tax cross-checks, calendar, anomaly
        "importer_days_active", "importer_items_30d", "importer_is_new", "tax_purchases_over_imports",
        "tax_igv_credit_over_import_igv", "day_of_week", "month", "value_anomaly_score",
    }
    for k in ("importer_id", "declarant_id", "supplier_id", "hs6", "origin_country", "customs_office",
              "office_importer", "hs6_origin"):
        required |= {f"{k}_fraud_rate", f"{k}_n_insp"}
    assert required <= names, required - names


def test_inputs_say_what_each_feature_needs():
    by = {f.name: f for f in CATALOG}
    assert by["log_ref_ratio"].inputs[0] == "reference_prices"
    assert {"tax", "exchange_rates"} <= set(by["tax_purchases_over_imports"].inputs)
    assert by["tax_sales_over_purchases"].inputs == ("tax", "customs.importer_id")
    assert by["hs6_origin_fraud_rate"].inputs == ("enforcement", "customs.hs_code", "customs.origin_country")
    # An extract with customs declarations (no quantity, no CIF) and outcomes only.
    have = {"customs", "enforcement", *(f"customs.{c}" for c in CUSTOMS - {"quantity", "cif_usd"})}
    absent = absent_features(CATALOG, have)
    assert absent["log_ref_ratio"] == ["reference_prices"] and absent["kg_per_unit"] == ["customs.quantity"]
    assert absent["tax_purchases_over_imports"] == ["tax", "exchange_rates", "customs.cif_usd"]
    assert "log_unit_value_kg" not in absent and "importer_id_fraud_rate" not in absent
    assert not absent_features(CATALOG, {*INPUT_SOURCES, "customs", *(f"customs.{c}" for c in CUSTOMS)})


def test_a_specification_adds_profiles_and_peers_after_the_defaults():
    assert feature_names() == FEATURES and catalog(DEFAULT_SPEC) == CATALOG
    spec = FeatureSpec(
        profiles=ProfileSpec(keys=(*DEFAULT_SPEC.profiles.keys, "x_route"),
                             crosses=(*DEFAULT_SPEC.profiles.crosses, ("hs6_x_route", "hs6", "x_route", "hs6")),
                             smoothing=5.0),
        peer_groups=(("hs6", "x_route"),))
    cat = catalog(spec)
    for f in cat:
        _check(f)
    names = [f.name for f in cat]
    assert set(FEATURES) < set(names) and len(names) == len(set(names))
    assert {"x_route_n_insp", "x_route_fraud_rate", "hs6_x_route_n_insp", "hs6_x_route_fraud_rate",
            "log_value_vs_hs6_x_route", "duty_rate_vs_hs6_x_route"} <= set(names)
    assert [n for n in names if n in FEATURES] == FEATURES  # the defaults keep their order
    rate = {f.name: f for f in cat}["hs6_x_route_fraud_rate"]
    assert "(frauds + 5 * hs6_fraud_rate)" in rate.transformation
    assert rate.inputs == ("enforcement", "customs.hs_code", "customs.x_route")
    with pytest.raises(ValueError, match="must be profile keys"):
        ProfileSpec(crosses=(("bad", "hs6", "x_route", "hs6"),))


def _markdown_rows(doc: str) -> list[list[str]]:
    rows = [line for line in doc.splitlines() if line.startswith("| `")]
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def test_docs_features_md_is_the_whole_catalog():
    doc = (ROOT / "docs" / "features.md").read_text()
    assert doc == catalog_markdown(), (
        "docs/features.md is stale: run `python -m sunat_pipeline.features.catalog --markdown > docs/features.md`")
    rows = _markdown_rows(doc)
    assert len(rows) == len(CATALOG) and f"{len(CATALOG)} features." in doc
    for f, cells in zip(CATALOG, rows, strict=True):
        assert cells == [f"`{f.name}`", f.description, f.source, f.type, f.transformation, f.risk_area,
                         ", ".join(f.inputs)]


def test_rules_and_reasons_name_catalogued_features():
    rules = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text())["rules"]
    fields = {c["field"] for r in rules for c in r["when"]}
    for name in ("log_ref_ratio", "has_permit", "permit_valid", "importer_is_new", "origin_differs_supplier",
                 "duty_rate", "importer_id_fraud_rate", "importer_id_n_insp"):
        assert name in FEATURES
    assert {f for f in fields if f in FEATURES} >= {"log_ref_ratio", "permit_valid", "importer_is_new"}


def test_cli_prints_the_page_and_the_csv():
    md = subprocess.run([sys.executable, "-m", "sunat_pipeline.features.catalog", "--markdown"], capture_output=True,
                        text=True, check=True, cwd=ROOT).stdout
    assert md == catalog_markdown()
    csv = subprocess.run([sys.executable, "-m", "sunat_pipeline.features.catalog", "--csv"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert csv == catalog_frame().to_csv(index=False)
    assert csv.splitlines()[0] == ",".join(FIELDS)
