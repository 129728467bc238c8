"""Monitoring: PSI, the daily drift check, retraining requests and their use by train_if_due."""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd
from tinyworld import SHORT_WORLD, lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.lake.store import partition, write_parquet_atomic
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.reporting import monitor, retrain

DAY = date(2026, 3, 10)


def test_psi_of_the_same_distribution_is_small_and_of_a_shift_large():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert monitor.psi_numeric(ref, rng.normal(size=5_000)) < 0.02
    assert 0.1 < monitor.psi_numeric(ref, rng.normal(0.5, 1, size=5_000)) < 0.5
    assert monitor.psi_numeric(ref, rng.normal(1.5, 1, size=5_000)) > 1.0
    # A value out of the reference's range lands in the open end bins: still seen.
    assert monitor.psi_numeric(ref, np.full(1000, 50.0)) > 1.0
    # Missing values are a bin of their own.
    cur = np.where(rng.random(5_000) < 0.3, np.nan, rng.normal(size=5_000))
    assert monitor.psi_numeric(ref, cur) > 0.25
    # A rare flag becoming common is seen (deciles of a 95%-zero flag are all 0: binned by value instead).
    flag = (rng.random(20_000) < 0.05).astype(float)
    assert monitor.psi_numeric(flag, (rng.random(3_000) < 0.05).astype(float)) < 0.02
    assert monitor.psi_numeric(flag, (rng.random(3_000) < 0.25).astype(float)) > 0.25
    # PSI is symmetric in the two shares and never negative.
    a, b = rng.normal(size=3000), rng.normal(0.3, 1.2, size=3000)
    assert monitor.psi_numeric(a, b) >= 0


def test_psi_categorical_sees_a_new_category():
    ref = pd.Series(["CN"] * 500 + ["US"] * 300 + ["BR"] * 200)
    assert monitor.psi_categorical(ref, ref.sample(frac=1, random_state=1)) < 1e-9
    cur = pd.Series(["CN"] * 400 + ["US"] * 240 + ["BR"] * 160 + ["VN"] * 200)
    assert monitor.psi_categorical(ref, cur) > 0.25


def _frames(n_ref=4000, n_cur=700, shift=0.0, new_origin=0.0, seed=0):
    rng = np.random.default_rng(seed)

    def one(n, s, vn):
        return pd.DataFrame({
            "fraud_probability": rng.beta(2, 20, n), "log_cif": rng.normal(8 + s, 1, n),
            "log_ref_ratio": rng.normal(0, 0.3, n), "importer_is_new": (rng.random(n) < 0.05).astype(float),
            "origin_country": np.where(rng.random(n) < vn, "VN", rng.choice(["CN", "US", "BR"], n)),
            "hs_chapter": rng.choice(["84", "85", "39"], n), "customs_office": rng.choice(["118", "235"], n),
            "model_version": "3"})
    return one(n_ref, 0.0, 0.0).drop(columns="model_version"), one(n_cur, shift, new_origin)


def test_drift_table_rows_and_status(tmp_path):
    s = lake_settings(tmp_path)
    ref, cur = _frames(shift=1.0)
    t = monitor.drift_table(ref, cur, s, "3")
    assert t.variable.iloc[0] == "fraud_probability"
    row = t.set_index("variable")
    assert row.loc["log_cif", "status"] == "major" and row.loc["log_cif", "psi"] > s.monitoring.psi_threshold
    assert row.loc["log_ref_ratio", "status"] == "stable"
    assert row.loc["fraud_probability", "n_current"] == len(cur)
    # The score is compared only on items the reference's model scored.
    cur2 = cur.assign(model_version=np.where(np.arange(len(cur)) < 300, "3", "2"))
    assert monitor.drift_table(ref, cur2, s, "3").set_index("variable").loc["fraud_probability", "n_current"] == 300
    # Too few rows: no PSI, no status.
    small = monitor.drift_table(ref, cur.head(10), s, "3")
    assert small.psi.isna().all() and (small.status == "n/a").all()


def _patched_check(monkeypatch, s, day, cur, ref):
    monkeypatch.setattr(monitor, "current_frame", lambda settings, d: (cur, "3"))
    return monitor.check(s, day, reference=ref)


def test_check_warns_and_requests_a_retraining_once_per_cooldown(tmp_path, monkeypatch, caplog):
    s = lake_settings(tmp_path)
    ref, cur = _frames(new_origin=0.3)
    with caplog.at_level(logging.WARNING, logger="sunat_pipeline.reporting.monitor"):
        out = _patched_check(monkeypatch, s, DAY, cur, ref)
    assert out["checked"] and out["retrain_requested"]
    assert out["worst"] == "origin_country" and out["max_psi"] > 0.25
    assert any("PSI past" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    req = s.gold / "monitoring" / "retrain_requests" / f"request_{DAY}.json"
    rec = json.loads(req.read_text())
    assert rec["requested_on"] == DAY.isoformat() and rec["model_version"] == "3"
    assert rec["variables"][0].startswith("origin_country")
    drift_file = partition(s.gold / "monitoring" / "drift", "report_date", DAY) / "part-0.parquet"
    first = (req.read_bytes(), drift_file.read_bytes())
    # Re-running the day rewrites the same bytes.
    assert _patched_check(monkeypatch, s, DAY, cur, ref)["retrain_requested"]
    assert (req.read_bytes(), drift_file.read_bytes()) == first
    # The next days within the cooldown: still warned, no new request.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sunat_pipeline.reporting.monitor"):
        nxt = _patched_check(monkeypatch, s, DAY + timedelta(days=2), cur, ref)
    assert not nxt["retrain_requested"] and nxt["major"]
    assert any("persists" in r.message for r in caplog.records)
    assert not (req.parent / f"request_{DAY + timedelta(days=2)}.json").exists()
    # After the cooldown, a new request.
    later = DAY + timedelta(days=s.monitoring.cooldown_days)
    assert _patched_check(monkeypatch, s, later, cur, ref)["retrain_requested"]


def test_no_drift_no_request(tmp_path, monkeypatch):
    s = lake_settings(tmp_path)
    ref, cur = _frames()
    out = _patched_check(monkeypatch, s, DAY, cur, ref)
    assert out["checked"] and not out["retrain_requested"] and not out["major"]
    assert out["max_psi"] < s.monitoring.psi_notice
    assert not (s.gold / "monitoring" / "retrain_requests").exists()


def test_retrain_request_is_honoured_once_by_the_next_training(tmp_path, monkeypatch):
    s = lake_settings(tmp_path)
    ref, cur = _frames(new_origin=0.3)
    _patched_check(monkeypatch, s, DAY, cur, ref)
    # Not on the day itself (a re-run of that day must not train), then until a training on or after it.
    assert retrain.retrain_request(s, DAY, DAY - timedelta(days=3)) is None
    reason = retrain.retrain_request(s, DAY + timedelta(days=1), DAY - timedelta(days=3))
    assert reason.startswith(f"drift requested on {DAY}") and "origin_country" in reason
    assert retrain.retrain_request(s, DAY + timedelta(days=1), DAY) is not None  # trained earlier that day
    assert retrain.retrain_request(s, DAY + timedelta(days=2), DAY + timedelta(days=1)) is None  # served

    # train_if_due turns the request into a training (no champion change needed, nothing else due).
    monkeypatch.setattr(registry, "runs_for", lambda settings, asof: [])
    monkeypatch.setattr(registry, "last_training_date", lambda settings: DAY - timedelta(days=2))
    monkeypatch.setattr(registry, "champion", lambda settings, load=True: ("v3", object() if load else None))
    monkeypatch.setattr(ingest, "silver", lambda *a, **k: pd.DataFrame())
    monkeypatch.setattr(train, "train_and_register", lambda settings, asof, reason, **kw: {"trained": True,
                                                                                     "reason": reason})
    got = train.train_if_due(s, DAY + timedelta(days=1))
    assert got["trained"] and got["reason"].startswith("drift requested")
    monkeypatch.setattr(registry, "last_training_date", lambda settings: DAY + timedelta(days=1))
    assert train.train_if_due(s, DAY + timedelta(days=2)) == {"trained": False, "reason": "not due"}


class _Stub:
    """A model stand-in: fraud probability from the log CIF value."""

    def predict(self, X):
        p = 1 / (1 + np.exp(-(X.log_cif.to_numpy() - 9)))
        return pd.DataFrame({"fraud_probability": p})


def test_reference_and_check_on_a_lake(tiny_world, tmp_path):
    day = SHORT_WORLD.live_dates[0]
    s = tiny_world(SHORT_WORLD, upto=day).copy(tmp_path, monitoring={"reference_days": 14, "min_rows": 20})
    ref = monitor.reference_frame(s, "5", model=_Stub(), training_date=day)
    cached = partition(s.gold / "monitoring" / "reference", "model_version", "5") / "part-0.parquet"
    assert cached.exists() and len(ref) > 100 and ref.fraud_probability.between(0, 1).all()
    lodged = pd.to_datetime(ingest.silver(s, "customs", upto=day).declaration_date)
    in_window = ((lodged >= pd.Timestamp(day - timedelta(days=14))) & (lodged < pd.Timestamp(day))).sum()
    assert len(ref) == in_window
    pd.testing.assert_frame_equal(monitor.reference_frame(s, "5"), ref)  # from the cache, no model needed

    # The window's days, scored by v5 except the first (an older model).
    window = [day - timedelta(days=k) for k in range(s.monitoring.window_days)]
    n_v5 = 0
    for d in window:
        items = ingest.silver(s, "customs", upto=d, since=d)
        X = monitor._features_of(s, items, day)
        version = "4" if d == window[-1] else "5"
        n_v5 += len(items) if version == "5" else 0
        p = _Stub().predict(X).fraud_probability.to_numpy()
        scored = items[["declaration_id", "item_no"]].assign(fraud_probability=p, model_version=version)
        if version == "5":  # schema 5: the rules stacked on the model's own score, which is kept beside it
            scored = scored.assign(fraud_probability=p ** 0.3, model_fraud_probability=p)
        write_parquet_atomic(scored, partition(s.scored_dir, "declaration_date", d) / "part-0.parquet")
    out = monitor.check(s, day)
    assert out["checked"] and out["model_version"] == "5"
    t = out["table"].set_index("variable")
    assert t.loc["fraud_probability", "n_current"] == n_v5  # only the items scored by v5
    assert t.loc["log_cif", "n_current"] > n_v5  # features: every item of the window
    # The same world before and after: no major drift. The score compared is the model's own: the stacked one
    # (a different scale) would be a drift of the rules, not of the traffic.
    assert (t.psi.dropna() < 0.25).all(), t
    f = partition(s.gold / "monitoring" / "drift", "report_date", day) / "part-0.parquet"
    before = f.read_bytes()
    monitor.check(s, day)
    assert f.read_bytes() == before
