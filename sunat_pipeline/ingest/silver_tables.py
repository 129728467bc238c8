"""Silver: the typed tables, one row per business key, partitioned by a date; and their history.

Accepted rows upsert silver partitions (each replaced atomically). A later version of a business key (a
rectification) supersedes the earlier one, which is kept in ``silver/_superseded/<source>/`` with the batch
that replaced it. "Later" is the batch order: available date, then file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.ingest.landing import records
from sunat_pipeline.ingest.sources import SOURCES, SourceSpec
from sunat_pipeline.lake.store import partition, read_partitioned, replace_partition, write_parquet_atomic
from sunat_pipeline.settings import Settings

HISTORY_DIR = "_superseded"  # silver/_superseded/<source>/<partition>=<date>/batch-<sha12>.parquet


@dataclass
class BatchOrder:
    """Accepted batches of a source in version order: (available date, file name). A rectification landed
    later supersedes; an older extract landed late does not overwrite a newer version."""

    rank: dict[str, int]
    files: dict[str, str]

    @classmethod
    def build(cls, settings: Settings, source: str, current: tuple[str, date, str] | None = None) -> BatchOrder:
        """The accepted batches of the manifest, and ``current`` (sha256, available date, file name): the
        batch being ingested, whose record is written last."""
        recs = [(r["sha256"], r.get("available_date") or "", r["file_name"]) for r in records(settings, source)
                if r.get("stored_at") == "bronze"]
        if current is not None:
            recs = [r for r in recs if r[0] != current[0]] + [(current[0], current[1].isoformat(), current[2])]
        recs.sort(key=lambda r: (r[1], r[2], r[0]))
        return cls({r[0]: i for i, r in enumerate(recs)}, {r[0]: r[2] for r in recs})


def _changed(old: pd.DataFrame, new: pd.DataFrame, key: list[str], cols: list[str]) -> tuple[pd.DataFrame, list]:
    """Rows of ``old`` whose values differ from the row of ``new`` with the same key, and that row's batch."""
    m = old.reset_index(drop=True).merge(new[key + cols + ["_batch_sha256"]], on=key, how="left",
                                         suffixes=("", "__new"))
    diff = np.zeros(len(m), bool)
    for c in cols:
        a, b = m[c], m[f"{c}__new"]
        same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy(dtype=bool)
        diff |= ~same
    return old.reset_index(drop=True)[diff], m.loc[diff, "_batch_sha256__new"].tolist()


def merge_silver(settings: Settings, spec: SourceSpec, df: pd.DataFrame, order: BatchOrder | None = None,
                  batch_sha: str | None = None) -> dict:
    """Upsert rows into silver partitions. Returns counts (rows written, superseded versions kept)."""
    base = settings.silver / spec.name
    key = list(spec.key)
    cols = [c for c in spec.columns if c not in key]
    batch_sha = batch_sha or (str(df["_batch_sha256"].iloc[0]) if len(df) else "")
    order = order or BatchOrder({batch_sha: 0}, {})
    mine = order.rank.get(batch_sha, 0)
    stats = {"silver_rows": 0, "superseded_rows": 0, "partitions": 0}
    for value, part in df.groupby(spec.partition_by, sort=True):
        d = pd.Timestamp(value).date()
        pdir = partition(base, spec.partition_by, d)
        part = part.reset_index(drop=True)
        files = sorted(pdir.glob("*.parquet"))
        history = []
        if files:
            existing = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            ex_rank = existing["_batch_sha256"].map(order.rank).fillna(-1).to_numpy()
            kx = pd.MultiIndex.from_frame(existing[key])
            kp = pd.MultiIndex.from_frame(part[key])
            overlap = kx.isin(kp)
            newer = overlap & (ex_rank > mine)  # a later version is already in silver: it stays
            replaced = overlap & ~newer
            loses = kp.isin(kx[newer])
            if replaced.any():
                old, by = _changed(existing[replaced], part, key, cols)
                history.append(old.assign(_superseded_by=by))
            if loses.any():
                old, by = _changed(part[loses], existing[newer], key, cols)
                history.append(old.assign(_superseded_by=by))
            merged = pd.concat([existing[~replaced], part[~loses]], ignore_index=True)
        else:
            merged = part
        merged = merged.drop_duplicates(key, keep="last").sort_values(key, kind="stable").reset_index(drop=True)
        hist = pd.concat(history, ignore_index=True) if history else None
        if hist is not None and len(hist):
            hist["_batch_file"] = hist["_batch_sha256"].map(order.files).fillna("")
            hist["_superseded_by_file"] = hist["_superseded_by"].map(order.files).fillna("")
            hdir = partition(settings.silver / HISTORY_DIR / spec.name, spec.partition_by, d)
            # Keyed by the batch being ingested: a retried ingest rewrites the same file, never adds one.
            write_parquet_atomic(hist.sort_values(key, kind="stable").reset_index(drop=True),
                                 hdir / f"batch-{batch_sha[:12]}.parquet")
            stats["superseded_rows"] += len(hist)
        replace_partition(merged, pdir)
        stats["silver_rows"] += len(part)
        stats["partitions"] += 1
    return stats


def silver(settings: Settings, source: str, upto: date | None = None, since: date | None = None) -> pd.DataFrame:
    """Read a silver table (optionally bounded by its partition date) with the partition as a date."""
    spec = SOURCES[source]
    return read_partitioned(settings.silver / source, spec.partition_by, upto=upto, since=since, empty=spec.columns)


def history(settings: Settings, source: str) -> pd.DataFrame:
    """Superseded versions of silver rows: each with the batch that supplied it (``_batch_sha256``,
    ``_batch_file``) and the batch that replaced it (``_superseded_by``, ``_superseded_by_file``)."""
    spec = SOURCES[source]
    return read_partitioned(settings.silver / HISTORY_DIR / source, spec.partition_by,
                            empty=[*spec.columns, "_batch_sha256", "_superseded_by"])
