"""Downstream readers: the scored folder (and every partitioned table the product writes) reads as one
hive-partitioned table with pandas, pyarrow and DuckDB, the partition key coming back from the path."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sunat_pipeline.selection.output import COLUMNS, KEY, read_scored, write_scored
from sunat_pipeline.settings import get_settings

DAYS = [date(2026, 7, 1), date(2026, 7, 2), date(2026, 7, 5)]
SORT = ["declaration_id", "item_no"]


def _day(d: date, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    ch = rng.choice(["RED", "YELLOW", "GREEN"], n)
    return pd.DataFrame({
        "declaration_id": [f"118-{d}-{i // 2:04d}" for i in range(n)], "item_no": np.arange(n) % 2 + 1,
        "declaration_date": d, "customs_office": "118", "importer_id": "20100000001", "declarant_id": "B1",
        "hs_code": "8471300000", "origin_country": "CN", "fob_usd": 100.0, "cif_usd": 110.0,
        "fraud_probability": p, "expected_revenue_usd": p * 50, "uncertainty": 0.1, "rule_score": 0.0,
        "rule_hits": [["REV-01"]] * n, "channel": ch, "selection_reason": "exploitation",
        "reasons": [["model: x"]] * n, "model_name": "m", "model_version": "1", "rule_weights_version": "rw-initial",
        "run_id": "r", "scored_at": pd.Timestamp(datetime(2026, 7, 1, tzinfo=UTC)), "mandatory": False,
        "revenue_if_fraud_usd": 50.0, "selection_basis": "exploitation:expected_revenue",
        "declaration_fraud_probability": p, "declaration_expected_revenue_usd": p * 50, "workload_units": 1.0,
        "selection_probability": 1.0, "model_fraud_probability": p, "novelty": 0.05, "documentary_blind_share": 0.2,
    })[COLUMNS]


def assert_reads_as_hive_table(folder: Path, key: str) -> pd.DataFrame:
    """Every file of ``folder`` lacks ``key``; pandas, pyarrow (dataset and read_table) and DuckDB read the
    folder as one table with ``key`` from the path; all give the same rows. Returns the pandas read."""
    files = sorted(folder.glob(f"{key}=*/*.parquet"))
    assert files, folder
    assert not [f for f in files if key in pq.read_schema(f).names], f"files of {folder} carry {key}"
    reads = {
        "pandas": pd.read_parquet(folder),
        "pyarrow.dataset": ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas(),
        "pyarrow.parquet": pq.read_table(folder).to_pandas(),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true)").df(),
    }
    ref = None
    for how, df in reads.items():
        assert key in df.columns, how
        df = df.assign(**{key: pd.to_datetime(df[key].astype(str)).dt.strftime("%Y-%m-%d")})
        cols = [c for c in df.columns if df[c].map(lambda v: isinstance(v, list | np.ndarray)).sum() == 0]
        df = df[sorted(cols)].astype(str).sort_values(sorted(cols)).reset_index(drop=True)
        if ref is None:
            ref = df
        else:
            pd.testing.assert_frame_equal(df, ref, obj=f"{folder.name} read by {how}")
    assert len(ref) == sum(pq.read_metadata(f).num_rows for f in files)
    return reads["pandas"]


@pytest.fixture
def scored(tmp_path):
    s = get_settings(lake_root=tmp_path / "data")
    frames = [_day(d, n, i) for i, (d, n) in enumerate(zip(DAYS, (6, 4, 8), strict=True))]
    for d, f in zip(DAYS, frames, strict=True):
        write_scored(s, d, f)
    return s, pd.concat(frames, ignore_index=True)


def test_the_scored_folder_reads_every_way_with_its_date(scored):
    s, written = scored
    assert_reads_as_hive_table(s.scored_dir, KEY)
    ours = read_scored(s)
    assert list(ours.columns) == COLUMNS  # the contract's order, the date back in its place
    pd.testing.assert_frame_equal(ours, written)  # same rows, values and types as scoring wrote them
    duck = duckdb.sql(f"SELECT declaration_id, item_no, {KEY} FROM read_parquet('{s.scored_dir}/*/*.parquet', "
                      "hive_partitioning = true)").df().sort_values(SORT).reset_index(drop=True)
    assert duck[KEY].dt.date.tolist() == written.sort_values(SORT)[KEY].tolist()  # DuckDB types it DATE
    assert read_scored(s, since=DAYS[1], upto=DAYS[1]).declaration_id.str.contains(str(DAYS[1])).all()
