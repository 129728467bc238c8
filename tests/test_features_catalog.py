"""The feature catalog: one description per feature, exported to docs/features.md and logged with models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sunat_pipeline.features.build import CATALOG, FEATURES, catalog_frame, catalog_markdown

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ["name", "description", "source", "type", "transformation", "risk_area"]
TYPES = {"continuous", "ratio", "binary", "count", "ordinal", "categorical code", "days", "score"}


def test_every_feature_is_fully_described():
    assert len(FEATURES) == len(set(FEATURES))
    assert list(catalog_frame().columns) == FIELDS
    for f in CATALOG:
        assert all(str(getattr(f, k)).strip() for k in FIELDS), f
        assert f.type in TYPES, f


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


def test_rules_and_reasons_name_catalogued_features():
    rules = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text())["rules"]
    fields = {c["field"] for r in rules for c in r["when"]}
    for name in ("log_ref_ratio", "has_permit", "importer_is_new", "origin_differs_supplier", "duty_rate",
                 "importer_id_fraud_rate", "importer_id_n_insp"):
        assert name in FEATURES
    assert {f for f in fields if f in FEATURES} >= {"log_ref_ratio", "has_permit", "importer_is_new"}


def test_docs_features_md_is_up_to_date():
    doc = (ROOT / "docs" / "features.md").read_text()
    assert doc == catalog_markdown(), (
        "docs/features.md is stale: run `python -m sunat_pipeline.features.build --markdown > docs/features.md`")
    for f in CATALOG:
        assert f"`{f.name}`" in doc


def test_cli_prints_the_page_and_the_csv():
    md = subprocess.run([sys.executable, "-m", "sunat_pipeline.features.build", "--markdown"], capture_output=True,
                        text=True, check=True, cwd=ROOT).stdout
    assert md == catalog_markdown()
    csv = subprocess.run([sys.executable, "-m", "sunat_pipeline.features.build", "--csv"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert csv.splitlines()[0] == ",".join(FIELDS)
    assert len(csv.strip().splitlines()) >= len(CATALOG) + 1
