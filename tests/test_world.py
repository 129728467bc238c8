"""The synthetic world: reproducible, truth kept apart from landing, no give-aways, seasons and sizes, new schemes."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.ingest.sources import SOURCES as PRODUCT_SOURCES
from sunat_pipeline.ingest.sources import parse_landing_name
from sunat_pipeline.settings import get_settings
from sunat_sim.administration import expected_volume, legacy_channels, office_capacity
from sunat_sim.catalogue import HS_CATALOGUE, ORIGINS, PREFERENTIAL_ORIGINS
from sunat_sim.config import load_knobs
from sunat_sim.entities import make_entities
from sunat_sim.permits import REGISTER_COLUMNS
from sunat_sim.prices import REFERENCE_COLUMNS
from sunat_sim.trade import volume_factors
from sunat_sim.world import (
    CUSTOMS_COLUMNS,
    ENFORCEMENT_COLUMNS,
    LANDED_SOURCES,
    SOURCES,
    WorldConfig,
    generate,
    load_world_config,
    simulate,
    truth_dir,
)

CFG = WorldConfig(seed=7, history_days=40, live_days=6, declarations_per_day=60, min_delay_days=1, max_delay_days=2)
TRUTH_ONLY = {"is_fraud", "mechanism", "scheme", "revenue_at_stake_usd", "true_hs_code", "true_origin",
              "true_fob_usd", "true_quantity", "true_net_weight_kg", "restricted", "permit_status", "legacy_channel",
              "propensity", "kind", "preferred_mechanism", "complicit", "shady", "phoenix_of", "scheme_start"}
PERMIT = re.compile(r"^(IQBF|MINAM|SERFOR)-\d{4}-\d{6}$")


def _make(tmp_path_factory, name: str, cfg: WorldConfig):
    tmp = tmp_path_factory.mktemp(name)
    settings = get_settings(lake_root=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    return settings, generate(cfg, settings.lake)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return _make(tmp_path_factory, "world_a", CFG)


@pytest.fixture(scope="module")
def sim():
    """The same world in memory, with its truth (deterministic: equal to what was landed)."""
    return simulate(CFG)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read(folder: Path, pattern: str = "*.csv") -> pd.DataFrame:
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted(folder.glob(pattern))]
    return pd.concat(frames, ignore_index=True)


def test_same_seed_gives_byte_identical_landing_and_truth(world, tmp_path_factory):
    (s1, sum1), (s2, sum2) = world, _make(tmp_path_factory, "world_b", CFG)
    a, b = _files(s1.landing), _files(s2.landing)
    assert a and a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"landing file {name} differs between two runs with the same seed"
    ta, tb = _files(truth_dir(s1.lake)), _files(truth_dir(s2.lake))
    assert {"items.parquet", "importers.parquet", "officers.parquet", "permits.parquet", "world.json"} <= set(ta)
    assert ta == tb
    assert sum1 == sum2


def test_different_seed_or_difficulty_gives_a_different_world(world, tmp_path_factory):
    s1, _ = world
    s2, _ = _make(tmp_path_factory, "world_seed8", replace(CFG, seed=8))
    name = f"customs/customs__{CFG.last_history_date}__history.csv"
    assert (s1.landing / name).read_bytes() != (s2.landing / name).read_bytes()
    assert set(_read(s1.landing / "customs").importer_id) != set(_read(s2.landing / "customs").importer_id)
    easy = simulate(replace(CFG, difficulty="easy"))
    assert load_world_config(s1.lake).k == load_knobs("realistic")
    assert easy.cfg.k["prices"]["sigma"] < CFG.k["prices"]["sigma"]


def test_ground_truth_lives_only_under_world_truth(world):
    settings, _ = world
    assert {p.name for p in settings.lake.iterdir()} == {"landing", "world_truth"}
    landed = [p for p in settings.landing.rglob("*") if p.is_file()]
    assert landed and all(p.suffix == ".csv" for p in landed)
    for p in landed:
        header = set(p.read_text().splitlines()[0].split(","))
        assert not header & TRUTH_ONLY, f"{p.name} carries ground-truth columns {header & TRUTH_ONLY}"
    assert _read(settings.landing / "customs").columns.tolist() == CUSTOMS_COLUMNS
    assert _read(settings.landing / "enforcement").columns.tolist() == ENFORCEMENT_COLUMNS
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet")
    assert truth.is_fraud.any() and not truth.is_fraud.all()


def test_landing_files_follow_the_contract(world):
    settings, summary = world
    assert set(SOURCES) == set(PRODUCT_SOURCES) and set(LANDED_SOURCES) < set(SOURCES)  # tax side: off here
    assert {p.name for p in settings.landing.iterdir()} == set(LANDED_SOURCES)
    for folder in settings.landing.iterdir():
        for p in folder.iterdir():
            m = re.match(r"^([a-z_]+)__(\d{4}-\d{2}-\d{2})(__[A-Za-z0-9_-]+)?\.csv$", p.name)
            assert m and m[1] == folder.name, p.name
            if folder.name in PRODUCT_SOURCES:
                assert parse_landing_name(p).source == folder.name
    customs = sorted(p.name for p in (settings.landing / "customs").iterdir())
    assert customs == [f"customs__{CFG.last_history_date}__history.csv", *[f"customs__{d}.csv" for d in CFG.live_dates]]
    c = _read(settings.landing / "customs")
    assert c.declaration_id.str.match(r"^\d{3}-\d{4}-\d{2}-\d{6,7}$").all()  # the suite's format, no warning
    assert c.importer_id.str.match(r"^20\d{9}$").all()
    assert len(c) == summary["items"] == summary["history_items"] + summary["live_items"]
    assert load_world_config(settings.lake) == CFG


def test_reference_prices_are_dated_estimates_with_gaps(tmp_path_factory):
    cfg = replace(CFG, history_days=100, live_days=2, declarations_per_day=20)
    settings, _ = _make(tmp_path_factory, "world_ref", cfg)
    files = sorted((settings.landing / "reference_prices").glob("*.csv"))
    assert [p.name for p in files] == ["reference_prices__2026-01-01.csv", "reference_prices__2026-04-01.csv"]
    issues = []
    for p in files:
        df = pd.read_csv(p, dtype={"hs_code": str})
        assert df.columns.tolist() == REFERENCE_COLUMNS
        assert (df.valid_from == p.name[len("reference_prices__"):-4]).all()  # in force from the file's date
        assert not df.duplicated(["hs_code", "origin_country"]).any()
        issues.append(df.set_index(["hs_code", "origin_country"]).ref_unit_price_usd_kg)
    both = issues[0].index.intersection(issues[1].index)
    assert (issues[0][both] != issues[1][both]).mean() > 0.9  # re-estimated each issue
    assert len(issues[0]) < len(HS_CATALOGUE) * len(ORIGINS)  # some HS x origin pairs are never published


def test_honest_trade_has_ordinary_origin_differences_and_price_spread(sim):
    honest = sim.items[~sim.items.is_fraud]
    differs = (honest.origin_country != honest.supplier_country).mean()
    assert 0.15 <= differs <= 0.35, differs
    # Legitimate low prices exist: honest items below half their goods' median value per kg.
    uv = honest.fob_usd / honest.net_weight_kg
    rel = uv / uv.groupby([honest.hs_code, honest.origin_country]).transform("median")
    assert (rel < 0.5).mean() > 0.02


def test_permit_numbers_carry_no_format_tell(sim):
    it = sim.items[sim.items.permit_no != ""]
    assert it.permit_no.str.match(PERMIT).all(), "legitimate and forged permits share one format"
    reg = sim.permits.register()
    assert reg.columns.tolist() == REGISTER_COLUMNS
    forged = it[it.permit_status.isin(["fabricated", "borrowed"])]
    legit = it[it.permit_status == "valid"]
    assert len(legit)
    assert set(legit.permit_no) <= set(reg.permit_no)
    assert not set(it.permit_no[it.permit_status == "fabricated"]) & set(reg.permit_no)
    owner = reg.set_index("permit_no").importer_id
    b = forged[forged.permit_status == "borrowed"]
    assert (owner.reindex(b.permit_no).to_numpy() != b.importer_id.to_numpy()).all()


def test_offices_differ_tenfold_and_volume_has_seasons():
    cfg = WorldConfig()
    ent = make_entities(cfg)
    vol = expected_volume(cfg, ent.importers[ent.importers.first_day == 0])
    assert max(vol.values()) / min(vol.values()) >= 10
    cap = office_capacity(cfg, vol)
    assert cap["118"]["red"] > 5 * cap["019"]["red"]
    f = pd.Series(volume_factors(replace(cfg, history_days=365)),
                  index=pd.date_range(cfg.start_date, periods=379, freq="D"))
    assert f.mean() == pytest.approx(1.0)
    weekday = f[f.index.weekday < 5]
    assert weekday.groupby(weekday.index.month).mean().max() / weekday.groupby(weekday.index.month).mean().min() > 1.3
    month_end = weekday.index.days_in_month - weekday.index.day < 4
    assert weekday[month_end].mean() > 1.15 * weekday[~month_end].mean()


def test_schemes_start_on_their_dates_with_their_own_signatures(tmp_path_factory):
    cfg = replace(CFG, live_days=12, declarations_per_day=80)
    w = simulate(cfg)
    it = w.items
    starts = {s["name"]: cfg.day(cfg.scheme_start(s)) for s in cfg.k["schemes"]}
    for name, start in starts.items():
        sch = it[it.scheme == name]
        assert len(sch), name
        assert (sch.declaration_date >= start).all() and sch.is_fraud.all()
    wg = it[it.scheme == "weight_gap"]
    np.testing.assert_allclose(wg.net_weight_kg, wg.true_net_weight_kg, rtol=1e-6)  # weighed, true
    assert (wg.quantity < wg.true_quantity).all()
    hub = it[it.scheme == "hub_transshipment"]
    assert (hub.supplier_country == "PA").all() and hub.origin_country.isin(["CO", "EC"]).all()
    assert (hub.true_origin == "CN").all()
    line = [s for s in cfg.k["schemes"] if s["kind"] == "new_hs_line"][0]
    new = it[it.hs_code == line["hs_code"]]
    assert (new.declaration_date >= starts["new_hs_line"]).all()
    assert (~new.is_fraud).any() and new.is_fraud.any()  # honest goods use the new line too
    # History's origin fraud goes through front companies: origin == supplier country, never a hub.
    hist_origin = it[(it.mechanism == "origin") & (it.scheme == "")]
    assert len(hist_origin) and (hist_origin.origin_country == hist_origin.supplier_country).all()
    assert hist_origin.origin_country.isin(PREFERENTIAL_ORIGINS).all()


def test_legacy_policy_reads_only_what_an_administration_knows(sim):
    cfg = sim.cfg
    day = 10
    items = sim.items[sim.items.declaration_date == cfg.day(day)].reset_index(drop=True)
    ref = np.ones(len(items))
    valid = np.zeros(len(items), dtype=bool)
    cap = office_capacity(cfg, {o: 5.0 for o in items.customs_office.unique()})
    args = (ref, valid, {items.importer_id[0]}, {}, cap)
    a = legacy_channels(items, cfg, np.random.default_rng(1), *args)
    observable = items[CUSTOMS_COLUMNS]  # no truth column: the policy must not need one
    b = legacy_channels(observable, cfg, np.random.default_rng(1), *args)
    np.testing.assert_array_equal(a, b)
    assert set(a) <= {"RED", "YELLOW", "GREEN"}
    # One channel per declaration.
    assert pd.DataFrame({"d": items.declaration_id, "c": a}).groupby("d").c.nunique().max() == 1


def test_legacy_history_is_labelled_by_the_legacy_policy_with_imperfect_inspections(world, sim):
    settings, summary = world
    enf = _read(settings.landing / "enforcement")
    assert set(enf.channel) <= {"RED", "YELLOW"}
    first = enf[~enf.record_id.str.endswith("-C")]
    assert len(first) == summary["legacy_inspected_items"] > 0
    hist = sim.history
    inspected = hist[hist.legacy_channel.isin(["RED", "YELLOW"])]
    assert set(zip(first.declaration_id, first.item_no.astype(int), strict=True)) == set(
        zip(inspected.declaration_id, inspected.item_no, strict=True))
    m = first.astype({"item_no": int}).merge(hist, on=["declaration_id", "item_no"], how="left")
    assert (m.is_fraud & (m.result == "CLEAN")).any(), "an undetected fraud is recorded CLEAN"
    assert ((m.result == "FRAUD") & m.is_fraud).any()
    rec = m.revenue_recovered_usd.astype(float)
    assert (rec[m.result == "CLEAN"] == 0).all()
    delay = (pd.to_datetime(first.reported_date) - pd.to_datetime(first.inspection_date)).dt.days
    assert delay.between(CFG.min_delay_days, CFG.max_delay_days).all()


def test_tax_returns_and_exchange_rates(world):
    settings, _ = world
    tax = _read(settings.landing / "tax")
    period_end = pd.PeriodIndex(tax.period, freq="M").end_time.normalize()
    np.testing.assert_array_equal(pd.to_datetime(tax.filing_date).to_numpy(),
                                  (period_end + pd.Timedelta(days=12)).to_numpy())
    assert not tax.duplicated(["taxpayer_id", "period"]).any()
    fx = _read(settings.landing / "exchange_rates")
    assert pd.to_datetime(fx.rate_date).dt.date.tolist() == [CFG.start_date + timedelta(days=i)
                                                             for i in range(CFG.total_days)]
    assert date.fromisoformat(fx.rate_date.iloc[0]) == CFG.start_date


def test_permit_register_extracts(world, sim):
    settings, _ = world
    files = sorted((settings.landing / "permits").glob("*.csv"))
    assert files[0].name == f"permits__{CFG.last_history_date}__history.csv"
    hist = pd.read_csv(files[0], dtype=str)
    assert hist.columns.tolist() == REGISTER_COLUMNS
    assert (hist.registered_date <= CFG.last_history_date.isoformat()).all()
    assert hist.status.isin(["ACTIVE", "REVOKED"]).all() and not hist.permit_no.duplicated().any()
    for p in files[1:]:
        df = pd.read_csv(p, dtype=str)
        assert (df.registered_date.fillna("") <= p.name[9:19]).all()
