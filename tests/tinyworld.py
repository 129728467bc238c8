"""Test helper: the tiny synthetic worlds the tests share (the ``tiny_world`` fixture in conftest.py builds,
ingests and caches them once per session).

Two shapes cover every module; a module that needs another passes overrides to the fixture, which adds one
more world to the session."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pandas as pd

from sunat_pipeline.ingest.reading import read_typed
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.settings import Settings, get_settings
from sunat_sim.world import WorldConfig

# Outcomes reported the day after inspection: what the pipeline selects on day D comes back on D+1. The live
# days are weekdays (Tuesday to Thursday), full days with more declarations than an office's capacity.
SHORT_WORLD = WorldConfig(seed=5, history_days=40, live_days=3, declarations_per_day=60, min_delay_days=1,
                          max_delay_days=1)
# 60 history days so January's tax returns (filed 2026-02-12) are known well before the last days; delays of
# 1-5 days so outcomes of inspections before a day keep being reported after it, into the live days.
LONG_WORLD = WorldConfig(seed=11, history_days=60, live_days=5, declarations_per_day=40, min_delay_days=1,
                         max_delay_days=5)
# Training tests check the mechanics (a model that beats random order on its holdout): a 60-day world at 40
# declarations a day holds too few labels to learn the realistic world, so they use the easy preset.
LEARNABLE_WORLD = replace(LONG_WORLD, difficulty="easy")


def lake_settings(folder: Path, **kw) -> Settings:
    """Settings of a lake at ``folder``/data with its own MLflow store beside it (``kw`` as for get_settings)."""
    return get_settings(lake_root=folder / "data", mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db", **kw)


@dataclass(frozen=True)
class TinyWorld:
    """A generated world, landed and ingested up to ``upto`` (None: landed only). ``lake`` is shared by every
    module of the session: read it, never write it; ``copy`` gives a module a lake of its own."""

    cfg: WorldConfig
    upto: date | None
    lake: Path

    @property
    def landing(self) -> Path:
        return self.lake / "landing"

    def copy(self, folder: Path, **kw) -> Settings:
        """The lake copied to ``folder``/data; the settings of that copy (``kw`` as for get_settings)."""
        s = lake_settings(folder, **kw)
        shutil.copytree(self.lake, s.lake)
        return s

    def landed_frames(self) -> dict[str, pd.DataFrame]:
        """Typed frames of every landed extract: what silver would hold after ingesting everything."""
        def load(source: str) -> pd.DataFrame:
            frames = [read_typed(f, SOURCES[source]) for f in sorted((self.landing / source).glob("*.csv"))]
            return pd.concat([f for f in frames if len(f)], ignore_index=True)

        return {s: load(s) for s in ("customs", "enforcement", "tax", "exchange_rates", "reference_prices")}
