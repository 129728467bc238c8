"""Feedback: outcomes -> offence database -> versioned rule weights (bounded steps, idempotent re-runs)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from tinyworld import LONG_WORLD, lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.feedback import chains
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.lake.store import partition, write_parquet_atomic
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import get_settings

# The long world: legacy outcomes keep being reported during the live days; its first three are enough.
D1, D2, D3 = LONG_WORLD.live_dates[:3]


@pytest.fixture(scope="module")
def silver_lake(tiny_world):
    """The world ingested up to D3; shared, so each test copies its silver (all feedback reads)."""
    return tiny_world(LONG_WORLD, upto=D3)


def _copy(silver_lake, tmp_path_factory, name: str, **kw):
    settings = lake_settings(tmp_path_factory.mktemp(name), **kw)
    shutil.copytree(silver_lake.lake / "silver", settings.silver)
    return settings


@pytest.fixture(scope="module")
def run3(silver_lake, tmp_path_factory):
    """Feedback run for the three live days, in order, with the default settings."""
    settings = _copy(silver_lake, tmp_path_factory, "fb_default")
    summaries = [feedback.update(settings, d) for d in (D1, D2, D3)]
    return settings, summaries


def _enforcement(settings, upto):
    return ingest.silver(settings, "enforcement", upto=upto)


def test_versions_are_written_in_order(run3):
    settings, summaries = run3
    assert rule_weights.versions(settings) == [f"rw-{d}" for d in (D1, D2, D3)]
    assert [s["previous"] for s in summaries] == [rule_weights.INITIAL, f"rw-{D1}", f"rw-{D2}"]
    enf = _enforcement(settings, D3)
    rep = pd.to_datetime(enf.reported_date).dt.date
    expected = [(rep <= D1).sum(), (rep == D2).sum(), (rep == D3).sum()]
    assert [s["outcomes"] for s in summaries] == expected
    assert all(n > 0 for n in expected), "the fixture world should report outcomes on each live day"
    rec = rule_weights.load_version(settings, f"rw-{D2}")
    assert rec["previous"] == f"rw-{D1}" and rec["date"] == D2.isoformat()
    assert rec["outcome_reported_dates"] == [D2.isoformat(), D2.isoformat()]  # the records it folded


def test_weights_move_at_most_max_step_per_version(run3):
    settings, _ = run3
    step = settings.feedback.max_step
    prev = rule_weights.load_version(settings, rule_weights.INITIAL)["weights"]
    assert prev == load_rules(settings.rules_path).initial_weights()
    moved = 0.0
    for v in rule_weights.versions(settings):
        w = rule_weights.load_version(settings, v)["weights"]
        assert w.keys() == prev.keys()
        for r in w:
            assert abs(w[r] - prev[r]) <= step + 1e-9, (v, r)
            assert 0.0 <= w[r] <= 1.0
        moved = max(moved, max(abs(w[r] - prev[r]) for r in w))
        prev = w
    assert moved > 0.01, "weights should respond to the evidence"


def test_a_tight_max_step_bounds_every_move(silver_lake, tmp_path_factory):
    settings = _copy(silver_lake, tmp_path_factory, "fb_tight", feedback={"max_step": 0.02})
    prev = rule_weights.load_version(settings, rule_weights.INITIAL)["weights"]
    clamped = 0
    for d in (D1, D2):
        feedback.update(settings, d)
        rec = rule_weights.load_version(settings, f"rw-{d}")
        for r, w in rec["weights"].items():
            delta = w - prev[r]
            assert abs(delta) <= 0.02 + 1e-9
            target = rec["evidence"][r]["posterior_precision"]
            if abs(target - prev[r]) > 0.02:
                clamped += 1
                assert abs(delta) == pytest.approx(0.02)
                assert (delta > 0) == (target > prev[r])  # towards the evidence
            else:
                assert w == pytest.approx(target, abs=1e-6)
        prev = rec["weights"]
    assert clamped > 0
    assert "max step 0.02" in rec["method"]


def test_evidence_counts_hits_of_inspected_items(run3):
    settings, _ = run3
    total = {}
    for v in rule_weights.versions(settings):
        rec = rule_weights.load_version(settings, v)
        for r, ev in rec["evidence"].items():
            assert 0 <= ev["new_frauds"] <= ev["new_inspected"]
            total[r] = total.get(r, 0) + ev["new_inspected"]
            assert ev["inspected"] == total[r]
    assert sum(total.values()) > 0
    hist = pd.read_parquet(settings.gold / "rule_weights" / "history.parquet")
    assert len(hist) == len(rule_weights.versions(settings)) * len(total)
    pd.testing.assert_frame_equal(hist, rule_weights.weights_history(settings))


def test_offence_database_has_every_outcome_once(run3):
    settings, _ = run3
    off = feedback.offences(settings)
    enf = _enforcement(settings, D3)
    # Every record is kept; the current view holds each item's latest record (a correction reported later,
    # e.g. a finding overturned, supersedes the item's earlier record).
    assert set(feedback.offences(settings, current=False).record_id) == set(enf.record_id)
    latest = enf.sort_values(["reported_date", "record_id"]).drop_duplicates(["declaration_id", "item_no"],
                                                                             keep="last")
    assert len(off) == len(latest)
    assert not off.record_id.duplicated().any()
    assert set(off.record_id) == set(latest.record_id)
    assert (off.selection_reason == "legacy").all()  # no scored decisions in this lake
    assert off.importer_id.notna().all() and off.declaration_date.notna().all()
    known = enf[pd.to_datetime(enf.reported_date).dt.date <= D1]
    assert len(feedback.offences(settings, upto=D1)) == len(known.drop_duplicates(["declaration_id", "item_no"]))


def test_rerunning_a_day_is_idempotent(run3):
    settings, _ = run3
    wdir = settings.gold / "rule_weights"
    before = {p.name: p.read_bytes() for p in wdir.glob("rw-*.json")}
    off_before = feedback.offences(settings)
    s2 = feedback.update(settings, D2)
    s1 = feedback.update(settings, D1)
    after = {p.name: p.read_bytes() for p in wdir.glob("rw-*.json")}
    assert after == before
    assert s1["previous"] == rule_weights.INITIAL and s2["previous"] == f"rw-{D1}"
    off_after = feedback.offences(settings)
    pd.testing.assert_frame_equal(off_after, off_before)
    assert not off_after.record_id.duplicated().any()
    for p in (settings.gold / "offences").glob("reported_date=*"):
        assert len(list(p.glob("*.parquet"))) == 1, p


def test_version_before_is_strictly_before(run3):
    settings, _ = run3
    assert rule_weights.version_before(settings, D1) == rule_weights.INITIAL
    assert rule_weights.version_before(settings, D1 + timedelta(days=1)) == f"rw-{D1}"
    assert rule_weights.version_before(settings, D2) == f"rw-{D1}"  # rw-D2 exists but is not before D2
    assert rule_weights.version_before(settings, D3) == f"rw-{D2}"
    assert rule_weights.version_before(settings, D3 + timedelta(days=30)) == f"rw-{D3}"


def test_version_before_with_gaps(tmp_path):
    settings = lake_settings(tmp_path)
    assert rule_weights.versions(settings) == []
    wdir = settings.gold / "rule_weights"
    wdir.mkdir(parents=True)
    for d in ("2026-03-01", "2026-02-20", "2026-03-10"):
        (wdir / f"rw-{d}.json").write_text("{}")
    (wdir / "history.parquet").write_bytes(b"")
    assert rule_weights.versions(settings) == ["rw-2026-02-20", "rw-2026-03-01", "rw-2026-03-10"]
    D = pd.Timestamp
    assert rule_weights.version_before(settings, D("2026-02-20").date()) == rule_weights.INITIAL
    assert rule_weights.version_before(settings, D("2026-02-21").date()) == "rw-2026-02-20"
    assert rule_weights.version_before(settings, D("2026-03-05").date()) == "rw-2026-03-01"
    assert rule_weights.version_before(settings, D("2026-03-10").date()) == "rw-2026-03-01"
    assert rule_weights.version_before(settings, D("2026-03-11").date()) == "rw-2026-03-10"


def test_offences_carry_the_pipeline_decision(silver_lake, tmp_path_factory):
    settings = _copy(silver_lake, tmp_path_factory, "fb_decisions")
    enf = _enforcement(settings, D1)
    customs = ingest.silver(settings, "customs", upto=D1)
    rec = enf.iloc[0]
    item = customs[(customs.declaration_id == rec.declaration_id) & (customs.item_no == rec.item_no)].iloc[0]
    d = item.declaration_date.date()
    scored = pd.DataFrame({"declaration_id": [rec.declaration_id], "item_no": [int(rec.item_no)],
                           "selection_reason": ["exploration"], "model_version": ["3"],
                           "rule_weights_version": [rule_weights.INITIAL], "run_id": ["abc"]})
    write_parquet_atomic(scored, partition(settings.scored_dir, "declaration_date", d) / "part-0.parquet")
    feedback.update(settings, D1)
    off = feedback.offences(settings).set_index("record_id")
    assert off.loc[rec.record_id, "selection_reason"] == "exploration"
    assert off.loc[rec.record_id, "model_version"] == "3"
    assert (off.drop(index=rec.record_id).selection_reason == "legacy").all()


def test_the_offence_database_read_again_follows_every_change_of_its_files(tmp_path):
    """_read_db keeps the last frame it built; a rewritten, added or removed partition is read afresh."""
    off = feedback
    s = get_settings(lake_root=tmp_path / "data")
    row = {c: None for c in off._DB_COLUMNS} | {
        "record_id": "E1", "declaration_id": "D1", "item_no": 1, "inspection_date": "2026-07-01",
        "reported_date": "2026-07-02", "declaration_date": "2026-06-30", "result": "FRAUD", "record_hash": "h1",
        "folded_in": "rw-2026-07-02", "is_current": True, "rule_hits": ["R2", "R1"]}
    one = off._normalise(pd.DataFrame([row]))
    off._write_db(s, one, off._empty_db())
    first = off._read_db(s)
    assert first.record_id.tolist() == ["E1"] and first.rule_hits.iat[0] == ["R1", "R2"]
    first.loc[0, "result"] = "CLEAN"  # a caller changing its frame changes nothing kept
    assert off._read_db(s).result.tolist() == ["FRAUD"]
    two = off._normalise(pd.DataFrame([row, row | {"record_id": "E2", "record_hash": "h2",
                                                   "reported_date": "2026-07-03"}]))
    off._write_db(s, two, one)
    assert off._read_db(s).record_id.tolist() == ["E1", "E2"]
    assert off._read_db(s, upto=date(2026, 7, 2)).record_id.tolist() == ["E1"]
    off._write_db(s, two[two.record_id == "E2"].reset_index(drop=True), two)  # E1's partition removed
    assert off._read_db(s).record_id.tolist() == ["E2"]
    # a file rewritten in place with other content (same name, same size or not) is read again
    target = partition(s.gold / "offences", "reported_date", date(2026, 7, 3)) / "part-0.parquet"
    part = off._normalise(two[two.record_id == "E2"].assign(result="CLEAN")).drop(columns="reported_date")
    target.write_bytes(off._parquet_bytes(part))
    assert off._read_db(s)[["record_id", "result"]].values.tolist() == [["E2", "CLEAN"]]


def _current_view_by_groupby(db: pd.DataFrame) -> pd.DataFrame:
    """The supersession rule written plainly with pandas (the reference ``chains.current_view`` must match)."""
    db = db.copy()
    sup = pd.Series(pd.NA, index=db.index, dtype="str")
    if len(db):
        key = chains.row_key(db)
        o = db.sort_values(["record_id", "reported_date", "folded_in", "record_hash"], kind="stable")
        nxt = key.loc[o.index].groupby(o.record_id.to_numpy()).shift(-1)
        sup.loc[nxt.index] = nxt
        latest = db[sup.isna()]
        o = latest.sort_values(["declaration_id", "item_no", "reported_date", "folded_in", "record_id"],
                               kind="stable")
        nxt = key.loc[o.index].groupby([o.declaration_id.to_numpy(), o.item_no.to_numpy()]).shift(-1)
        sup.loc[nxt[nxt.notna()].index] = nxt[nxt.notna()]
    db["superseded_by"] = sup.astype("str")
    db["is_current"] = sup.isna().to_numpy()
    return db


def test_supersession_chains_match_the_rule_on_random_ledgers_with_ties_and_missing_values():
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        db = pd.DataFrame({
            "record_id": pd.Series(rng.choice(["E1", "E2", "E10", None], n), dtype="str"),
            "record_hash": pd.Series(rng.choice(["a", "b", "c"], n), dtype="str"),
            "reported_date": pd.to_datetime(pd.Series(rng.choice(["2026-07-03", "2026-07-01", None], n))),
            "folded_in": pd.Series(rng.choice(["rw-2026-07-05", "rw-2026-07-02"], n), dtype="str"),
            "declaration_id": pd.Series(rng.choice(["D1", "D2", None], n), dtype="str"),
            "item_no": pd.array(rng.choice([1, 2, 3], n), dtype="Int64"),
        }).set_axis(rng.permutation(n) + 100)  # any index: the result follows it
        assert db.record_hash.notna().all()  # (the values really are there)
        if n:
            db.loc[db.index[rng.random(n) < 0.15], "item_no"] = pd.NA
        want, got = _current_view_by_groupby(db), chains.current_view(db)
        assert got.index.equals(db.index)
        assert got.is_current.tolist() == want.is_current.tolist()
        assert got.superseded_by.fillna("-").tolist() == want.superseded_by.fillna("-").tolist()


def _outcomes(rule: str, dates, frauds) -> pd.DataFrame:
    return pd.DataFrame({"rule_hits": [[rule]] * len(dates), "declaration_date": pd.to_datetime(list(dates)),
                         "result": ["FRAUD" if f else "CLEAN" for f in frauds]})


def _fold(settings, day, prev, added, removed=None):
    removed = added.iloc[:0] if removed is None else removed
    weights, evidence, _, method = rule_weights.derive(settings, day, prev, added, removed)
    rule_weights.write_version(settings, {"version": f"rw-{day}", "date": day.isoformat(), "previous": prev,
                                          "weights": weights, "evidence": evidence, "method": method})
    return f"rw-{day}", evidence


def test_outcomes_folded_at_once_weigh_what_they_would_have_weighed_day_by_day(tmp_path):
    """Evidence decays from each outcome's declaration date, so 30 days of outcomes folded in one version (a
    history, a late extract) give the posterior of folding them as they came; a 30-day-old outcome counts
    decay**30 of today's. Before, a first version took months-old history at full weight."""
    settings = lake_settings(tmp_path / "a", feedback={"max_step": 1.0})
    start, rule = date(2026, 3, 1), "REV-02"
    days = [start + timedelta(days=k) for k in range(30)]
    rng = np.random.default_rng(7)
    frauds = rng.random(30) < 0.2
    end = days[-1] + timedelta(days=1)
    _, at_once = _fold(settings, end, rule_weights.INITIAL, _outcomes(rule, days, frauds))

    daily = lake_settings(tmp_path / "b", feedback={"max_step": 1.0})
    prev = rule_weights.INITIAL
    for d, f in zip(days, frauds, strict=True):
        prev, _ = _fold(daily, d, prev, _outcomes(rule, [d], [f]))
    _, by_day = _fold(daily, end, prev, _outcomes(rule, [], []))
    for k in ("alpha", "beta"):
        assert at_once[rule][k] == pytest.approx(by_day[rule][k], abs=1e-4)

    lam = settings.feedback.decay
    w0 = load_rules(settings.rules_path).initial_weights()[rule]
    n0 = settings.feedback.prior_hits + settings.feedback.prior_misses
    expected = sum(lam ** (end - d).days for d, f in zip(days, frauds, strict=True) if f)
    assert at_once[rule]["alpha"] == pytest.approx(w0 * n0 + expected, abs=1e-5)
    assert at_once[rule]["inspected"] == 30 and at_once[rule]["frauds"] == int(frauds.sum())

    # An old fraud moves the weight less than today's.
    old = _fold(lake_settings(tmp_path / "c"), end, rule_weights.INITIAL, _outcomes(rule, [start], [True]))[1]
    new = _fold(lake_settings(tmp_path / "d"), end, rule_weights.INITIAL, _outcomes(rule, [end], [True]))[1]
    assert old[rule]["alpha"] - w0 * n0 == pytest.approx(lam ** 30, abs=1e-5)
    assert new[rule]["alpha"] - w0 * n0 == pytest.approx(1.0, abs=1e-5)
    # An outcome whose declaration date is unknown counts as of the version's day (never NaN).
    unknown = _outcomes(rule, [end], [True]).assign(declaration_date=pd.NaT)
    nat = _fold(lake_settings(tmp_path / "e"), end, rule_weights.INITIAL, unknown)[1]
    assert nat[rule]["alpha"] - w0 * n0 == pytest.approx(1.0, abs=1e-5)


def test_a_correction_retracts_what_the_outcome_it_supersedes_weighs_now(tmp_path):
    settings = lake_settings(tmp_path, feedback={"max_step": 1.0})
    rule, d0 = "REV-01", date(2026, 3, 1)
    fraud = _outcomes(rule, [d0] * 3, [True, True, False])
    v1, _ = _fold(settings, d0 + timedelta(days=2), rule_weights.INITIAL, fraud)
    # Ten days later the first fraud is overturned: the item's clean outcome replaces it.
    _, ev = _fold(settings, d0 + timedelta(days=12), v1, _outcomes(rule, [d0], [False]), fraud.iloc[:1])
    lam, n0 = settings.feedback.decay, settings.feedback.prior_hits + settings.feedback.prior_misses
    w0 = load_rules(settings.rules_path).initial_weights()[rule]
    assert ev[rule]["alpha"] == pytest.approx(w0 * n0 + lam ** 12, abs=1e-5)  # one fraud left, 12 days old
    assert ev[rule]["beta"] == pytest.approx((1 - w0) * n0 + 2 * lam ** 12, abs=1e-5)
    assert ev[rule]["frauds"] == 1 and ev[rule]["inspected"] == 3
