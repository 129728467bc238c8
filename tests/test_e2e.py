"""End to end through Airflow on a tiny world: two consecutive days, each followed by the inspections,
then day 1 again. Runs the real DAG (`airflow dags test`), the real GX suites, MLflow and XGBoost."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import duckdb
import pandas as pd
import pytest

from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import weights
from sunat_pipeline.orchestration.runner import run_dag
from sunat_pipeline.selection.output import CONTRACT_COLUMNS, read_scored
from sunat_pipeline.settings import get_settings
from sunat_sim.inspection import inspect_day
from sunat_sim.world import WorldConfig, generate, truth_dir

pytestmark = pytest.mark.slow

RED, YELLOW = 2, 3


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("e2e")
    # Small capacity so selection is a real choice in a small world; set through the environment,
    # as an administration would, so the Airflow task processes see it too.
    monkeypatch_module.setenv("SUNAT_SELECTION__DEFAULT_CAPACITY", json.dumps({"red": RED, "yellow": YELLOW}))
    monkeypatch_module.setenv("SUNAT_SELECTION__DEFAULT_CAPACITY_MODE", "fixed")  # the same capacity everywhere
    monkeypatch_module.setenv("SUNAT_LAKE_ROOT", str(tmp / "data"))
    monkeypatch_module.setenv("SUNAT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    monkeypatch_module.setenv("AIRFLOW_HOME", str(tmp / "airflow"))
    s = get_settings()
    cfg = WorldConfig(seed=11, history_days=60, live_days=2, declarations_per_day=80, min_delay_days=1,
                      max_delay_days=1)
    generate(cfg, s.lake)
    d1, d2 = cfg.live_dates
    run_dag(s, "sunat_daily", d1)
    inspect_day(s, d1)
    run_dag(s, "sunat_daily", d2)
    inspect_day(s, d2)
    return s, d1, d2


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _scored(s, d) -> pd.DataFrame:
    return pd.read_parquet(s.scored_dir / f"declaration_date={d}" / "part-0.parquet")


def test_scored_partitions_follow_the_contract(world):
    s, d1, d2 = world
    for d in (d1, d2):
        df = read_scored(s, upto=d, since=d)
        assert list(df.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
        assert (duckdb.sql(f"select count(*) from read_parquet('{s.scored_dir}/*/*.parquet', hive_partitioning=true) "
                           f"where declaration_date = '{d}'").fetchall()[0][0] == len(df))
        assert len(df) > 0
        assert set(df.channel) <= {"RED", "YELLOW", "GREEN"}
        sel = df[df.channel != "GREEN"]
        assert len(sel) and all(len(r) > 0 for r in sel.reasons), "a selected item without reasons"
        assert (df.groupby("declaration_id").channel.nunique() == 1).all(), "one channel per declaration"
        assert df.fraud_probability.between(0, 1).all()


def test_channel_counts_never_exceed_capacity(world):
    s, d1, d2 = world
    for d in (d1, d2):
        decl = _scored(s, d).drop_duplicates("declaration_id")
        for office, g in decl.groupby("customs_office"):
            n_mand = int((g.selection_reason == "mandatory_rule").sum())
            red = int((g.channel == "RED").sum())
            yellow = int((g.channel == "YELLOW").sum())
            # Mandatory rules always select; only they may go beyond the office's capacity. Below it, the
            # capacity is used in full: an office with fewer declarations than capacity inspects them all.
            assert red <= max(RED, n_mand), (d, office, red)
            assert red + yellow == max(n_mand, min(RED + YELLOW, len(g))), (d, office, len(g), n_mand, red, yellow)


def test_day1_outcomes_reach_the_offence_database(world):
    s, d1, d2 = world
    off = feedback.offences(s)
    ours = off[(pd.to_datetime(off.inspection_date).dt.date == d1) & (off.selection_reason != "legacy")]
    assert len(ours) > 0
    assert (pd.to_datetime(ours.reported_date).dt.date == d2).all()
    scored = _scored(s, d1)
    inspected = scored[scored.channel != "GREEN"]
    assert set(zip(ours.declaration_id, ours.item_no, strict=True)) == set(
        zip(inspected.declaration_id, inspected.item_no, strict=True))
    assert not off.record_id.duplicated().any()


def test_day2_uses_the_weights_produced_by_day1_feedback(world):
    s, d1, d2 = world
    assert _scored(s, d1).rule_weights_version.unique().tolist() == [weights.version_before(s, d1)]
    assert _scored(s, d2).rule_weights_version.unique().tolist() == [f"rw-{d1}"]
    assert weights.versions(s)[-2:] == [f"rw-{d1}", f"rw-{d2}"]
    assert json.loads((s.gold / "rule_weights" / f"rw-{d2}.json").read_text())["previous"] == f"rw-{d1}"


def test_mlflow_holds_a_registered_champion(world):
    from mlflow import MlflowClient

    s, _, _ = world
    mv = MlflowClient(s.tracking_uri).get_model_version_by_alias(s.registered_model, "champion")
    assert int(mv.version) >= 1
    assert set(_scored(s, world[1]).model_version) == {str(mv.version)}


def test_rerunning_day1_changes_nothing(world):
    s, d1, d2 = world
    gold_before = _digest(s.gold)
    silver_before = _digest(s.silver)
    # The ground truth is hidden during the re-run: the pipeline must never need it.
    hidden = truth_dir(s.lake).with_name("truth_hidden")
    truth_dir(s.lake).rename(hidden)
    try:
        run_dag(s, "sunat_daily", d1)
    finally:
        hidden.rename(truth_dir(s.lake))
    assert _digest(s.gold) == gold_before
    assert _digest(s.silver) == silver_before
    assert not any(s.lake.rglob(".*.tmp")), "a temporary file was left behind"
    assert d2 == d1 + timedelta(days=1)
