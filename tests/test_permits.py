"""The permit register: landed and validated like the other extracts, a revocation kept as a later version, and
``permit_valid`` as known before the declaration day; the mandatory permit rules read it."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline import ingest
from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.catalog import FEATURES
from sunat_pipeline.features.permits import permit_valid
from sunat_pipeline.ingest.reading import read_typed
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.selection.rules import evaluate, load_rules
from sunat_pipeline.settings import PROJECT_ROOT, get_settings

HEADER = "permit_no,issuer,importer_id,hs_code,valid_from,valid_to,status,registered_date,status_date\n"
IMP, OTHER, HS = "20125562340", "20787045362", "2914110000"
GOOD = (HEADER + f"IQBF-2026-000101,IQBF,{IMP},{HS},2026-01-10,2026-06-30,ACTIVE,2026-01-15,2026-01-15\n"
        f"MINAM-2026-000007,MINAM,{OTHER},3915900000,2026-01-01,2026-12-31,ACTIVE,2026-01-05,2026-01-05\n")
REVOCATION = HEADER + f"IQBF-2026-000101,IQBF,{IMP},{HS},2026-01-10,2026-06-30,REVOKED,2026-01-15,2026-02-20\n"


def _land(settings, name: str, text: str) -> None:
    folder = settings.landing / "permits"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


@pytest.fixture
def settings(tmp_path):
    return get_settings(lake_root=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def test_permit_files_land_validate_and_keep_each_version(settings):
    _land(settings, "permits__2026-02-01__history.csv", GOOD)
    _land(settings, "permits__2026-02-21.csv", REVOCATION)
    bad = HEADER + (f"IQBF-2026-000200,IQBF,{IMP},{HS},2026-03-01,2026-02-01,EXPIRED,2026-01-15,2026-01-15\n"
                    f"IQBF-2026-000201,IQBF,{IMP},{HS},2026-01-01,2026-02-01,ACTIVE,2026-01-15,\n")
    _land(settings, "permits__2026-02-22.csv", bad)
    _land(settings, "permits__2026-02-23.csv", HEADER)  # no change since the last extract
    out = {o.name: o for o in ingest.ingest_source(settings, "permits", date(2026, 2, 23))}
    assert out["permits__2026-02-01__history.csv"].status == "accepted"
    assert out["permits__2026-02-21.csv"].status == "accepted"
    rejected = out["permits__2026-02-22.csv"]
    assert rejected.status == "rejected"
    for check in ("status", "valid_to", "status_date"):  # the bad status, the inverted validity, the missing date
        assert check in rejected.detail, (check, rejected.detail)
    assert out["permits__2026-02-23.csv"].status == "accepted_with_warnings"
    assert any((settings.lake / "quarantine").rglob("*__permits__2026-02-22.csv"))
    silver = ingest.silver(settings, "permits")
    # The revocation lands in its own partition: silver keeps both versions; the feature picks by date.
    assert sorted(silver.permit_no) == ["IQBF-2026-000101", "IQBF-2026-000101", "MINAM-2026-000007"]
    assert "IQBF-2026-000200" not in set(silver.permit_no)
    items = _items([("IQBF-2026-000101", IMP, HS, "2026-02-20"), ("IQBF-2026-000101", IMP, HS, "2026-02-21")])
    np.testing.assert_array_equal(permit_valid(items, silver), [1.0, 0.0])


def _items(rows) -> pd.DataFrame:
    return pd.DataFrame([{"permit_no": p, "importer_id": i, "hs_code": h, "declaration_date": pd.Timestamp(d)}
                         for p, i, h, d in rows])


def _register(rows) -> pd.DataFrame:
    cols = ["permit_no", "importer_id", "hs_code", "valid_from", "valid_to", "status", "registered_date",
            "status_date", "effective_date"]
    df = pd.DataFrame(rows, columns=cols)
    for c in cols[3:5] + cols[6:]:
        df[c] = pd.to_datetime(df[c])
    return df.assign(issuer="IQBF")


P = "IQBF-2026-000101"
REG = _register([
    (P, IMP, HS, "2026-01-10", "2026-06-30", "ACTIVE", "2026-01-15", "2026-01-15", "2026-01-16"),
    (P, IMP, HS, "2026-01-10", "2026-06-30", "REVOKED", "2026-01-15", "2026-02-20", "2026-02-21"),
])


@pytest.mark.parametrize(("item", "expected"), [
    ((P, IMP, HS, "2026-01-15"), 0.0),  # registered on the day itself: not known before it
    ((P, IMP, HS, "2026-01-16"), 1.0),
    ((P, IMP, HS, "2026-02-20"), 1.0),  # revoked that day: not known before it
    ((P, IMP, HS, "2026-02-21"), 0.0),  # revoked before the day
    ((P, OTHER, HS, "2026-02-01"), 0.0),  # another importer's permit
    ((P, IMP, "2902300000", "2026-02-01"), 0.0),  # another code
    (("IQBF-2026-999999", IMP, HS, "2026-02-01"), 0.0),  # fabricated
    (("", IMP, HS, "2026-02-01"), np.nan),  # none quoted
    ((None, IMP, HS, "2026-02-01"), np.nan),
])
def test_permit_valid_is_point_in_time(item, expected):
    np.testing.assert_array_equal(permit_valid(_items([item]), REG), [expected])


def test_validity_window_and_a_bulk_extract_written_after_the_revocation():
    # Only the final version is known (a bulk extract after the revocation): before the revocation it counts.
    final = REG.iloc[[1]]
    got = permit_valid(_items([(P, IMP, HS, d) for d in ("2026-01-20", "2026-02-20", "2026-02-21")]), final)
    np.testing.assert_array_equal(got, [1.0, 1.0, 0.0])
    window = _register([(P, IMP, HS, "2026-03-01", "2026-03-31", "ACTIVE", "2026-01-15", "2026-01-15",
                         "2026-01-16")])
    got = permit_valid(_items([(P, IMP, HS, d) for d in ("2026-02-28", "2026-03-01", "2026-03-31", "2026-04-01")]),
                       window)
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0, 0.0])
    # Input order does not matter, and without a register nothing can be said.
    np.testing.assert_array_equal(permit_valid(_items([(P, IMP, HS, "2026-02-21")]), REG.iloc[::-1]), [0.0])
    assert np.isnan(permit_valid(_items([(P, IMP, HS, "2026-02-01")]), REG.iloc[:0])).all()
    assert np.isnan(permit_valid(_items([(P, IMP, HS, "2026-02-01")]), None)).all()


def test_build_features_joins_the_register(tiny_world):
    world = tiny_world()
    w = world.landed_frames()
    items = w["customs"].iloc[:50].reset_index(drop=True)
    items.loc[0, "permit_no"] = P
    inp = {"customs_history": w["customs"], "outcomes": w["enforcement"], "reference": w["reference_prices"],
           "tax": w["tax"], "fx": w["exchange_rates"]}
    X = build_features(items, **inp)
    assert list(X.columns) == FEATURES and X.permit_valid.isna().all()  # no register: unknown
    reg = REG.iloc[[0]].assign(importer_id=items.importer_id[0], hs_code=items.hs_code[0],
                               registered_date=items.declaration_date[0] - pd.Timedelta(days=3),
                               valid_from=items.declaration_date[0] - pd.Timedelta(days=3),
                               valid_to=items.declaration_date[0] + pd.Timedelta(days=3))
    X = build_features(items, **inp, permits=reg)
    assert X.permit_valid[0] == 1.0
    # The world's own register: restricted items quoting a permit get 0 or 1, the others NaN.
    landed = [read_typed(f, SOURCES["permits"]) for f in sorted((world.landing / "permits").glob("*.csv"))]
    register = pd.concat([f for f in landed if len(f)], ignore_index=True)
    restricted = w["customs"][w["customs"].hs_code.str.startswith(("2914110", "2902300", "3915", "0106", "4103"))]
    X = build_features(restricted, **inp, permits=register)
    quoted = restricted.permit_no.fillna("").to_numpy() != ""
    assert quoted.any() and set(X.permit_valid[quoted]) <= {0.0, 1.0} and X.permit_valid[~quoted].isna().all()
    assert (X.permit_valid[quoted] == 1).mean() > 0.5  # most quoted permits are genuine and registered in time


def test_mandatory_permit_rules_fire_without_a_valid_permit():
    rules = load_rules(PROJECT_ROOT / "config" / "rules.yaml")
    frame = pd.DataFrame({
        "hs_code": ["2914110000", "2914110000", "2914110000", "3915900000", "0106190000", "8517130000"],
        "permit_valid": [1.0, 0.0, np.nan, 0.0, np.nan, 0.0],
        "has_permit": [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
        "importer_is_new": 0.0, "log_ref_ratio": 0.0, "origin_differs_supplier": 0.0, "origin_country": "CN",
        "duty_rate": 0.0, "importer_id_fraud_rate": 0.0, "importer_id_n_insp": 0.0, "supplier_country": "CN",
    })
    hits = evaluate(rules, frame)
    assert hits["DRG-01"].tolist() == [False, True, True, False, False, False]
    assert hits["ENV-01"].tolist() == [False, False, False, True, False, False]
    assert hits["WLD-01"].tolist() == [False, False, False, False, True, False]
