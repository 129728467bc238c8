"""Each office's inspection capacity for a day (docs/selection.md, "Capacity").

An explicit per-office capacity in the settings always wins. Otherwise, in ``volume`` mode, the capacity is a
share of the office's average declarations a day over the ``capacity_window_days`` lodged before the scored
day (point in time: the day itself and later days never count); an office without such history, or every
office in ``fixed`` mode, gets ``default_capacity``.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pandas as pd

from sunat_pipeline.settings import OfficeCapacity, SelectionSettings

log = logging.getLogger(__name__)


def office_volumes(customs: pd.DataFrame, day: date, window_days: int) -> dict[str, float]:
    """Average declarations a day per office over the window before ``day`` (customs silver items).

    The average is over the days in the window on which any declaration was lodged, so days the
    administration does not work (or before the history starts) do not dilute it."""
    if customs.empty:
        return {}
    # Compared as timestamps (midnight of each bound): the same rows as comparing dates, without a date object
    # per row of the whole history.
    d = pd.to_datetime(customs.declaration_date)
    recent = customs.loc[(d < pd.Timestamp(day)) & (d >= pd.Timestamp(day - timedelta(days=window_days))),
                         ["declaration_id", "declaration_date", "customs_office"]].drop_duplicates("declaration_id")
    days = recent.declaration_date.nunique()
    if not days:
        return {}
    return {str(o): n / days for o, n in recent.customs_office.astype(str).value_counts().sort_index().items()}


def _source(cfg: SelectionSettings, office: str, volume: float | None) -> str:
    if office in cfg.capacity:
        return "explicit"
    if cfg.default_capacity_mode == "volume":
        return "volume" if volume is not None and volume > 0 else "default_no_history"
    return "default_fixed"


def office_capacities(cfg: SelectionSettings, offices, volumes: dict[str, float]) -> dict[str, OfficeCapacity]:
    """The capacity of each office in ``offices`` given the offices' average daily volumes."""
    return {str(o): cfg.capacity_for(str(o), volumes.get(str(o))) for o in sorted({str(o) for o in offices})}


def capacity_record(cfg: SelectionSettings, capacities: dict[str, OfficeCapacity],
                    volumes: dict[str, float]) -> dict[str, dict]:
    """What the run manifest records per office: the capacity used, where it came from, the volume behind it."""
    out = {}
    for o, cap in sorted(capacities.items()):
        v = volumes.get(o)
        out[o] = {"red": cap.red, "yellow": cap.yellow, "unit": cap.unit, "source": _source(cfg, o, v),
                  "daily_volume": None if v is None else round(float(v), 3)}
    counts = pd.Series([r["source"] for r in out.values()]).value_counts().sort_index().to_dict()
    log.info("capacity of %d offices (%s mode): %s", len(out), cfg.default_capacity_mode, counts)
    return out
