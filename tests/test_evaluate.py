"""External-data evaluation: column mappings (hand-made CSV, no shared data needed) and the `evaluate` command
on a small sample of the KCS data (skipped when ../shared/data/kcs is absent, as in a fresh clone)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.cli import main as cli
from sunat_pipeline.ingest.mapping import MappingError, apply_mapping, canonical_columns, load_mapping, read_extract
from sunat_pipeline.modeling.evaluate import FeatureBuilder, time_split

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


def _synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    imp = rng.integers(0, 40, n)
    bad = imp < 8  # habitual offenders
    y = (rng.random(n) < np.where(bad, 0.7, 0.05)).astype(int)
    return pd.DataFrame({
        "declaration_id": [f"D{seed}-{i}" for i in range(n)], "item_no": 1.0,
        "declaration_date": pd.date_range("2020-01-01", periods=n, freq="h").date,
        "importer_id": [f"I{i}" for i in imp], "hs_code": rng.choice(["010101", "020202", "850440"], n),
        "fob_usd": rng.lognormal(5, 1, n), "net_weight_kg": rng.lognormal(3, 1, n), "duty_rate": 0.08,
        **{c: None for c in ("customs_office", "declarant_id", "supplier_id", "supplier_country", "transport_mode",
                              "origin_country")},
        "quantity": np.nan, "cif_usd": np.nan, "label": y})


def test_target_encodings_are_out_of_fold_and_train_only():
    train, test = _synthetic(600, 1), _synthetic(200, 2)
    b = FeatureBuilder(seed=3)
    X = b.fit_transform(train)
    Xt = b.transform(test)
    assert list(X.columns) == list(Xt.columns) == b.feature_names
    assert "te_importer_id" in X and "rel_log_value_kg__hs4" in X
    assert "rel_log_value_kg__hs6__origin_country" not in X  # no origin in the data: no HS6 x origin medians
    # A training row's encoding never uses its own label: flipping one label leaves its own value unchanged.
    flipped = train.copy()
    flipped.loc[0, "label"] = 1 - flipped.loc[0, "label"]
    X2 = FeatureBuilder(seed=3).fit_transform(flipped)
    assert X2.loc[0, "te_importer_id"] == X.loc[0, "te_importer_id"]
    # Test rows use all training rows; their own labels play no part.
    Xt2 = b.transform(test.assign(label=1 - test.label))
    pd.testing.assert_frame_equal(Xt, Xt2)
    # The encoding carries the signal.
    assert X.te_importer_id[train.importer_id.isin([f"I{i}" for i in range(8)])].mean() > 0.4


def test_time_split_keeps_the_latest_days_for_validation():
    d = pd.Series(pd.date_range("2020-01-01", periods=100, freq="D").date)
    v = time_split(d, 0.25)
    assert v[-1] and not v[0] and 20 <= v.sum() <= 30
    assert pd.to_datetime(d[v]).min() > pd.to_datetime(d[~v]).max()


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
