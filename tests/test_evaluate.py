"""External-data evaluation through the production path: column mappings (hand-made CSV, no shared data needed),
the feature specification a mapping asks for, the production features of a synthetic extract without leakage,
and the `evaluate` command (synthetic, and on a small sample of the KCS data when ../shared/data/kcs is present)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.cli import main as cli
from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.catalog import DEFAULT_SPEC, FEATURES, absent_features, catalog
from sunat_pipeline.ingest.mapping import MappingError, apply_mapping, canonical_columns, load_mapping, read_extract
from sunat_pipeline.modeling.evaluate import available_inputs, extract_features, feature_spec, outcomes_from_labels
from sunat_pipeline.modeling.tuning import time_validation
from sunat_pipeline.settings import TrainingSettings, get_settings

ROOT = Path(__file__).resolve().parent.parent
KCS_MAPPING = ROOT / "mappings" / "kcs.yaml"
KCS = ROOT.parent / "shared" / "data" / "kcs"

TINY_MAPPING = """
name: tiny
columns:
  declaration_id: Decl
  declaration_date: {source: Day, format: "%Y-%m-%d"}
  importer_id: Importer
  hs_code: {source: HS, pad: 6}
  origin_country: {source: Origin, upper: true}
  net_weight_kg: Kg
  fob_usd: {source: Price, scale: 0.5}
  duty_rate: {source: Tax, scale: 0.01}
  supplier_id: {source: Seller, optional: true}
  invoice_currency: {constant: KRW}
extra:
  courier_id: {source: Courier, optional: true}
pairs: [[origin_country, courier_id]]
label: {source: Fraud, positive: ["1", "yes"]}
"""

TINY_CSV = """Decl,Day,Importer,HS,Origin,Kg,Price,Tax,Fraud,Unused
D1,2020-01-02,IMP1,40890,cn,10,100,8.0,0,x
D1,2020-01-02,IMP1,850440,cn,5,40,0,yes,x
D2,2020-01-03,IMP2,620822,vn,2.5,,5.2,1,x
"""


@pytest.fixture()
def tiny(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_MAPPING)
    (tmp_path / "tiny.csv").write_text(TINY_CSV)
    return tmp_path


def test_mapping_to_the_canonical_schema(tiny):
    m = load_mapping(tiny / "tiny.yaml")
    df = read_extract(tiny / "tiny.csv", m, require_label=True)
    assert list(df.columns[: len(canonical_columns())]) == list(canonical_columns())
    assert list(df.columns[len(canonical_columns()):]) == ["x_courier_id", "label"]
    assert df.hs_code.tolist() == ["040890", "850440", "620822"]  # leading zero restored
    assert df.origin_country.tolist() == ["CN", "CN", "VN"]
    assert df.item_no.tolist() == [1, 2, 1]  # position within the declaration
    assert df.declaration_date.astype(str).tolist() == ["2020-01-02", "2020-01-02", "2020-01-03"]
    np.testing.assert_allclose(df.fob_usd.to_numpy()[:2], [50.0, 20.0])
    assert np.isnan(df.fob_usd[2])  # empty is null
    np.testing.assert_allclose(df.duty_rate, [0.08, 0.0, 0.052])
    assert df.label.tolist() == [0, 1, 1]
    assert set(df.invoice_currency) == {"KRW"}
    # Optional columns the file lacks, and canonical columns the mapping does not name, are nulls.
    assert df.supplier_id.isna().all() and df.x_courier_id.isna().all() and df.cif_usd.isna().all()
    assert df.customs_office.isna().all()


def test_mapping_errors_are_plain(tiny):
    m = load_mapping(tiny / "tiny.yaml")
    raw = pd.read_csv(tiny / "tiny.csv", dtype=str)
    with pytest.raises(MappingError, match="'Kg' is not in the file"):
        apply_mapping(raw.drop(columns=["Kg"]), m)
    with pytest.raises(MappingError, match="label column 'Fraud'"):
        apply_mapping(raw.drop(columns=["Fraud"]), m, require_label=True)
    assert "label" not in apply_mapping(raw.drop(columns=["Fraud"]), m).columns  # scoring needs no label
    bad = raw.copy()
    bad.loc[1, "Day"] = "not a date"
    with pytest.raises(MappingError, match="without a usable declaration_date"):
        apply_mapping(bad, m)
    (tiny / "bad.yaml").write_text("columns: {declaration_id: Decl, hs_code: HS}\n")
    with pytest.raises(MappingError, match="declaration_date"):
        load_mapping(tiny / "bad.yaml")
    (tiny / "bad2.yaml").write_text(TINY_MAPPING.replace("importer_id: Importer", "importer: Importer"))
    with pytest.raises(MappingError, match="not canonical"):
        load_mapping(tiny / "bad2.yaml")


def test_shipped_kcs_mapping_is_valid():
    m = load_mapping(KCS_MAPPING)
    assert m.name == "kcs" and m.label is not None and m.label.source == "Fraud"
    assert m.columns["hs_code"].pad == 6
    assert m.columns["supplier_id"].optional and m.extra["courier_id"].optional
    assert "Critical Fraud" not in {s.source for s in [*m.columns.values(), *m.extra.values()]}


SYN_MAPPING = """
name: syn
columns:
  declaration_id: Decl
  declaration_date: Day
  importer_id: Importer
  declarant_id: Broker
  customs_office: Office
  hs_code: {source: HS, pad: 6}
  origin_country: Origin
  net_weight_kg: Kg
  fob_usd: Price
  duty_rate: Tax
extra:
  route: Route
profile_keys: [hs4]
pairs: [[hs6, "*"], [importer_id, route]]
profile_smoothing: 5
peer_groups: [[hs6, route], [importer_id]]
exclude_features: [month]
label: {source: Fraud}
"""


def _synthetic_extract(n_days: int = 40, per_day: int = 25, seed: int = 0) -> pd.DataFrame:
    """A foreign extract (its own column names, one row per item) where some importers and routes cheat."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    imp = rng.integers(0, 30, n)
    route = rng.choice(["AA", "BB", "CC"], n)
    hs = rng.choice(["10101", "20202", "850440", "620822"], n)
    y = (rng.random(n) < np.where(imp < 6, 0.6, 0.05) + np.where(route == "CC", 0.2, 0.0)).astype(int)
    days = pd.date_range("2021-01-01", periods=n_days, freq="D").repeat(per_day)
    return pd.DataFrame({
        "Decl": [f"D{i}" for i in range(n)], "Day": days.strftime("%Y-%m-%d"), "Importer": [f"I{i}" for i in imp],
        "Broker": [f"B{i % 7}" for i in imp], "Office": rng.choice(["10", "20"], n), "HS": hs,
        "Origin": rng.choice(["CN", "VN", "US"], n), "Kg": np.round(rng.lognormal(3, 1, n), 2),
        "Price": np.round(rng.lognormal(6, 1, n) * np.where(y == 1, 0.5, 1.0), 2), "Tax": rng.choice(["0", "8"], n),
        "Route": route, "Fraud": y.astype(str)})


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("syn")
    (tmp / "syn.yaml").write_text(SYN_MAPPING)
    raw = _synthetic_extract()
    cut = raw.Day >= "2021-02-01"
    raw[~cut].to_csv(tmp / "train.csv", index=False)
    raw[cut].to_csv(tmp / "test.csv", index=False)
    m = load_mapping(tmp / "syn.yaml")
    train = read_extract(tmp / "train.csv", m, require_label=True)
    test = read_extract(tmp / "test.csv", m, require_label=True)
    return tmp, m, train, test


def test_feature_spec_from_the_mapping(syn):
    _, m, _, _ = syn
    spec = feature_spec(m)
    p = spec.profiles
    assert p.keys[: len(DEFAULT_SPEC.profiles.keys)] == DEFAULT_SPEC.profiles.keys  # the daily keys first
    assert {"hs4", "x_route"} <= set(p.keys) and p.smoothing == 5
    names = [c[0] for c in p.crosses]
    assert names[:2] == ["office_importer", "hs6_origin"]  # the daily crosses first
    # HS6 with every other key (HS6 x origin exists already), then the named pair; parents are the first key.
    assert {"hs6_x_importer_id", "hs6_x_route", "hs6_x_hs4", "importer_id_x_route"} <= set(names)
    assert "hs6_x_origin_country" not in names and len(names) == len(set(names))
    assert ("importer_id_x_route", "importer_id", "x_route", "importer_id") in p.crosses
    assert spec.peer_groups == (("hs6", "x_route"), ("importer_id",))
    (syn[0] / "bad.yaml").write_text(SYN_MAPPING.replace("[importer_id, route]", "[importer_id, nowhere]"))
    with pytest.raises(MappingError, match="pair"):
        load_mapping(syn[0] / "bad.yaml")


def test_evaluate_builds_the_production_features(syn):
    _, m, train, test = syn
    s = get_settings()
    spec = feature_spec(m)
    X, Xt = extract_features(train, test, spec, s)
    assert list(X.columns) == list(Xt.columns) == [f.name for f in catalog(spec)]
    # The daily pipeline's builder with its own spec on the same inputs: the default features are the same
    # numbers, except the smoothed rates (this mapping smooths with 5 pseudo-inspections, the daily spec 20).
    outcomes = outcomes_from_labels(train)
    assert (pd.to_datetime(outcomes.reported_date) - pd.to_datetime(train.declaration_date)).dt.days.eq(1).all()
    empty = {"reference": pd.DataFrame(), "tax": pd.DataFrame(), "fx": pd.DataFrame()}
    daily = build_features(train, customs_history=train, outcomes=outcomes, **empty)
    same = [c for c in FEATURES if not c.endswith("_fraud_rate")]
    pd.testing.assert_frame_equal(X[same], daily[same])
    assert not X.importer_id_fraud_rate.equals(daily.importer_id_fraud_rate)
    # Without reference prices, tax returns, CIF or quantities those features are absent, not errors.
    absent = absent_features(catalog(spec), available_inputs(m))
    assert {"log_ref_ratio", "tax_sales_over_purchases", "log_cif", "kg_per_unit", "has_permit"} <= set(absent)
    assert not {"log_unit_value_kg", "hs6_x_route_fraud_rate", "log_value_vs_hs6_x_route"} & set(absent)
    assert X.log_ref_ratio.isna().all() and X.tax_sales_over_purchases.isna().all()
    # The first day knows no outcome; later days know the earlier days' outcomes.
    first = (pd.to_datetime(train.declaration_date) == pd.to_datetime(train.declaration_date).min()).to_numpy()
    assert (X.importer_id_n_insp[first] == 0).all() and (X.importer_id_n_insp[~first] > 0).any()
    # The signal reaches the features: habitual offenders and the cheating route have higher profile rates.
    bad = train.importer_id.isin([f"I{i}" for i in range(6)]).to_numpy()
    late = ~first & (pd.to_datetime(train.declaration_date) >= "2021-01-15").to_numpy()
    assert X.importer_id_fraud_rate[late & bad].mean() > 2 * X.importer_id_fraud_rate[late & ~bad].mean()
    assert Xt.x_route_fraud_rate[test.x_route.eq("CC").to_numpy()].min() > Xt.x_route_fraud_rate.min()


def test_no_row_sees_its_own_or_later_labels(syn):
    _, m, train, test = syn
    s = get_settings()
    spec = feature_spec(m)
    X, Xt = extract_features(train, test, spec, s)
    # Test labels play no part: any change to them leaves every feature as it was.
    _, Xt2 = extract_features(train, test.assign(label=1 - test.label), spec, s)
    pd.testing.assert_frame_equal(Xt, Xt2)
    # A training row's features do not change when its own label or those of its day and later days change.
    day = pd.to_datetime(train.declaration_date)
    d = day.sort_values().unique()[10]
    later = (day >= d).to_numpy()
    flipped = train.assign(label=np.where(later, 1 - train.label, train.label))
    X2, Xt3 = extract_features(flipped, test, spec, s)
    pd.testing.assert_frame_equal(X[~later], X2[~later])
    assert not X[later].equals(X2[later])  # later rows do see the earlier days' labels (the test can fail)
    assert not Xt.equals(Xt3)  # and the test rows see all training outcomes


def test_time_validation_keeps_the_latest_days():
    d = pd.Series(pd.date_range("2020-01-01", periods=100, freq="D").date)
    v = time_validation(d, 0.25)
    assert v[-1] and not v[0] and v.sum() == 25
    assert pd.to_datetime(d[v]).min() > pd.to_datetime(d[~v]).max()


def test_evaluate_command_on_the_synthetic_extract(syn, tmp_path):
    tmp, m, train, test = syn
    out = tmp_path / "syn.json"
    rc = cli(["evaluate", "--mapping", str(tmp / "syn.yaml"), "--train", str(tmp / "train.csv"), "--test",
              str(tmp / "test.csv"), "--json", str(out), "--max-trials", "2", "--bag-size", "2", "--n-jobs", "1"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["n_train"] == len(train) and res["n_test"] == len(test)
    assert res["search"]["trials"] == 2 and res["search"]["metric"] == "precision_at_10"
    assert res["model"]["params"]["bag_size"] == 2
    assert res["model"]["params"]["max_member_rows"] == TrainingSettings().max_member_rows
    f = res["features"]
    assert f["excluded"] == ["month"] and "month" not in f["names"] and "day_of_week" in f["names"]
    assert "log_ref_ratio" in f["absent"] and "log_ref_ratio" not in f["names"]
    assert "hs6_x_route_fraud_rate" in f["names"] and f["profiles"]["smoothing"] == 5
    assert res["roc_auc"] > 0.7 and res["precision_at_10"] > 2 * res["test_fraud_rate"]


@pytest.mark.skipif(not (KCS / "train.csv").exists(),
                    reason=f"KCS data not found at {KCS} (../shared/data/kcs is not part of a fresh clone)")
def test_evaluate_command_on_a_kcs_sample(tmp_path):
    tr = pd.read_csv(KCS / "train.csv", dtype=str)
    va = pd.read_csv(KCS / "valid.csv", dtype=str)
    tr.iloc[::20].to_csv(tmp_path / "train_a.csv", index=False)  # every 20th row: about 1,900 rows
    tr.iloc[10::20].to_csv(tmp_path / "train_b.csv", index=False)  # two training files
    va.iloc[::8].to_csv(tmp_path / "test.csv", index=False)  # about 1,000 rows
    out = tmp_path / "out" / "kcs.json"
    rc = cli(["evaluate", "--mapping", str(KCS_MAPPING), "--train", str(tmp_path / "train_a.csv"),
              "--train", str(tmp_path / "train_b.csv"), "--test", str(tmp_path / "test.csv"), "--json", str(out),
              "--budget-s", "15", "--max-trials", "2", "--bag-size", "1", "--n-jobs", "1"])
    assert rc == 0
    res = json.loads(out.read_text())
    for k in ("precision_at_1", "precision_at_5", "precision_at_10", "recall_at_5", "roc_auc", "n_train", "n_test"):
        assert k in res, k
    assert res["n_train"] == len(tr.iloc[::20]) + len(tr.iloc[10::20]) and res["n_test"] == len(va.iloc[::8])
    for k in ("precision_at_1", "precision_at_5", "precision_at_10", "recall_at_5", "roc_auc"):
        assert 0.0 <= res[k] <= 1.0, k
    # Sane, not the bar (the bar is for the full files): well above the fraud rate and chance.
    assert res["roc_auc"] > 0.6
    assert res["precision_at_10"] > 1.5 * res["test_fraud_rate"]
    assert 1 <= res["search"]["trials"] <= 2
    assert [f["rows"] for f in res["inputs"]["train"]] == [len(tr.iloc[::20]), len(tr.iloc[10::20])]
    assert res["inputs"]["declaration_ids_in_both"] == 0
    # The production features with the mapping's profiles; what KCS lacks is listed, not an error.
    f = res["features"]
    assert {"hs6_x_departure_country_fraud_rate", "hs6_origin_fraud_rate", "unit_value_robust_z"} <= set(f["names"])
    assert {"log_ref_ratio", "tax_purchases_over_imports", "has_permit"} <= set(f["absent"])
