"""Test helper: a small lake as the Airflow risk pages see it after two daily runs (tests of
sunat_pipeline/reporting/riskview.py and plugins/risk_targeting.py).

Two live days of the short world scored by hand (rules stand in for the model), fed back, inspected and
reported (KPI tables, drift, HTML report); a broken customs extract landed on the second day (quarantined);
a champion registered in MLflow (a version of a training run, without artifacts: the pages read only its
version and run)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from handscore import score_by_hand
from tinyworld import SHORT_WORLD, lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.modeling import registry
from sunat_pipeline.reporting import monitor, report
from sunat_pipeline.reporting.kpi_tables import TARGETED
from sunat_pipeline.settings import Settings
from sunat_sim.inspection import inspect_day

D1, D2, D3 = SHORT_WORLD.live_dates  # D3: landed, never scored (a day without a report)
BROKEN = f"customs__{D2}__extra.csv"


class _Stub:
    """The drift reference's model: a fixed function of the features (no MLflow)."""

    def predict(self, X):
        return pd.DataFrame({"fraud_probability": 1 / (1 + np.exp(-(X.log_cif.to_numpy() - 9)))})


def register_champion(s: Settings) -> tuple[str, str]:
    """A registered version under the champion alias: (version, run id)."""
    c = registry.client(s)
    run = c.create_run(registry.experiment(s), tags={"training_date": D1.isoformat()})
    c.set_terminated(run.info.run_id)
    c.create_registered_model(s.registered_model)
    mv = c.create_model_version(s.registered_model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    c.set_registered_model_alias(s.registered_model, registry.CHAMPION, mv.version)
    return str(mv.version), run.info.run_id


_BUILT: dict[str, Settings] = {}


def build(tiny_world, tmp_path_factory) -> Settings:
    """The lake, built once per test session: read it, never write it (``copy`` gives a module its own)."""
    if "lake" not in _BUILT:
        _BUILT["lake"] = _build(tiny_world, tmp_path_factory.mktemp("risk_pages"))
    return _BUILT["lake"]


def _build(tiny_world, folder: Path) -> Settings:
    s = tiny_world(SHORT_WORLD, upto=D1).copy(folder)
    (s.landing / "customs" / BROKEN).write_text("not,a,customs\nfile,at,all\n")
    for d in (D1, D2):
        for src in SOURCES:
            ingest.ingest_source(s, src, d)
        score_by_hand(s, d)
        feedback.update(s, d)
        inspect_day(s, d)
        if d == D1:
            monitor.reference_frame(s, "0", model=_Stub(), training_date=D1)
        report.publish(s, d)
    register_champion(s)
    return s


def copy(s: Settings, folder: Path) -> Settings:
    """A copy of the lake and its MLflow store for a module that writes (overrides)."""
    shutil.copytree(s.lake, folder / "data")
    shutil.copy(s.tracking_uri.removeprefix("sqlite:///"), folder / "mlflow.db")
    return lake_settings(folder)


def env(s: Settings) -> dict[str, str]:
    """What a process needs to see this lake (the pages read fresh settings per request)."""
    return {"SUNAT_LAKE_ROOT": str(s.lake), "SUNAT_MLFLOW_TRACKING_URI": s.tracking_uri}


def parquet_counts(s, day: date) -> pd.DataFrame:
    """Declarations per office and channel, straight from the day's scored Parquet."""
    glob = str(s.scored_dir / f"declaration_date={day}" / "*.parquet")
    with duckdb.connect() as con:
        return con.execute(f"""
            SELECT customs_office, channel, COUNT(DISTINCT declaration_id) AS n
            FROM read_parquet('{glob}') GROUP BY ALL""").df().pivot(
            index="customs_office", columns="channel", values="n").fillna(0).astype(int)


def parquet_hit_rates(s, day: date) -> dict[str, tuple[int, int]]:
    """(frauds, inspected declarations) of targeted and random selections over every scored day up to ``day``,
    from the scored Parquet and the offence database as of ``day``."""
    off = feedback.offences(s, asof=day)[["declaration_id", "item_no", "result"]].astype({"item_no": "int64"})
    glob = str(s.scored_dir / "declaration_date=*" / "*.parquet")
    with duckdb.connect() as con:
        con.register("off", off)
        d = con.execute(f"""
            SELECT sc.declaration_id, ANY_VALUE(sc.selection_reason) AS reason,
                   BOOL_OR(o.result IS NOT NULL) AS inspected, BOOL_OR(o.result = 'FRAUD') AS fraud
            FROM read_parquet('{glob}', hive_partitioning = true) sc
            LEFT JOIN off o ON o.declaration_id = sc.declaration_id AND o.item_no = sc.item_no
            WHERE sc.declaration_date <= DATE '{day}'
            GROUP BY sc.declaration_date, sc.declaration_id""").df()
    out = {}
    for name, m in (("targeted", d.reason.isin(TARGETED)), ("random", d.reason == "random")):
        x = d[m & d.inspected]
        out[name] = (int(x.fraud.fillna(False).sum()), len(x))
    return out
