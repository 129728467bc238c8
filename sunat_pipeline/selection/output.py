"""The scored output (the contract of docs/output.md): its columns, and how it is written and read.

``gold/scored_declarations/declaration_date=D/part-0.parquet``, one file per declaration date. The date is
the partition key and lives in the path only (hive convention, so pandas, pyarrow, DuckDB and Spark read
the folder as one table); ``read_scored`` returns it as a column in its contract position. Beside each
partition, ``gold/score_runs/declaration_date=D/run.json`` is the day's run manifest (provenance).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from sunat_pipeline.lake.store import partition, read_partitioned, write_partition
from sunat_pipeline.settings import Settings

# Adding, removing or retyping a column is a new schema version (docs/output.md), never a silent change.
SCHEMA_VERSION = "5"
KEY = "declaration_date"  # the partition key
RULES_ONLY = "rules"  # the model version recorded when the rules alone scored the day (selection.scorer: rules)
CONTRACT_COLUMNS = [
    "declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
    "hs_code", "origin_country", "fob_usd", "cif_usd", "fraud_probability", "expected_revenue_usd",
    "uncertainty", "rule_score", "rule_hits", "channel", "selection_reason", "reasons", "model_name",
    "model_version", "rule_weights_version", "run_id", "scored_at",
]
# Extra columns after the contract ones (docs/output.md lists them with the version that added them).
EXTRA_COLUMNS = [
    "mandatory", "revenue_if_fraud_usd",  # 1
    "selection_basis", "declaration_fraud_probability", "declaration_expected_revenue_usd", "workload_units",  # 2
    "selection_probability",  # 4
    "model_fraud_probability", "novelty", "documentary_blind_share",  # 5
]
COLUMNS = CONTRACT_COLUMNS + EXTRA_COLUMNS


def write_scored(settings: Settings, day: date, out: pd.DataFrame) -> Path:
    """Replace day ``day``'s partition with ``out`` (the contract columns; the date goes to the path)."""
    return write_partition(out[COLUMNS], settings.scored_dir, KEY, day, replace=True)


def read_scored(settings: Settings, upto: date | None = None, since: date | None = None,
                columns: list[str] | None = None, where: ds.Expression | None = None) -> pd.DataFrame:
    """Scored items of the days in [since, upto], day by day, with ``declaration_date`` (a date) from the
    path; all columns in contract order unless ``columns`` projects; ``where`` filters rows
    (``lake.store.read_partitioned``)."""
    df = read_partitioned(settings.scored_dir, KEY, upto=upto, since=since, columns=columns,
                          empty=columns or COLUMNS, where=where)
    if columns is None:
        df = df[[c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]]
    return df


def _runs_dir(settings: Settings) -> Path:
    return settings.gold / "score_runs"


def manifest_path(settings: Settings, day: date) -> Path:
    return partition(_runs_dir(settings), KEY, day) / "run.json"


def manifests(settings: Settings) -> list[dict]:
    """The run manifest of every scored day, oldest day first."""
    return [json.loads(p.read_text()) for p in sorted(_runs_dir(settings).glob(f"{KEY}=*/run.json"))]
