"""Test isolation: nothing a test does may touch the project's own lake, MLflow store or Airflow home."""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from tinyworld import SHORT_WORLD, TinyWorld, lake_settings

# None of these reads the environment on import (settings are read per call), so the sandbox below still
# applies to everything they do.
from sunat_pipeline import ingest
from sunat_pipeline.ingest.sources import SOURCES
from sunat_sim.world import WorldConfig, generate

_SANDBOX = Path(tempfile.mkdtemp(prefix="sunat-tests-"))
os.environ["SUNAT_LAKE_ROOT"] = str(_SANDBOX / "data")
os.environ["SUNAT_MLFLOW_TRACKING_URI"] = f"sqlite:///{_SANDBOX / 'mlflow.db'}"
os.environ["AIRFLOW_HOME"] = str(_SANDBOX / "airflow")
for var in ("SUNAT_CONFIG", "MLFLOW_TRACKING_URI", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__DAGS_FOLDER"):
    os.environ.pop(var, None)
os.environ["GX_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Factory: ``tiny_world(base, upto, **overrides)`` -> the TinyWorld of ``replace(base, **overrides)``, every
    source ingested up to ``upto`` (a date, an index into the live dates, or None: landed only) the way the
    daily DAG ingests a day, so the pipeline sees only what a source system landed. Generating and ingesting
    with the real GX suites costs seconds: each distinct (config, day) is built once per session and cached."""
    root = tmp_path_factory.mktemp("tiny_worlds")
    cache: dict[tuple[WorldConfig, date | None], TinyWorld] = {}

    def build(base: WorldConfig = SHORT_WORLD, upto: date | int | None = None, **overrides) -> TinyWorld:
        cfg = replace(base, **overrides)
        day = cfg.live_dates[upto] if isinstance(upto, int) else upto
        if (cfg, day) not in cache:
            landed = None if day is None else build(cfg)  # ingest a copy: the landed world stays as generated
            folder = root / f"world-{len(cache)}"
            if landed is None:
                generate(cfg, lake_settings(folder).lake)
            else:
                s = landed.copy(folder)
                for src in SOURCES:
                    ingest.ingest_source(s, src, day)
            cache[cfg, day] = TinyWorld(cfg, day, lake_settings(folder).lake)
        return cache[cfg, day]

    return build
