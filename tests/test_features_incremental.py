"""Incremental entity profiles: the daily state extended day by day equals a full rebuild, in counts and in
the features built from it; the persisted daily run is idempotent and rebuilds when earlier outcomes change."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from tinyworld import LONG_WORLD, lake_settings

from sunat_pipeline.features import history as profiles
from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.history import ProfileState, advance, build_state, update_profiles

FIRST = date(2026, 1, 20)
LAST = date(2026, 2, 14)


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The long world's landed extracts as typed frames, and an empty lake of the module's own for the saved
    state (the frames are handed to the profile functions; nothing reads the lake's silver)."""
    settings = lake_settings(tmp_path_factory.mktemp("profiles"))
    w = tiny_world(LONG_WORLD).landed_frames()
    # Corrections: some items get a second report with the other result, a few days after the first.
    enf = w["enforcement"]
    first = enf.sort_values("record_id").groupby("reported_date").head(1)
    first = first[(first.reported_date >= pd.Timestamp(FIRST)) & (first.reported_date < pd.Timestamp(LAST))]
    corr = first.assign(record_id="ZZ-" + first.record_id,
                        result=np.where(first.result == "FRAUD", "CLEAN", "FRAUD"),
                        reported_date=first.reported_date + pd.Timedelta(days=2))
    w["enforcement"] = pd.concat([enf, corr.astype(enf.dtypes.to_dict())], ignore_index=True)
    assert len(corr) >= 5
    return settings, w


def _days():
    d = FIRST
    while d <= LAST:
        yield d
        d += timedelta(days=1)


def _inputs(w: dict, d: date) -> dict:
    t = pd.Timestamp(d)
    return {"customs_history": w["customs"][w["customs"].declaration_date <= t],
            "outcomes": w["enforcement"][w["enforcement"].reported_date <= t],
            "reference": w["reference_prices"], "tax": w["tax"][w["tax"].filing_date <= t],
            "fx": w["exchange_rates"][w["exchange_rates"].rate_date <= t]}


def _assert_state_equal(a: ProfileState, b: ProfileState) -> None:
    assert a.asof == b.asof
    pd.testing.assert_frame_equal(a.counts.reset_index(drop=True), b.counts.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.labels.reset_index(drop=True), b.labels.reset_index(drop=True))
    assert (a.fingerprint, a.n_records) == (b.fingerprint, b.n_records)


def test_state_extended_day_by_day_equals_full_rebuild(world):
    _, w = world
    customs, enf = w["customs"], w["enforcement"]
    state = build_state(enf, customs, FIRST - timedelta(days=1))
    for d in _days():
        state = advance(state, enf, customs, d)  # all outcomes passed: only those reported on d are added
        _assert_state_equal(state, build_state(enf, customs, d))
    assert (state.counts.kind == "office_importer").any() and (state.counts.kind == "hs6_origin").any()


def test_features_from_the_state_equal_the_full_rebuild(world):
    """Scoring reads profiles from the daily state; training rebuilds them from outcomes: same numbers."""
    _, w = world
    customs, enf = w["customs"], w["enforcement"]
    state = build_state(enf, customs, FIRST - timedelta(days=1))
    checked = 0
    corrected_days = set(enf[enf.record_id.str.startswith("ZZ-")].reported_date.dt.date)
    for d in _days():
        state = advance(state, enf, customs, d)
        if d not in corrected_days and d.toordinal() % 4:
            continue
        items = customs[customs.declaration_date == pd.Timestamp(d)].reset_index(drop=True)
        if items.empty:
            continue
        inp = _inputs(w, d)
        full = build_features(items, **inp)
        incremental = build_features(items, **inp, profile_state=state)
        pd.testing.assert_frame_equal(full, incremental)
        assert (full.office_importer_n_insp > 0).any() and (full.hs6_origin_n_insp > 0).any()
        checked += 1
    assert checked >= 5


def test_state_refuses_items_of_another_day(world):
    _, w = world
    state = build_state(w["enforcement"], w["customs"], FIRST)
    items = w["customs"][w["customs"].declaration_date == pd.Timestamp(FIRST + timedelta(days=1))]
    with pytest.raises(ValueError, match="other days"):
        build_features(items, **_inputs(w, FIRST + timedelta(days=1)), profile_state=state)


def test_daily_run_persists_extends_and_reruns_identically(world, monkeypatch):
    settings, w = world
    customs, enf = w["customs"], w["enforcement"]
    base = settings.gold / "profiles"
    calls = {"build": 0}
    real_build = profiles.build_state

    def counting_build(*a, **k):
        calls["build"] += 1
        return real_build(*a, **k)

    monkeypatch.setattr(profiles, "build_state", counting_build)
    days = list(_days())[:8]
    for d in days:
        inp = _inputs(w, d)
        state = update_profiles(settings, d, inp["outcomes"], inp["customs_history"])
        _assert_state_equal(state, real_build(enf, customs, d))
    assert calls["build"] == 1, "only the first day is a full rebuild; later days extend the previous state"
    assert profiles.snapshot_dates(base) == days
    # Re-running a day rewrites the same bytes.
    part = base / f"reported_date={days[3]}" / "part-0.parquet"
    before = part.read_bytes()
    inp = _inputs(w, days[3])
    update_profiles(settings, days[3], inp["outcomes"], inp["customs_history"])
    assert part.read_bytes() == before
    # A late extract for an earlier reported date changes what the saved state was built from: rebuild.
    late = enf[enf.reported_date == pd.Timestamp(days[2])].head(1).assign(
        record_id="LATE-1", result="FRAUD", reported_date=pd.Timestamp(days[2]))
    late = late.assign(declaration_id=customs[customs.declaration_date < pd.Timestamp(days[0])].declaration_id.iloc[-1],
                       item_no=1)
    enf2 = pd.concat([enf, late.astype(enf.dtypes.to_dict())], ignore_index=True)
    d = days[-1] + timedelta(days=1)
    inp = _inputs({**w, "enforcement": enf2}, d)
    n0 = calls["build"]
    state = update_profiles(settings, d, inp["outcomes"], inp["customs_history"])
    assert calls["build"] == n0 + 1
    _assert_state_equal(state, real_build(enf2, customs, d))


def test_the_outcomes_fingerprint_ignores_row_order_and_dtypes_and_follows_the_content(world):
    _, w = world
    enf = w["enforcement"].reset_index(drop=True)
    fp = profiles.outcomes_fingerprint(enf)
    shuffled = enf.sample(frac=1, random_state=3)
    as_objects = enf.astype({"record_id": object, "declaration_id": object, "result": object})
    assert profiles.outcomes_fingerprint(shuffled) == fp == profiles.outcomes_fingerprint(as_objects)
    flipped = enf.copy()
    flipped.loc[0, "result"] = "CLEAN" if flipped.loc[0, "result"] == "FRAUD" else "FRAUD"
    later = enf.assign(reported_date=enf.reported_date.where(enf.index != 1, enf.reported_date + pd.Timedelta(days=1)))
    assert len({fp, profiles.outcomes_fingerprint(flipped), profiles.outcomes_fingerprint(later),
                profiles.outcomes_fingerprint(enf.iloc[1:])}) == 4
