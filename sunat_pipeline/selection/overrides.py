"""Officer overrides: a declaration's channel changed by hand, with who and why, kept with its outcome.

An override is an event in an append-only store, one small JSON file per event, beside the day's scored
output (the declaration's date is looked up there):

    gold/overrides/declaration_date=YYYY-MM-DD/<recorded_at>-<override_id>.json

Nothing is ever rewritten: changing one's mind is a new event, and the latest event of a declaration is
the one in force. The scored Parquet keeps the policy's decision (so re-running a day stays byte-identical);
the inspection simulator (and a real inspection list) applies the overrides in force on top of it, and the
offence database carries the override next to the outcome it led to (``attach``).

    sunat-pipeline override --declaration 118-2026-10-0018000 --channel RED --officer OF042 --why "tip-off"
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from sunat_pipeline.lake.store import atomic_write_bytes, partition
from sunat_pipeline.selection.output import KEY, read_scored
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

CHANNELS = ("RED", "YELLOW", "GREEN")
COLUMNS = ["override_id", "declaration_id", "declaration_date", "customs_office", "channel", "channel_before",
           "model_channel", "selection_reason", "run_id", "officer_id", "why", "recorded_at", "recorded_by"]
# Columns ``attach`` adds to the offence database (null where no override was in force).
OFFENCE_COLUMNS = {"override_id": "override_id", "channel": "override_channel",
                   "channel_before": "override_from_channel", "officer_id": "override_officer",
                   "why": "override_why", "recorded_at": "override_recorded_at"}


def overrides_dir(settings: Settings) -> Path:
    return settings.gold / "overrides"


def _find(settings: Settings, declaration_id: str, day: date | None) -> tuple[date, pd.Series]:
    """The declaration's scored row (first item) and its date; the newest day when no date is given."""
    cols = ["declaration_id", "customs_office", "channel", "selection_reason", "run_id"]
    rows = read_scored(settings, upto=day, since=day, columns=[*cols, KEY],
                       where=ds.field("declaration_id") == declaration_id)
    if rows.empty:
        where = f"on {day}" if day else "in any scored day"
        raise LookupError(f"declaration {declaration_id!r} not found {where} under {settings.scored_dir}: "
                          "score its day first")
    row = rows[rows[KEY] == rows[KEY].max()].iloc[0]
    return row[KEY], row[cols]


def load(settings: Settings, days: Iterable[date] | None = None) -> pd.DataFrame:
    """Every override event (of the given declaration days, or all), oldest first."""
    base = overrides_dir(settings)
    if days is None:
        folders = sorted(base.glob(f"{KEY}=*")) if base.exists() else []
    else:
        folders = [partition(base, KEY, d) for d in sorted(set(days))]
    recs = [json.loads(f.read_text()) for d in folders if d.exists() for f in sorted(d.glob("*.json"))]
    if not recs:
        return pd.DataFrame(columns=COLUMNS)
    # reindex: ``recorded_by`` is absent from events recorded without a logged-in user (the command line).
    ev = pd.DataFrame(recs).reindex(columns=COLUMNS)
    return ev.sort_values(["recorded_at", "override_id"], kind="stable").reset_index(drop=True)


def in_force(settings: Settings, days: Iterable[date] | date | None = None) -> pd.DataFrame:
    """The override in force per declaration: its latest event."""
    if isinstance(days, date):
        days = [days]
    ev = load(settings, days)
    return ev.drop_duplicates("declaration_id", keep="last").reset_index(drop=True)


def record(settings: Settings, declaration_id: str, channel: str, officer: str, why: str,
           day: date | None = None, now: datetime | None = None, recorded_by: str | None = None) -> dict:
    """Record an officer's override of a scored declaration's channel; returns the event. ``recorded_by``:
    the authenticated account that submitted it (the Airflow UI's user), kept in the event."""
    channel = str(channel).upper()
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    officer, why = str(officer or "").strip(), str(why or "").strip()
    if not officer or not why:
        raise ValueError("an override needs the officer and the reason (--officer, --why)")
    d, row = _find(settings, declaration_id, day)
    current = in_force(settings, d)
    current = current[current.declaration_id == declaration_id]
    recorded_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rec = {"declaration_id": declaration_id, "declaration_date": d.isoformat(),
           "customs_office": str(row.customs_office), "channel": channel,
           "channel_before": str(current.channel.iat[0]) if len(current) else str(row.channel),
           "model_channel": str(row.channel), "selection_reason": str(row.selection_reason),
           "run_id": str(row.run_id), "officer_id": officer, "why": why, "recorded_at": recorded_at.isoformat()}
    if recorded_by:
        rec["recorded_by"] = str(recorded_by)
    rec = {"override_id": hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16], **rec}
    path = partition(overrides_dir(settings), KEY, d) / \
        f"{recorded_at:%Y%m%dT%H%M%SZ}-{rec['override_id']}.json"
    if not path.exists():  # the same event twice is one event
        atomic_write_bytes(path, json.dumps(rec, indent=2, sort_keys=True).encode())
    log.info("override %s: declaration %s %s -> %s by %s (%s)", rec["override_id"], declaration_id,
             rec["channel_before"], channel, officer, why)
    return {**rec, "path": str(path)}


def apply(settings: Settings, day: date, scored: pd.DataFrame) -> pd.DataFrame:
    """``scored`` (with declaration_id and channel) with the day's overrides in force applied."""
    ov = in_force(settings, day)
    if ov.empty:
        return scored
    new = scored.declaration_id.map(ov.set_index("declaration_id").channel)
    changed = new.notna() & (new != scored.channel)
    log.info("overrides of %s: %d declarations overridden, %d items change channel", day, len(ov),
             int(changed.sum()))
    return scored.assign(channel=new.fillna(scored.channel))


def attach(settings: Settings, db: pd.DataFrame) -> pd.DataFrame:
    """Offence-database rows with the override in force for their declaration (columns ``OFFENCE_COLUMNS``;
    null where none)."""
    days = pd.to_datetime(db.declaration_date, errors="coerce").dropna().dt.date.unique() if len(db) else []
    ov = in_force(settings, list(days))[["declaration_id", *OFFENCE_COLUMNS]].rename(columns=OFFENCE_COLUMNS)
    ov = ov.astype(object).where(ov.notna(), None)
    out = db.merge(ov, on="declaration_id", how="left")
    for c in OFFENCE_COLUMNS.values():
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out
