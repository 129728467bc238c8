"""The synthetic world: reproducible, truth kept apart from landing, drift, legacy inspections, tax returns."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.ingest.sources import SOURCES, parse_landing_name
from sunat_pipeline.settings import get_settings
from sunat_sim.world import (
    CUSTOMS_COLUMNS,
    ENFORCEMENT_COLUMNS,
    WorldConfig,
    generate,
    generate_day,
    legacy_channels,
    load_world_config,
    make_entities,
    truth_dir,
)

CFG = WorldConfig(seed=7, history_days=40, live_days=3, declarations_per_day=40, min_delay_days=1, max_delay_days=1)
TRUTH_ONLY = {"is_fraud", "mechanism", "revenue_at_stake_usd", "true_hs_code", "true_origin", "true_fob_usd",
              "restricted", "preferred_mechanism", "propensity", "habitual", "ring", "complicit", "shady"}


def _make(tmp_path_factory, name: str, cfg: WorldConfig):
    tmp = tmp_path_factory.mktemp(name)
    settings = get_settings(lake_root=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    summary = generate(cfg, settings.lake)
    return settings, summary


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return _make(tmp_path_factory, "world_a", CFG)


@pytest.fixture(scope="module")
def world_again(tmp_path_factory):
    return _make(tmp_path_factory, "world_b", CFG)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(folder: Path, pattern: str = "*.csv") -> pd.DataFrame:
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted(folder.glob(pattern))]
    return pd.concat(frames, ignore_index=True)


def test_same_seed_gives_byte_identical_landing_and_truth(world, world_again):
    (s1, sum1), (s2, sum2) = world, world_again
    a, b = _files(s1.landing), _files(s2.landing)
    assert a and a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"landing file {name} differs between two runs with the same seed"
    ta, tb = _files(truth_dir(s1.lake)), _files(truth_dir(s2.lake))
    assert set(ta) == {"items.parquet", "importers.parquet", "world.json"}
    assert ta == tb
    assert sum1 == sum2


def test_different_seed_gives_a_different_world(world, tmp_path_factory):
    s1, _ = world
    s2, _ = _make(tmp_path_factory, "world_seed8", replace(CFG, seed=8))
    name = "customs/customs__2026-02-09__history.csv"
    assert (s1.landing / name).read_bytes() != (s2.landing / name).read_bytes()
    t1 = pd.read_parquet(truth_dir(s1.lake) / "items.parquet")
    t2 = pd.read_parquet(truth_dir(s2.lake) / "items.parquet")
    assert not t1.equals(t2)
    assert set(t1.importer_id) != set(t2.importer_id)


def test_ground_truth_lives_only_under_world_truth(world):
    settings, _ = world
    assert truth_dir(settings.lake) == settings.lake / "world_truth"
    assert {p.name for p in settings.lake.iterdir()} == {"landing", "world_truth"}
    landed = [p for p in settings.landing.rglob("*") if p.is_file()]
    assert landed and all(p.suffix == ".csv" for p in landed)
    for p in landed:
        header = set(p.read_text().splitlines()[0].split(","))
        assert not header & TRUTH_ONLY, f"{p.name} carries ground-truth columns {header & TRUTH_ONLY}"
    assert _read(settings.landing / "customs").columns.tolist() == CUSTOMS_COLUMNS
    assert _read(settings.landing / "enforcement").columns.tolist() == ENFORCEMENT_COLUMNS
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet")
    assert {"is_fraud", "mechanism", "revenue_at_stake_usd"} <= set(truth.columns)
    assert truth.is_fraud.any() and not truth.is_fraud.all()


def test_landing_files_follow_the_contract(world):
    settings, summary = world
    hist_end = CFG.first_live_date - timedelta(days=1)
    for folder in settings.landing.iterdir():
        assert folder.name in SOURCES
        for p in folder.iterdir():
            lf = parse_landing_name(p)
            assert lf is not None and lf.source == folder.name, p.name
    customs = sorted(p.name for p in (settings.landing / "customs").iterdir())
    assert customs == [f"customs__{hist_end}__history.csv", *[f"customs__{d}.csv" for d in CFG.live_dates]]
    for d in CFG.live_dates:
        day = pd.read_csv(settings.landing / "customs" / f"customs__{d}.csv", dtype=str)
        assert (day.declaration_date == d.isoformat()).all()
    hist = pd.read_csv(settings.landing / "customs" / f"customs__{hist_end}__history.csv", dtype=str)
    assert hist.declaration_date.max() == hist_end.isoformat()
    assert len(hist) == summary["history_items"]
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet")
    assert len(truth) == summary["items"] == summary["history_items"] + summary["live_items"]
    assert load_world_config(settings.lake) == CFG


def test_drift_ring_appears_on_the_drift_date(world):
    settings, summary = world
    drift = CFG.start_date + timedelta(days=CFG.drift_index)
    assert drift == CFG.first_live_date + timedelta(days=2)
    assert summary["drift_date"] == drift.isoformat()
    imp = pd.read_parquet(truth_dir(settings.lake) / "importers.parquet")
    ring = set(imp.importer_id[imp.ring])
    assert ring and (imp.first_day[imp.ring] == CFG.drift_index).all()
    customs = _read(settings.landing / "customs")
    dates = pd.to_datetime(customs.declaration_date).dt.date
    of_ring = customs.importer_id.isin(ring)
    assert of_ring.any(), "the ring should lodge declarations from the drift date"
    assert dates[of_ring].min() == drift
    # A new route: brokers B9xx, suppliers in VN/TH, electronics and machines (HS 84/85).
    r = customs[of_ring]
    assert r.declarant_id.str.startswith("B9").all()
    assert r.supplier_country.isin(["VN", "TH"]).all()
    assert r.hs_code.str[:2].isin(["84", "85"]).all()
    assert not customs.declarant_id[~of_ring].str.startswith("B9").any()


def test_drift_inside_history_shows_new_importers_in_the_history_extract(tmp_path_factory):
    cfg = replace(CFG, drift_day=25)
    settings, summary = _make(tmp_path_factory, "world_drift", cfg)
    drift = cfg.start_date + timedelta(days=25)
    assert summary["drift_date"] == drift.isoformat()
    hist = _read(settings.landing / "customs", "*__history.csv")
    dates = pd.to_datetime(hist.declaration_date).dt.date
    ring = hist.declarant_id.str.startswith("B9")
    assert ring.any()
    assert dates[ring].min() == drift
    # Importers of the ring were never seen before the drift date.
    assert not set(hist.importer_id[ring]) & set(hist.importer_id[dates < drift])
    # The ring undervalues heavily: its declared unit values sit far below other importers' on the same codes.
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet")
    ring_truth = truth[truth.importer_id.isin(set(hist.importer_id[ring]))]
    assert ring_truth.is_fraud.any()
    assert (ring_truth.mechanism[ring_truth.is_fraud] == "undervaluation").all()


def _legacy_inspected(cfg: WorldConfig) -> pd.DataFrame:
    """Recompute the legacy policy's channel for every history item."""
    ent = make_entities(cfg)
    rows = []
    for i in range(cfg.history_days):
        items = generate_day(cfg, ent, i)
        if items.empty:
            continue
        ch = legacy_channels(items, ent, cfg, i)
        rows.append(items[["declaration_id", "item_no"]].assign(channel=ch))
    return pd.concat(rows, ignore_index=True)


def test_enforcement_outcomes_exist_only_for_inspected_items(world):
    settings, summary = world
    enf = _read(settings.landing / "enforcement")
    assert len(enf) == summary["legacy_inspected_items"] > 0
    assert set(enf.channel) <= {"RED", "YELLOW"}
    legacy = _legacy_inspected(CFG).astype({"item_no": str})
    inspected = legacy[legacy.channel.isin(["RED", "YELLOW"])]
    got = enf[["declaration_id", "item_no", "channel"]].sort_values(["declaration_id", "item_no"])
    exp = inspected.sort_values(["declaration_id", "item_no"])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), exp.reset_index(drop=True))
    assert (legacy.channel == "GREEN").any()
    # Every record is about a lodged history item; live days are not inspected by the world itself.
    customs = _read(settings.landing / "customs")
    keys = set(zip(customs.declaration_id, customs.item_no, strict=True))
    assert all(k in keys for k in zip(enf.declaration_id, enf.item_no, strict=True))
    assert (pd.to_datetime(enf.inspection_date).dt.date < CFG.first_live_date).all()


def test_enforcement_outcomes_agree_with_truth_and_delays(world):
    settings, summary = world
    enf = _read(settings.landing / "enforcement")
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet").astype({"item_no": str})
    m = enf.merge(truth, on=["declaration_id", "item_no"], how="left", validate="one_to_one")
    fraud = m.result == "FRAUD"
    assert fraud.sum() == summary["legacy_frauds_found"] > 0
    assert m.is_fraud[fraud].all(), "an honest item can never be found fraudulent"
    assert (m.offence_code[fraud] == m.mechanism[fraud]).all()
    assert (m.offence_code[~fraud] == "").all()
    np.testing.assert_allclose(m.revenue_recovered_usd[fraud].astype(float), m.revenue_at_stake_usd[fraud])
    assert (m.revenue_recovered_usd[~fraud].astype(float) == 0).all()
    delay = (pd.to_datetime(enf.reported_date) - pd.to_datetime(enf.inspection_date)).dt.days
    assert delay.between(CFG.min_delay_days, CFG.max_delay_days).all()
    # Each extract holds the records reported by its date: history in bulk, then one file per later day.
    hist_end = CFG.first_live_date - timedelta(days=1)
    for p in (settings.landing / "enforcement").glob("*.csv"):
        lf = parse_landing_name(p)
        rep = pd.to_datetime(pd.read_csv(p, dtype=str).reported_date).dt.date
        if lf.tag == "history":
            assert rep.max() <= hist_end
        else:
            assert (rep == lf.available).all() and lf.available > hist_end


def test_tax_returns_exist_and_are_filed_after_their_month(world):
    settings, _ = world
    tax = _read(settings.landing / "tax")
    assert len(tax) > 0
    period_end = pd.PeriodIndex(tax.period, freq="M").end_time.normalize()
    np.testing.assert_array_equal(pd.to_datetime(tax.filing_date).to_numpy(),
                                  (period_end + pd.Timedelta(days=12)).to_numpy())
    for p in (settings.landing / "tax").glob("*.csv"):
        lf = parse_landing_name(p)
        df = pd.read_csv(p, dtype=str)
        if lf.tag != "history":
            assert len(df) and (df.filing_date == lf.available.isoformat()).all()
        assert (pd.to_datetime(df.filing_date).dt.date <= lf.available).all()
    # Returns come from importers, one per taxpayer and month they imported in.
    customs = _read(settings.landing / "customs")
    imported = set(zip(customs.importer_id, customs.declaration_date.str[:7], strict=True))
    assert set(zip(tax.taxpayer_id, tax.period, strict=True)) <= imported
    assert not tax.duplicated(["taxpayer_id", "period"]).any()
    assert (tax[["sales_pen", "purchases_pen", "igv_credit_pen"]].astype(float) > 0).all().all()


def test_exchange_rates_and_reference_prices_landed(world):
    settings, _ = world
    fx = _read(settings.landing / "exchange_rates")
    expected = [CFG.start_date + timedelta(days=i) for i in range(CFG.total_days)]
    assert pd.to_datetime(fx.rate_date).dt.date.tolist() == expected
    assert (fx.currency == "USD").all()
    ref = _read(settings.landing / "reference_prices")
    assert not ref.duplicated(["hs_code", "origin_country"]).any()
    customs = _read(settings.landing / "customs")
    assert set(customs.hs_code) <= set(ref.hs_code)
    assert date.fromisoformat(fx.rate_date.iloc[0]) == CFG.start_date
