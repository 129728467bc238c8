"""Each office's capacity (issue 12, item 5): explicit per office, else derived from the office's volume before
the day, else the fixed default; recorded in the day's run manifest."""

from __future__ import annotations

import json
from datetime import date, timedelta
from types import SimpleNamespace

import pandas as pd
import pytest
from test_select import decls
from tinyworld import SHORT_WORLD

from sunat_pipeline import ingest
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.modeling.model import RiskModel
from sunat_pipeline.selection import score
from sunat_pipeline.selection.capacity import capacity_record, office_capacities, office_volumes
from sunat_pipeline.selection.output import manifest_path
from sunat_pipeline.selection.select import select_channels
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings

DAY = date(2026, 3, 2)


def customs(per_day: dict[str, int], days: int = 28, end: date = DAY) -> pd.DataFrame:
    """One item per declaration: ``per_day[office]`` declarations a day on each of the ``days`` days before ``end``."""
    rows = [(f"{o}-{d}-{i}", 1, pd.Timestamp(end - timedelta(days=d)), o)
            for d in range(1, days + 1) for o, n in per_day.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["declaration_id", "item_no", "declaration_date", "customs_office"])


def test_ten_times_the_volume_gets_ten_times_the_capacity():
    cfg = SelectionSettings()
    vol = office_volumes(customs({"046": 20, "118": 200}), DAY, cfg.capacity_window_days)
    assert vol == {"046": 20.0, "118": 200.0}
    cap = office_capacities(cfg, ["046", "118"], vol)
    assert (cap["046"].red, cap["046"].yellow) == (2, 3)
    assert (cap["118"].red, cap["118"].yellow) == (20, 30)
    # A small office still gets the minimum; items of one declaration count once.
    two_items = pd.concat([customs({"019": 3}), customs({"019": 3}).assign(item_no=2)])
    small = office_capacities(cfg, ["019"], office_volumes(two_items, DAY, 28))["019"]
    assert (small.red, small.yellow) == (1, 1)


def test_average_is_over_lodging_days_in_the_window_before_the_day():
    c = customs({"046": 10, "118": 40}, days=60)
    # Only the 28 days before DAY count, and an office is averaged over the days anyone lodged.
    assert office_volumes(c, DAY, 28) == {"046": 10.0, "118": 40.0}
    sparse = c[(c.customs_office == "118") | (c.declaration_date.dt.day % 2 == 0)]
    assert office_volumes(sparse, DAY, 28)["046"] < 10.0
    assert office_volumes(customs({"046": 10}, days=5), DAY, 28) == {"046": 10.0}  # short history: 5 days


def test_no_look_ahead_later_days_do_not_change_the_capacity():
    cfg = SelectionSettings()
    before = customs({"046": 20, "118": 200})
    later = customs({"046": 500, "118": 1, "235": 50}, days=10, end=DAY + timedelta(days=10))  # DAY .. DAY+9
    assert later.declaration_date.min() == pd.Timestamp(DAY)
    both = pd.concat([before, later], ignore_index=True)
    v1, v2 = office_volumes(before, DAY, 28), office_volumes(both, DAY, 28)
    assert v1 == v2
    assert office_capacities(cfg, ["046", "118", "235"], v1) == office_capacities(cfg, ["046", "118", "235"], v2)
    # An office seen only from the day on has no history: the fixed default.
    assert office_capacities(cfg, ["235"], v2)["235"] == cfg.default_capacity


def test_explicit_capacity_wins_and_no_history_falls_back():
    explicit = OfficeCapacity(red=3, yellow=4, unit="declarations")
    cfg = SelectionSettings(capacity={"118": explicit})
    vol = office_volumes(customs({"046": 20, "118": 200}), DAY, 28)
    cap = office_capacities(cfg, ["046", "118", "999"], vol)
    assert cap["118"] == explicit
    assert (cap["046"].red, cap["046"].yellow) == (2, 3)
    assert cap["999"] == cfg.default_capacity == OfficeCapacity(red=6, yellow=9)
    rec = capacity_record(cfg, cap, vol)
    assert {o: r["source"] for o, r in rec.items()} == {"046": "volume", "118": "explicit",
                                                         "999": "default_no_history"}
    assert rec["046"]["daily_volume"] == 20.0 and rec["999"]["daily_volume"] is None


def test_shares_and_minimums_are_settings():
    cfg = SelectionSettings(red_share=0.05, yellow_share=0.5, min_red=2, min_yellow=0)
    cap = cfg.capacity_for("046", 20.0)
    assert (cap.red, cap.yellow) == (2, 10)
    assert cfg.capacity_for("046", 0.0) == cfg.default_capacity  # no volume: no derived capacity


def test_fixed_mode_reproduces_the_old_behaviour():
    cfg = SelectionSettings(default_capacity_mode="fixed", random_share=0.2, exploration_share=0.2)
    vol = office_volumes(customs({"046": 20, "118": 200}), DAY, 28)
    cap = office_capacities(cfg, ["046", "118"], vol)
    assert all(c == OfficeCapacity(red=6, yellow=9) for c in cap.values())
    assert {r["source"] for r in capacity_record(cfg, cap, vol).values()} == {"default_fixed"}
    d = decls(offices=("046", "118"))
    pd.testing.assert_frame_equal(select_channels(d, cfg, DAY, 42, capacity=cap), select_channels(d, cfg, DAY, 42))


def test_selection_uses_the_volume_derived_capacity():
    cfg = SelectionSettings(random_share=0.2, exploration_share=0.2)
    cap = office_capacities(cfg, ["046", "118"], {"046": 20.0, "118": 200.0})
    out = select_channels(decls(n_per_office=120, offices=("046", "118")), cfg, DAY, 42, capacity=cap)
    counts = out.groupby(["customs_office", "channel"]).size().unstack(fill_value=0)
    assert (counts.loc["046", "RED"], counts.loc["046", "YELLOW"]) == (2, 3)
    assert (counts.loc["118", "RED"], counts.loc["118", "YELLOW"]) == (20, 30)


def test_settings_read_the_mode_from_the_environment(monkeypatch):
    from sunat_pipeline.settings import get_settings

    assert get_settings().selection.default_capacity_mode == "volume"
    monkeypatch.setenv("SUNAT_SELECTION__DEFAULT_CAPACITY_MODE", "fixed")
    assert get_settings().selection.default_capacity_mode == "fixed"


@pytest.fixture(scope="module")
def scored(tiny_world, tmp_path_factory):
    """The short world's first live day scored (volume mode) with a small model in place of the champion."""
    d1 = SHORT_WORLD.live_dates[0]
    s = tiny_world(SHORT_WORLD, upto=d1).copy(tmp_path_factory.mktemp("capacity"),
                                              selection={"random_share": 0.2, "exploration_share": 0.2})
    X, meta = train.training_set(s, d1)
    model = RiskModel(n_estimators=20, max_depth=3, bag_size=2).fit(X, meta.y, meta.revenue)
    mp = pytest.MonkeyPatch()
    mp.setattr(registry, "champion", lambda settings, load=True: (SimpleNamespace(version="1"), model))
    mp.setattr(registry, "load_version", lambda settings, version: model)
    run = score.score_day(s, d1)
    yield SimpleNamespace(s=s, d1=d1, run=run)
    mp.undo()


def test_the_run_manifest_records_each_office_s_capacity(scored):
    s, d1 = scored.s, scored.d1
    manifest = json.loads(manifest_path(s, d1).read_text())
    rec = manifest["capacity"]
    day_items = ingest.silver(s, "customs", upto=d1, since=d1)
    assert set(rec) == set(day_items.customs_office.astype(str))
    # The world's offices differ in volume: so do their capacities, each from the days before d1 only.
    hist = ingest.silver(s, "customs", upto=d1 - timedelta(days=1))
    vol = office_volumes(hist, d1, s.selection.capacity_window_days)
    expected = office_capacities(s.selection, rec, vol)
    for o, r in rec.items():
        assert (r["red"], r["yellow"]) == (expected[o].red, expected[o].yellow)
        assert r["source"] == ("volume" if o in vol else "default_no_history")
    assert len({r["red"] for r in rec.values()}) > 1
    # Selections stay within each office's recorded capacity (mandatory rules aside).
    out = pd.read_parquet(s.scored_dir / f"declaration_date={d1}" / "part-0.parquet")
    decl = out.drop_duplicates("declaration_id")
    chosen = decl[~decl.mandatory].groupby(["customs_office", "channel"]).size().unstack(fill_value=0)
    for o in chosen.index:
        assert chosen.loc[o].get("RED", 0) <= rec[str(o)]["red"]
        assert chosen.loc[o].get("YELLOW", 0) <= rec[str(o)]["yellow"]
