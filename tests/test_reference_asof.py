"""Reference prices as of the declaration day: each item gets the issue in force on its day, never a later one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_pipeline.features.declared import base_features, reference_asof
from sunat_pipeline.settings import TaxSettings

HS, HS_OTHER = "8471300000", "6403990000"
JAN, APR = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-04-01")


def _items(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Items (declaration date, hs_code, origin) with 100 kg for USD 1000: unit value 10 USD/kg."""
    n = len(rows)
    return pd.DataFrame({
        "declaration_id": [f"D{i}" for i in range(n)], "item_no": pd.array([1] * n, dtype="Int64"),
        "declaration_date": pd.to_datetime([r[0] for r in rows]), "customs_office": "118",
        "hs_code": [r[1] for r in rows], "origin_country": [r[2] for r in rows], "supplier_country": "CN",
        "fob_usd": 1000.0, "cif_usd": 1100.0, "net_weight_kg": 100.0, "quantity": 10.0, "freight_usd": 80.0,
        "insurance_usd": 20.0, "duty_rate": 0.06, "permit_no": "",
    })


def _issue(day: pd.Timestamp, prices: dict[tuple[str, str], float]) -> pd.DataFrame:
    """One issue as silver holds it: its rows partitioned by ``effective_date`` (the issue's valid_from)."""
    return pd.DataFrame({"hs_code": [k[0] for k in prices], "origin_country": [k[1] for k in prices],
                         "ref_unit_price_usd_kg": list(prices.values()), "effective_date": day})


ITEMS = _items([
    ("2025-12-31", HS, "CN"),  # before any issue: NaN
    ("2026-01-01", HS, "CN"),  # the first issue's own day: in force
    ("2026-03-31", HS, "CN"),  # last day of the first issue
    ("2026-04-01", HS, "CN"),  # the second issue's day
    ("2026-05-15", HS, "CN"),
    ("2026-05-15", HS, "US"),  # only the first issue prices this origin: it stays in force
    ("2026-02-10", HS_OTHER, "CN"),  # only the second issue prices this code: NaN before it
    ("2026-04-02", HS_OTHER, "CN"),
    ("2026-05-15", "0901110000", "CN"),  # never priced
])
FIRST = _issue(JAN, {(HS, "CN"): 20.0, (HS, "US"): 25.0})
SECOND = _issue(APR, {(HS, "CN"): 40.0, (HS_OTHER, "CN"): 5.0})


def test_each_item_gets_the_issue_in_force_on_its_day():
    # Issues passed in any order (silver partitions are not sorted by date on every read).
    r = reference_asof(ITEMS, pd.concat([SECOND, FIRST], ignore_index=True))
    want = [np.nan, 20.0, 20.0, 40.0, 40.0, 25.0, np.nan, 5.0, np.nan]
    np.testing.assert_array_equal(r, want)
    f = base_features(ITEMS, pd.concat([FIRST, SECOND], ignore_index=True), TaxSettings())
    np.testing.assert_allclose(f.log_ref_ratio, np.log(10.0 / np.asarray(want)))  # NaN where no price


def test_a_later_issue_never_changes_earlier_items():
    """No leakage: the features of items before an issue are the same with or without that issue."""
    before = ITEMS.declaration_date < APR
    only_first = base_features(ITEMS, FIRST, TaxSettings())
    both = base_features(ITEMS, pd.concat([FIRST, SECOND], ignore_index=True), TaxSettings())
    pd.testing.assert_frame_equal(only_first[before.to_numpy()], both[before.to_numpy()])
    assert not np.allclose(only_first.log_ref_ratio[~before], both.log_ref_ratio[~before], equal_nan=True)
    # A still later issue (next quarter) changes nothing up to its day either.
    later = _issue(pd.Timestamp("2026-07-01"), {(HS, "CN"): 99.0, (HS_OTHER, "CN"): 99.0})
    three = base_features(ITEMS, pd.concat([FIRST, SECOND, later], ignore_index=True), TaxSettings())
    pd.testing.assert_frame_equal(three, both)


def test_undated_rows_and_empty_inputs():
    # A row without a date is never in force; no reference at all gives NaN everywhere.
    undated = FIRST.assign(effective_date=pd.NaT)
    assert np.isnan(reference_asof(ITEMS, undated)).all()
    assert np.isnan(reference_asof(ITEMS, FIRST.iloc[:0])).all()
    assert len(reference_asof(ITEMS.iloc[:0], FIRST)) == 0
    # A frame without the date column is one issue in force on every day (the last row of a pair wins).
    plain = pd.concat([FIRST, SECOND], ignore_index=True).drop(columns="effective_date")
    np.testing.assert_array_equal(reference_asof(ITEMS, plain),
                                  [40.0, 40.0, 40.0, 40.0, 40.0, 25.0, 5.0, 5.0, np.nan])
