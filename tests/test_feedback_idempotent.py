"""Feedback on a tiny world, end to end without Airflow: re-running a day changes nothing; an extract that
lands late with an already processed reported date is folded by the next version; corrections supersede
earlier records and the history is kept; every record is counted exactly once."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from handscore import score_by_hand
from tinyworld import SHORT_WORLD

from sunat_pipeline import ingest
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.lake.store import atomic_write_bytes, partition
from sunat_sim.inspection import inspect_day
from sunat_sim.world import ENFORCEMENT_COLUMNS, landing_name

D1, D2, D3 = SHORT_WORLD.live_dates  # outcomes come back the day after inspection
CAPACITY = {"red": 2, "yellow": 3}


def ingest_all(settings, day) -> None:
    for s in SOURCES:
        ingest.ingest_source(settings, s, day)


def land(settings, day, tag, rows: pd.DataFrame) -> None:
    """An enforcement extract, as a source system would land it."""
    rows = rows[ENFORCEMENT_COLUMNS].copy()
    for c in ("inspection_date", "reported_date"):
        rows[c] = pd.to_datetime(rows[c]).dt.strftime("%Y-%m-%d")
    path = settings.landing / "enforcement" / landing_name("enforcement", day, tag)
    atomic_write_bytes(path, rows.to_csv(index=False, lineterminator="\n").encode())


def digest(settings) -> dict[str, str]:
    out = {}
    for sub in ("offences", "rule_weights"):
        base = settings.gold / sub
        for p in sorted(base.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(settings.gold))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def story(tiny_world, tmp_path_factory):
    """Three live days: D1 scored by hand and inspected; a late extract dated D1 lands after D1's run;
    corrections land on D3. Every feedback run is repeated; snapshots are kept for the tests."""
    s = tiny_world(SHORT_WORLD, upto=D1).copy(tmp_path_factory.mktemp("fb_idem"),
                                              selection={"default_capacity": CAPACITY})
    st = {"settings": s}

    ingest_all(s, D1)  # already ingested: adds nothing
    score_by_hand(s, D1)
    st["fb1"] = feedback.update(s, D1)
    st["d1"] = digest(s)
    st["fb1_again"] = feedback.update(s, D1)
    st["d1_again"] = digest(s)
    inspect_day(s, D1)  # the pipeline's D1 selections come back on D2 (delay 1)

    # A late extract: reported on D1 (already processed), landed after D1's run: new records for history
    # items nobody inspected, two of them frauds.
    customs = ingest.silver(s, "customs", upto=D1)
    enf = ingest.silver(s, "enforcement", upto=D1)
    seen = set(zip(enf.declaration_id, enf.item_no, strict=True))
    hist_day = pd.Timestamp(D1) - pd.Timedelta(days=2)
    unseen = np.array([(d, i) not in seen for d, i in zip(customs.declaration_id, customs.item_no, strict=True)])
    fresh = customs[(customs.declaration_date == hist_day).to_numpy() & unseen]
    fresh = fresh.sort_values(["declaration_id", "item_no"]).head(6)
    fraud = np.arange(len(fresh)) < 2
    late = pd.DataFrame({
        "record_id": [f"LATE-{k:03d}" for k in range(len(fresh))], "declaration_id": fresh.declaration_id.to_numpy(),
        "item_no": fresh.item_no.to_numpy(), "inspection_date": hist_day, "channel": "RED",
        "result": np.where(fraud, "FRAUD", "CLEAN"), "offence_code": np.where(fraud, "undervaluation", ""),
        "revenue_recovered_usd": np.where(fraud, 1000.0, 0.0), "penalty_usd": np.where(fraud, 500.0, 0.0),
        "reported_date": D1, "officer_id": "OF001"})
    land(s, D1, "late", late)
    st["late"] = late

    ingest_all(s, D2)
    score_by_hand(s, D2)
    st["fb2"] = feedback.update(s, D2)
    st["d2"] = digest(s)
    st["rerun_1_2"] = [feedback.update(s, D1), feedback.update(s, D2)]
    st["d2_again"] = digest(s)

    # Corrections on D3: (a) a record re-reported with a changed result, (b) a new record for an item that
    # already has one, (c) an exact re-send of a record (adds nothing).
    off = feedback.offences(s)
    pipe = off[off.selection_reason != "legacy"].sort_values("record_id")
    clean = pipe[pipe.result == "CLEAN"]
    a = clean.iloc[[0]].assign(result="FRAUD", offence_code="quantity", revenue_recovered_usd=777.0,
                               penalty_usd=388.5, reported_date=D3)
    b = clean.iloc[[1]].assign(record_id="CORR-001", result="FRAUD", offence_code="origin",
                               revenue_recovered_usd=555.0, penalty_usd=277.5, reported_date=D3)
    c = pipe.iloc[[-1]].assign(reported_date=D3)
    land(s, D3, "corr", pd.concat([a, b, c]))
    st["corr"] = {"a": a.iloc[0], "b": b.iloc[0], "b_old": clean.iloc[1], "c": c.iloc[0]}
    st["off_before_corr"] = off

    ingest_all(s, D3)
    st["fb3"] = feedback.update(s, D3)
    st["d3"] = digest(s)
    st["rerun_all"] = [feedback.update(s, d) for d in (D3, D1, D2, D3)]
    st["d3_again"] = digest(s)
    return st


def test_rerunning_feedback_changes_nothing(story):
    assert story["d1_again"] == story["d1"]
    assert story["d2_again"] == story["d2"]
    assert story["d3_again"] == story["d3"]
    assert story["fb1_again"]["rerun"] and story["fb1_again"]["offence_partitions_written"] == 0
    for again, first in zip(story["rerun_1_2"], [story["fb1"], story["fb2"]], strict=True):
        assert again["rerun"] and again["offence_partitions_written"] == 0
        assert {k: v for k, v in again.items() if k not in ("rerun", "offence_partitions_written")} == \
            {k: v for k, v in first.items() if k not in ("rerun", "offence_partitions_written")}
    s = story["settings"]
    assert rule_weights.versions(s) == [f"rw-{d}" for d in (D1, D2, D3)]  # no new version from the re-runs
    for p in (s.gold / "offences").glob("reported_date=*"):
        assert [f.name for f in p.iterdir()] == ["part-0.parquet"], p
    assert not any(s.lake.rglob(".*.tmp"))


def test_a_version_is_immutable_once_written(story):
    key = f"rule_weights/rw-{D1}.json"
    assert story["d1"][key] == story["d2"][key] == story["d3"][key]


def test_late_extract_is_folded_by_the_next_version(story):
    s, late = story["settings"], story["late"]
    fb2 = story["fb2"]
    assert fb2["late_records"] == len(late)
    off = feedback.offences(s, current=False)
    got = off[off.record_id.isin(late.record_id)]
    assert len(got) == len(late)
    assert (got.folded_in == f"rw-{D2}").all()
    assert (pd.to_datetime(got.reported_date).dt.date == D1).all()  # its own reported date, kept
    assert (got.selection_reason == "legacy").all()
    rec = rule_weights.load_version(s, f"rw-{D2}")
    assert rec["late_records"] == len(late) and rec["outcomes_used"] == fb2["outcomes"]
    # What rw-D1 folded did not change when the late file arrived.
    assert not off[off.folded_in == f"rw-{D1}"].record_id.isin(late.record_id).any()


def test_every_record_is_folded_exactly_once(story):
    s = story["settings"]
    off = feedback.offences(s, current=False)
    assert not off.duplicated(["record_id", "record_hash"]).any()
    enf = ingest.silver(s, "enforcement", upto=D3)
    keys = set(zip(enf.record_id, feedback.record_hash(enf), strict=True))
    assert keys <= set(zip(off.record_id, off.record_hash, strict=True))
    assert sum(rule_weights.load_version(s, v)["outcomes_used"] for v in rule_weights.versions(s)) == len(off)
    # The re-send (c) added no row.
    c = story["corr"]["c"]
    assert (off.record_id == c.record_id).sum() == 1


def test_pipeline_outcomes_carry_the_decision_and_its_rule_hits(story):
    s = story["settings"]
    off = feedback.offences(s, asof=D2)
    ours = off[pd.to_datetime(off.inspection_date).dt.date == D1]
    assert len(ours) and (ours.selection_reason != "legacy").all()
    assert (ours.folded_in == f"rw-{D2}").all() and (ours.run_id == f"hand-{D1}").all()
    scored = pd.read_parquet(partition(s.scored_dir, "declaration_date", D1) / "part-0.parquet")
    m = ours.merge(scored[["declaration_id", "item_no", "rule_hits", "selection_reason"]],
                   on=["declaration_id", "item_no"], suffixes=("", "_scored"))
    assert len(m) == len(ours)
    assert (m.selection_reason == m.selection_reason_scored).all()
    assert all(sorted(a) == sorted(b) for a, b in zip(m.rule_hits, m.rule_hits_scored, strict=True))


def test_corrections_supersede_and_keep_history(story):
    s, corr = story["settings"], story["corr"]
    hist = feedback.offences(s, current=False)
    cur = feedback.offences(s)
    assert story["fb3"]["corrections"] == 2
    # (a) same record id, changed values: two row versions, the later one current.
    a = hist[hist.record_id == corr["a"].record_id].sort_values("reported_date")
    assert len(a) == 2 and a.is_current.tolist() == [False, True]
    assert a.superseded_by.iloc[0] == f"{a.record_id.iloc[1]}:{a.record_hash.iloc[1]}"
    assert a.result.tolist() == ["CLEAN", "FRAUD"]
    # (b) a later record for the same item supersedes the earlier record.
    old = hist[hist.record_id == corr["b_old"].record_id]
    new = hist[hist.record_id == "CORR-001"]
    assert len(old) == 1 and len(new) == 1 and not old.is_current.iloc[0] and new.is_current.iloc[0]
    assert old.superseded_by.iloc[0] == f"CORR-001:{new.record_hash.iloc[0]}"
    # The current view: one row per record and per item.
    assert not cur.record_id.duplicated().any()
    assert not cur.duplicated(["declaration_id", "item_no"]).any()
    assert "CORR-001" in set(cur.record_id) and corr["b_old"].record_id not in set(cur.record_id)
    # As of D2 the corrections did not exist yet.
    before = feedback.offences(s, asof=D2)
    assert len(before) == len(story["off_before_corr"])
    assert "CORR-001" not in set(before.record_id)


def test_corrections_retract_what_they_supersede(story):
    s, corr = story["settings"], story["corr"]
    rec = rule_weights.load_version(s, f"rw-{D3}")
    prev = rule_weights.load_version(s, f"rw-{D2}")
    hist = feedback.offences(s, current=False)
    superseded = hist[hist.record_id.isin([corr["a"].record_id, corr["b_old"].record_id]) & ~hist.is_current]
    hits = pd.Series([h for hs in superseded.rule_hits for h in hs]).value_counts()
    for r, ev in rec["evidence"].items():
        assert ev["retracted_inspected"] == hits.get(r, 0)
        assert ev["retracted_frauds"] == 0  # both superseded outcomes were CLEAN
        assert ev["inspected"] == prev["evidence"][r]["inspected"] + ev["new_inspected"] - ev["retracted_inspected"]
        assert ev["frauds"] == prev["evidence"][r]["frauds"] + ev["new_frauds"] - ev["retracted_frauds"]
        assert ev["alpha"] >= 0 and ev["beta"] >= 0
    assert rec["corrections"] == 2
    assert rec["outcome_reported_dates"] == [D3.isoformat(), D3.isoformat()]
    assert rec["records_sha256"] and len(rec["batches"]) == 1


def test_weights_history_is_queryable_through_the_cli(story, capsys, monkeypatch):
    from sunat_pipeline import cli

    s = story["settings"]
    monkeypatch.setenv("SUNAT_LAKE_ROOT", str(s.lake))
    assert cli.main(["weights-history", "--rule", "REV-01", "--format", "csv"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("version,date,rule_id,weight")
    assert [ln.split(",")[0] for ln in out[1:]] == [f"rw-{d}" for d in (D1, D2, D3)]
    hist = pd.read_parquet(s.gold / "rule_weights" / "history.parquet")
    pd.testing.assert_frame_equal(hist, rule_weights.weights_history(s))


def test_the_database_kept_after_a_write_is_what_a_fresh_read_gives(story):
    """Feedback keeps the frame it wrote as the in-memory database: it must equal the files read afresh."""
    s = story["settings"]
    kept = feedback._read_db(s)
    feedback._DB_MEMO.clear()
    pd.testing.assert_frame_equal(kept, feedback._read_db(s))
    assert len(kept) and kept.columns.tolist() == feedback._read_db(s).columns.tolist()
