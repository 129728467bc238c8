"""The backtest's shared ingest (policy-independent sources ingested once per seed and day, given to every run as
hard links) replays exactly what a run ingesting every source itself does: same selections, same findings,
same metrics; and the links it makes follow the shared lake's replacements without ever changing a snapshot."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from sunat_pipeline import ingest
from sunat_pipeline.settings import get_settings
from sunat_sim import backtest, backtest_metrics, backtest_shared

TINY = {"seeds": [5], "live_days": 3, "history_days": 40, "per_day": 60, "difficulty": "easy", "workers": 1}
POLICIES = ["random", "hybrid"]
SCORED = ["declaration_id", "item_no", "channel", "selection_reason", "fraud_probability", "expected_revenue_usd",
          "model_version", "rule_weights_version"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    work = tmp_path_factory.mktemp("shared")
    shared = backtest.run(backtest.BacktestConfig(policies=POLICIES, **TINY), work / "shared")
    alone = backtest.run(backtest.BacktestConfig(policies=POLICIES, shared_ingest=False, **TINY), work / "alone")
    return work, shared, alone


def _scored(lake) -> pd.DataFrame:
    df = pd.read_parquet(lake + "/gold/scored_declarations")
    return df[[c for c in SCORED if c in df.columns] + ["declaration_date"]].sort_values(
        ["declaration_date", "declaration_id", "item_no"]).reset_index(drop=True)


def test_shared_ingest_replays_exactly_what_an_unshared_run_does(both):
    work, shared, alone = both
    assert [(r["seed"], r["policy"]) for r in shared] == [(r["seed"], r["policy"]) for r in alone]
    for a, b in zip(shared, alone, strict=True):
        da = [{k: v for k, v in d.items() if k != "seconds"} for d in a["days"]]
        db = [{k: v for k, v in d.items() if k != "seconds"} for d in b["days"]]
        assert da == db, a["policy"]
        pd.testing.assert_frame_equal(_scored(a["lake"]), _scored(b["lake"]))
        ma, mb = backtest_metrics.run_metrics(a["lake"]), backtest_metrics.run_metrics(b["lake"])
        assert ma["daily"] == mb["daily"] and ma["frauds_caught"] == mb["frauds_caught"], a["policy"]
        assert ma["revenue_recovered_usd"] == mb["revenue_recovered_usd"]
        assert [t["promoted"] for t in a["trainings"]] == [t["promoted"] for t in b["trainings"]]
        sa, sb = (get_settings(lake_root=r["lake"]) for r in (a, b))
        for source in [*backtest_shared.SHARED_SOURCES, "enforcement"]:
            pd.testing.assert_frame_equal(ingest.silver(sa, source), ingest.silver(sb, source), obj=source)


def test_a_run_gets_the_shared_files_as_links_and_ingests_only_its_outcomes(both):
    work, shared, _ = both
    last = backtest.run_dir(work / "shared", 5, "random")
    snap = backtest_shared.snapshot_dir(backtest.shared_dir(work / "shared", 5),
                                        pd.Timestamp(shared[0]["days"][-1]["date"]).date())
    for rel in ("silver/customs", "bronze/_manifest/customs", "bronze/customs"):
        files = sorted(p for p in (snap / rel).rglob("*") if p.is_file())
        assert files
        for p in files:  # every file of the run's lake is the shared one, not a copy
            assert os.path.samestat(p.stat(), (last / "data" / rel / p.relative_to(snap / rel)).stat())
    # the run validated its own enforcement extracts only: GX results of customs are the shared lake's
    gx = last / "data" / "gx" / "uncommitted" / "validations"
    assert all(p.stat().st_nlink > 1 for p in (gx / "customs").rglob("*.json"))
    assert any(p.stat().st_nlink == 1 for p in (gx / "enforcement").rglob("*.json"))


def test_link_tree_follows_replacements_and_removals_and_never_writes_through(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "p=1").mkdir(parents=True)
    (src / "p=1" / "a.parquet").write_bytes(b"one")
    (src / "p=2").mkdir()
    (src / "p=2" / "b.parquet").write_bytes(b"two")
    assert backtest_shared.link_tree(src, dst) == 2
    assert backtest_shared.link_tree(src, dst) == 0  # already linked
    # the source replaces a file atomically (as the lake does) and drops a partition
    tmp = src / "p=1" / ".a.tmp"
    tmp.write_bytes(b"ONE")
    os.replace(tmp, src / "p=1" / "a.parquet")
    (src / "p=2" / "b.parquet").unlink()
    (src / "p=2").rmdir()
    assert backtest_shared.link_tree(src, dst) == 2
    assert (dst / "p=1" / "a.parquet").read_bytes() == b"ONE" and not (dst / "p=2").exists()
    # the destination replacing its file atomically leaves the source alone
    tmp = dst / "p=1" / ".a.tmp"
    tmp.write_bytes(b"mine")
    os.replace(tmp, dst / "p=1" / "a.parquet")
    assert (src / "p=1" / "a.parquet").read_bytes() == b"ONE"


def test_a_day_applies_only_what_changed_since_the_day_before_and_leaves_the_lake_as_its_snapshot(tmp_path):
    shared, lake = tmp_path / "shared", tmp_path / "lake"
    d1, d2, d3 = (pd.Timestamp(f"2026-07-0{i}").date() for i in (1, 2, 3))
    rel = backtest_shared.trees("customs")[0]  # bronze/customs
    src = tmp_path / "ingest" / rel  # the shared lake as its ingest leaves it each day
    (src / "p=1").mkdir(parents=True)
    (src / "p=1" / "a.parquet").write_bytes(b"one")
    (src / "p=2").mkdir()
    (src / "p=2" / "b.parquet").write_bytes(b"two")
    prev, files = None, {}
    for day in (d1, d2, d3):
        if day == d2:  # the ingest replaces a file atomically and drops a partition
            tmp = src / "p=1" / ".a.tmp"
            tmp.write_bytes(b"ONE")
            os.replace(tmp, src / "p=1" / "a.parquet")
            (src / "p=2" / "b.parquet").unlink()
            (src / "p=2").rmdir()
        if day == d3:
            (src / "p=3").mkdir()
            (src / "p=3" / "c.parquet").write_bytes(b"three")
        snap = backtest_shared.snapshot_dir(shared, day)
        backtest_shared.link_tree(src, snap / rel)
        files, prev = backtest_shared._record_changes(snap, prev, files), snap
    assert backtest_shared.apply(shared, d1, lake) == 2  # no day applied before: the whole tree
    assert backtest_shared.apply(shared, d2, lake) == 2  # one replaced, one removed
    assert (lake / rel / "p=1" / "a.parquet").read_bytes() == b"ONE" and not (lake / rel / "p=2").exists()
    assert backtest_shared.apply(shared, d3, lake) == 1  # one added
    assert backtest_shared.link_tree(backtest_shared.snapshot_dir(shared, d3) / rel, lake / rel) == 0
    # a lake that does not hold the day before (a day skipped, a lake from elsewhere) is walked in full
    (lake / rel / "p=1" / "a.parquet").unlink()
    (lake / backtest_shared.APPLIED).write_text("2026-06-01")
    assert backtest_shared.apply(shared, d3, lake) == 1
    assert (lake / rel / "p=1" / "a.parquet").read_bytes() == b"ONE"
