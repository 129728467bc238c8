"""The cross-source check: an inspection result must follow a declaration that customs delivered.

An enforcement row whose declaration item (``declaration_id``, ``item_no``) is not in customs silver, or
that was inspected before the declaration was lodged, is *held*: moved out of enforcement silver into
``silver/_held/enforcement/held.parquet`` with its reason, listed in ``held.report.txt`` beside it, and logged.
Held rows are checked again at every reconciliation and released into silver once they agree with customs (a
customs file quarantined and corrected later, a rectified declaration date), or once a later version of the
same record supersedes them (it then goes to the history, like any superseded version). Nothing is deleted.

It runs in ``reconcile``, after every source of the day is ingested: the DAG ingests the sources in parallel,
and a back-load lands customs and enforcement together, so a check at enforcement's own ingest could see
customs half-loaded. Customs for day D lands by D and its inspection results 1-5 days later, so a result is
never held only because its declaration's file is being ingested at the same time.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from sunat_pipeline.ingest.landing import source_lock
from sunat_pipeline.ingest.silver_tables import HISTORY_DIR, BatchOrder, merge_silver, silver
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.lake.store import (
    atomic_write_bytes,
    partition,
    read_partitioned,
    replace_partition,
    write_parquet_atomic,
)
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

HELD_DIR = "_held"  # silver/_held/enforcement/held.parquet (+ held.report.txt)
REASONS = {
    "unknown_declaration": "no such declaration item in customs silver",
    "inspected_before_declaration": "inspected before the declaration was lodged (customs declaration_date)",
}
SHOWN = 50  # held rows listed in the text report


def held_path(settings: Settings):
    return settings.silver / HELD_DIR / "enforcement" / "held.parquet"


def held(settings: Settings) -> pd.DataFrame:
    """The enforcement rows held back: the enforcement columns, ``_batch_sha256``, ``_held_reason`` and
    ``_held_since`` (the reconciliation day that first held the row)."""
    p = held_path(settings)
    if p.exists():
        return pd.read_parquet(p)
    return pd.DataFrame(columns=[*SOURCES["enforcement"].columns, "_batch_sha256", "_held_reason", "_held_since"])


def _reasons(settings: Settings, rows: pd.DataFrame) -> np.ndarray:
    """Per row: the reason to hold it, or None when it agrees with customs silver. Customs comes through the
    lake's cached reader (the day's scoring reads the same files), not a fresh scan of every partition; each
    row is looked up by its (declaration, item) key in customs' first declaration date per item (a missing key
    never matches; a missing inspection date is never before)."""
    spec = SOURCES["customs"]
    customs = read_partitioned(settings.silver / spec.name, spec.partition_by,
                               columns=["declaration_id", "item_no", "declaration_date"])
    if customs.empty:
        return np.full(len(rows), "unknown_declaration", dtype=object)
    first = customs.groupby(["declaration_id", "item_no"], sort=False).declaration_date.min()
    item = rows["item_no"].astype("Int64")
    known = (rows["declaration_id"].notna() & item.notna()).to_numpy()
    pos = np.full(len(rows), -1)
    if known.any():
        pos[known] = first.index.get_indexer(pd.MultiIndex.from_arrays(
            [rows["declaration_id"].astype("str")[known], item[known].astype("int64")]))
    lodged = pd.to_datetime(first.to_numpy()[pos.clip(0)] if len(first) else np.full(len(rows), np.datetime64("NaT")))
    before = (pos >= 0) & (pd.to_datetime(rows["inspection_date"]).to_numpy() < lodged.to_numpy())
    out = np.full(len(rows), None, dtype=object)
    out[pos < 0] = "unknown_declaration"
    out[before] = "inspected_before_declaration"
    return out


def check_enforcement(settings: Settings, day: date) -> dict:
    """Hold the enforcement rows of silver that contradict customs; release held rows that no longer do.
    Returns counts: rows held now, newly held by this call, released by this call."""
    spec = SOURCES["enforcement"]
    cols = [*spec.columns, "_batch_sha256"]
    with source_lock(settings, "enforcement"):
        current, kept = silver(settings, "enforcement"), held(settings)
        if not len(current) and not len(kept):
            return {"held_rows": 0, "newly_held": 0, "released_rows": 0}
        # Nothing held (the usual day): no concatenation with an empty frame of object columns, which would turn
        # every column of silver into Python objects.
        cand = pd.concat([current[cols].assign(_held=False), kept[cols].assign(_held=True)], ignore_index=True) \
            if len(kept) else current[cols].assign(_held=False).reset_index(drop=True)
        reason = _reasons(settings, cand)
        order = BatchOrder.build(settings, "enforcement")
        rank = cand["_batch_sha256"].map(order.rank).fillna(-1)
        newest = rank.groupby(cand["record_id"]).transform("max")
        hold = ~cand["_held"] & pd.notna(reason)
        # A held row leaves the hold when a later version in silver supersedes it (to the history), or when it
        # agrees with customs (back into silver).
        # (Python strings: the string dtype's own isin makes an Arrow scalar of every value, about half a second.)
        superseded = cand["_held"] & cand["record_id"].astype(object).isin(
            current["record_id"].astype(object)) & (rank < newest) if len(kept) else cand["_held"]
        agree = cand["_held"] & pd.isna(reason) & ~superseded
        release = superseded | agree
        if not hold.any() and not release.any():
            return {"held_rows": len(kept), "newly_held": 0, "released_rows": 0}
        for d, grp in cand[hold].groupby(spec.partition_by):
            pdir = partition(settings.silver / spec.name, spec.partition_by, pd.Timestamp(d).date())
            part = pd.concat([pd.read_parquet(f) for f in sorted(pdir.glob("*.parquet"))], ignore_index=True)
            out = part.merge(grp[["record_id", "_batch_sha256"]], how="left", indicator=True)
            replace_partition(part[(out["_merge"] == "left_only").to_numpy()].reset_index(drop=True), pdir)
        for sha, grp in cand[agree].groupby("_batch_sha256", sort=False):
            merge_silver(settings, spec, grp[cols].reset_index(drop=True), order, sha)
        if superseded.any():
            _to_history(settings, cand[superseded][cols], current, order)
        since = kept.set_index(["record_id", "_batch_sha256"])["_held_since"].to_dict() if len(kept) else {}
        still = cand[(cand["_held"] & ~release) | hold].copy()
        still["_held_reason"] = [r or "" for r in reason[((cand["_held"] & ~release) | hold).to_numpy()]]
        still["_held_since"] = [since.get(k, pd.Timestamp(day)) for k in zip(still.record_id, still._batch_sha256,
                                                                             strict=True)]
        _write(settings, still.drop(columns="_held").reset_index(drop=True), day)
    counts = {"held_rows": len(still), "newly_held": int(hold.sum()), "released_rows": int(release.sum())}
    if counts["held_rows"]:
        log.warning("cross-source check up to %s: %d enforcement rows held (%d new), %d released; see %s", day,
                    counts["held_rows"], counts["newly_held"], counts["released_rows"],
                    held_path(settings).with_name("held.report.txt"))
    else:
        log.info("cross-source check up to %s: %d held enforcement rows released, none held", day,
                 counts["released_rows"])
    return counts


def _to_history(settings: Settings, rows: pd.DataFrame, current: pd.DataFrame, order: BatchOrder) -> None:
    """Held versions a later version in silver superseded: into the history, beside the others."""
    spec = SOURCES["enforcement"]
    latest = current.assign(_rank=current["_batch_sha256"].map(order.rank).fillna(-1)).sort_values("_rank")
    by = latest.drop_duplicates("record_id", keep="last").set_index("record_id")["_batch_sha256"]
    rows = rows.assign(_superseded_by=rows["record_id"].map(by))
    rows["_batch_file"] = rows["_batch_sha256"].map(order.files).fillna("")
    rows["_superseded_by_file"] = rows["_superseded_by"].map(order.files).fillna("")
    for (d, sha), grp in rows.groupby([spec.partition_by, "_superseded_by"]):
        hdir = partition(settings.silver / HISTORY_DIR / spec.name, spec.partition_by, pd.Timestamp(d).date())
        write_parquet_atomic(grp.sort_values("record_id").reset_index(drop=True),
                             hdir / f"batch-{sha[:12]}-held.parquet")


def _write(settings: Settings, rows: pd.DataFrame, day: date) -> None:
    p = held_path(settings)
    report = p.with_name("held.report.txt")
    if not len(rows):
        p.unlink(missing_ok=True)
        report.unlink(missing_ok=True)
        return
    rows = rows.sort_values(["_held_since", "record_id", "_batch_sha256"], kind="stable").reset_index(drop=True)
    write_parquet_atomic(rows, p)
    lines = [f"HELD: {len(rows)} enforcement rows are kept out of silver until they agree with customs "
             f"(checked at every reconciliation; as of {day}, written {datetime.now(UTC).isoformat()[:19]}Z).",
             "Reasons: " + "; ".join(f"{k} = {v}" for k, v in REASONS.items()),
             "Next step: land the missing customs extract or its correction, or a corrected enforcement record; "
             "held rows are released (or superseded) automatically.", ""]
    for r in rows.head(SHOWN).to_dict("records"):
        lines.append(f"  {r['record_id']}: declaration {r['declaration_id']} item {r['item_no']}, inspected "
                     f"{pd.Timestamp(r['inspection_date']).date()}, reported {pd.Timestamp(r['reported_date']).date()}"
                     f", batch {r['_batch_sha256'][:12]}: {r['_held_reason']} (held since "
                     f"{pd.Timestamp(r['_held_since']).date()})")
    if len(rows) > SHOWN:
        lines.append(f"  ... and {len(rows) - SHOWN} more in {p}")
    atomic_write_bytes(report, "\n".join(lines).encode())
