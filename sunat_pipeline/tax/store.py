"""Where the monthly tax run keeps its tables: ``gold/<table>/month=YYYY-MM/part-0.parquet`` (hive layout, the
month in the path only), each partition replaced whole and atomically (``lake.store.replace_partition``), so a
re-run of a month leaves one file with the same rows, never two."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd

from sunat_pipeline.lake.store import atomic_write_bytes, partition, write_partition
from sunat_pipeline.settings import Settings

KEY = "month"
FEATURES, MODELS, SCORES, LIST, OUTCOMES = ("tax_features", "tax_models", "tax_scores", "tax_audit_list",
                                            "tax_audit_outcomes")


def table_dir(settings: Settings, table: str) -> Path:
    return settings.gold / table


def path(settings: Settings, table: str, month: str) -> Path:
    return partition(table_dir(settings, table), KEY, str(month)) / "part-0.parquet"


def write(settings: Settings, table: str, month: str, df: pd.DataFrame) -> Path:
    return write_partition(df.reset_index(drop=True), table_dir(settings, table), KEY, str(month), replace=True)


def read(settings: Settings, table: str, month: str) -> pd.DataFrame | None:
    """The month's partition (without the month column), or None when it was never written."""
    p = path(settings, table, month)
    return pd.read_parquet(p) if p.exists() else None


def months(settings: Settings, table: str) -> list[str]:
    """Months with a partition, oldest first."""
    base = table_dir(settings, table)
    return sorted(p.name.split("=", 1)[1] for p in base.glob(f"{KEY}=*") if (p / "part-0.parquet").exists())


def read_all(settings: Settings, table: str, before: str | None = None) -> pd.DataFrame:
    """Every month's partition (months before ``before`` only, if given), with the month as a column."""
    parts = [read(settings, table, m).assign(month=m) for m in months(settings, table) if before is None or m < before]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_json(settings: Settings, table: str, month: str, obj: dict) -> Path:
    p = partition(table_dir(settings, table), KEY, str(month)) / "run.json"
    atomic_write_bytes(p, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
    return p


def read_json(settings: Settings, table: str, month: str) -> dict | None:
    p = partition(table_dir(settings, table), KEY, str(month)) / "run.json"
    return json.loads(p.read_text()) if p.exists() else None


def published_date(settings: Settings, month: str) -> date:
    """When month M's tables are published: its run date, day ``tax_audit.run_day`` of M+1 (docs/tax.md)."""
    p = pd.Period(str(month), "M") + 1
    return date(p.year, p.month, settings.tax_audit.run_day)


def read_published(settings: Settings, table: str, upto: date, columns: list[str] | None = None) -> pd.DataFrame:
    """Every month's partition published on or before ``upto``, with ``month`` and ``published_date`` columns
    (what another part of the pipeline may know of the tax run on a day; empty frame of ``columns`` if none)."""
    parts = [pd.read_parquet(path(settings, table, m), columns=columns).assign(month=m, published_date=pub)
             for m in months(settings, table) if (pub := published_date(settings, m)) <= upto]
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame({c: pd.Series(dtype=object) for c in [*(columns or []), "month", "published_date"]})
