"""Synthetic customs world: simulate the days in order, then land the extracts and keep the truth apart.

The generator writes two things that must never be mixed:

* landing extracts (what source systems would drop): ``<lake>/landing/<source>/<source>__<date>[__tag].csv``
* the ground truth (``<lake>/world_truth``), read only by the inspection simulator and evaluation code.

Days are simulated in order because the world has memory: the legacy administration's findings feed its
watch list and make offenders react (deterrence, displacement, phoenixes), permits are issued as they are
needed. Every draw comes from a ``numpy.random.default_rng`` stream keyed by (seed, purpose, day), so the
same seed, options and knobs give the same files byte for byte. The model is described in docs/world.md;
its knobs are in config/world.yaml.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.lake.store import atomic_write_bytes, write_parquet_atomic
from sunat_pipeline.settings import TaxSettings
from sunat_sim import administration
from sunat_sim.adaptation import react
from sunat_sim.administration import ENFORCEMENT_COLUMNS, expected_volume, office_capacity
from sunat_sim.config import (
    S_ADAPT,
    S_FX,
    S_LEGACY,
    S_LEGACY_INSPECT,
    S_PERMITS,
    S_TAX,
    WorldConfig,
    dumps,
    rng,
)
from sunat_sim.entities import Entities, make_entities
from sunat_sim.permits import PermitBook, extract_dates, register_extract
from sunat_sim.prices import PriceModel, in_force
from sunat_sim.tax_world import TAX_SOURCES, customs_view, extracts, simulate_tax, write_tax_truth
from sunat_sim.trade import Ctx, generate_day, volume_factors

__all__ = ["CUSTOMS_COLUMNS", "ENFORCEMENT_COLUMNS", "SOURCES", "LANDED_SOURCES", "TRUTH_COLUMNS", "World",
           "WorldConfig", "generate", "landing_name", "load_world_config", "simulate", "truth_dir"]
log = logging.getLogger(__name__)

# The extracts the world lands (the product's landing contract names the same sources): the daily ones always,
# the tax side's monthly ones when ``WorldConfig.tax_world`` is on.
LANDED_SOURCES = ("customs", "tax", "enforcement", "reference_prices", "exchange_rates", "permits")
SOURCES = LANDED_SOURCES + TAX_SOURCES
CUSTOMS_COLUMNS = [
    "declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
    "supplier_id", "supplier_country", "transport_mode", "hs_code", "origin_country", "quantity",
    "net_weight_kg", "invoice_currency", "fob_invoice", "fob_usd", "freight_usd", "insurance_usd", "cif_usd",
    "duty_rate", "permit_no",
]
TRUTH_COLUMNS = ["declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "is_fraud",
                 "mechanism", "scheme", "revenue_at_stake_usd", "true_hs_code", "true_origin", "true_fob_usd",
                 "true_quantity", "true_net_weight_kg", "restricted", "permit_status", "legacy_channel", "cif_usd"]


@dataclass
class World:
    cfg: WorldConfig
    items: pd.DataFrame  # declared columns + truth, every item of every day
    enforcement: pd.DataFrame  # the legacy history's records, corrections included
    publications: pd.DataFrame  # every reference price issue (valid_from)
    permits: PermitBook
    ent: Entities
    reactions: pd.DataFrame

    @property
    def history(self) -> pd.DataFrame:
        return self.items[self.items.declaration_date <= self.cfg.last_history_date]

    @property
    def live(self) -> pd.DataFrame:
        return self.items[self.items.declaration_date > self.cfg.last_history_date]


class _Watch:
    """Findings reported so far, to build the legacy watch list as known at the start of a day."""

    def __init__(self):
        self.rows: list[tuple[str, int, int]] = []  # (importer, reported day, overturned day or a large number)

    def add(self, records: pd.DataFrame, importer_of: dict[str, str], cfg: WorldConfig) -> None:
        corr = records[records.record_id.str.endswith("-C")]
        over = {(d, int(n)): cfg.index(r) for d, n, r in zip(corr.declaration_id, corr.item_no, corr.reported_date,
                                                            strict=True)}
        fr = records[(records.result == "FRAUD")]
        for d, n, rep in zip(fr.declaration_id, fr.item_no, fr.reported_date, strict=True):
            self.rows.append((importer_of[d], cfg.index(rep), over.get((d, int(n)), 10**9)))

    def known(self, day: int, window: int) -> set[str]:
        return {imp for imp, rep, over in self.rows if day - window <= rep < day and over >= day}


def simulate(cfg: WorldConfig) -> World:
    """Simulate every day of the world in memory (nothing written)."""
    ent = make_entities(cfg)
    prices = PriceModel(cfg, ent.hs)
    ctx = Ctx(cfg, ent, prices, PermitBook(cfg, rng(cfg.seed, S_PERMITS)), volume_factors(cfg))
    created = {s["hs_code"]: cfg.scheme_start(s) for s in cfg.k["schemes"] if s["kind"] == "new_hs_line"}
    pubs = pd.concat([prices.publication(d, created) for d in prices.publication_dates()], ignore_index=True)
    capacity = office_capacity(cfg, expected_volume(cfg, ent.importers[ent.importers.first_day == 0]))
    # Importers trading before the simulation starts have a record the legacy system already knows.
    past = {x: 100 for x in ent.importers.importer_id[ent.importers.first_day == 0]}
    watch, days, enforcement, reactions = _Watch(), [], [], []
    window = cfg.k["administration"]["legacy"]["watch_days"]
    for i in range(cfg.total_days):
        items = generate_day(ctx, i)
        if items.empty:
            continue
        items["legacy_channel"] = ""
        if i < cfg.history_days:
            d = cfg.day(i)
            ref = in_force(pubs, items.hs_code, items.origin_country, [d] * len(items))
            valid = ctx.permits.known_valid(items.permit_no, items.importer_id, items.hs_code, i)
            ch = administration.legacy_channels(items, cfg, rng(cfg.seed, S_LEGACY, i), ref, valid,
                                                watch.known(i, window), past, capacity)
            items["legacy_channel"] = ch
            rec, seen = administration.inspect(items, ch, cfg, ent.officers, d, rng(cfg.seed, S_LEGACY_INSPECT, i),
                                               stream=S_LEGACY_INSPECT)
            enforcement.append(rec)
            watch.add(rec, dict(zip(items.declaration_id, items.importer_id, strict=True)), cfg)
            caught = seen[seen.true_find]
            for imp_id in sorted(set(caught.importer_id[caught.mechanism == "prohibited"])):
                ctx.permits.revoke(imp_id, i)
            counts = react(ctx, caught.importer_id.tolist(), i, rng(cfg.seed, S_ADAPT, i))
            reactions.append({"day": d, **counts})
        for imp_id, nd in items.drop_duplicates("declaration_id").importer_id.value_counts().items():
            past[imp_id] = past.get(imp_id, 0) + int(nd)
        days.append(items)
        if (i + 1) % 30 == 0:
            log.info("world: simulated %d/%d days", i + 1, cfg.total_days)
    enf = pd.concat(enforcement, ignore_index=True) if enforcement else pd.DataFrame(columns=ENFORCEMENT_COLUMNS)
    return World(cfg, pd.concat(days, ignore_index=True), enf, pubs, ctx.permits, ent, pd.DataFrame(reactions))


def tax_returns(w: World) -> pd.DataFrame:
    """Monthly returns per importer; evaders under-declare purchases and their IGV credit drifts."""
    r = rng(w.cfg.seed, S_TAX)
    igv = TaxSettings().igv_rate
    t = w.items.assign(period=pd.to_datetime(w.items.declaration_date).dt.to_period("M").astype(str))
    t["true_cif_pen"] = t.true_fob_usd * 1.06 * 3.75
    monthly = t.groupby(["importer_id", "period"], as_index=False).true_cif_pen.sum()
    imp = w.ent.importers.set_index("importer_id")
    prop = imp.propensity.reindex(monthly.importer_id).to_numpy()
    n = len(monthly)
    purchases = monthly.true_cif_pen * (1 + r.uniform(0.2, 1.0, n))
    evasion = np.where(prop > 0.2, prop * r.uniform(0.3, 0.8, n), np.abs(r.normal(0, 0.03, n)))
    declared_purchases = purchases * (1 - evasion)
    sales = purchases * r.uniform(1.1, 1.5, n) * (1 - 0.8 * evasion)
    period_end = pd.PeriodIndex(monthly.period, freq="M").end_time.normalize()
    return pd.DataFrame({
        "taxpayer_id": monthly.importer_id, "period": monthly.period,
        "filing_date": (period_end + pd.Timedelta(days=12)).date,
        "sales_pen": sales.round(2), "purchases_pen": declared_purchases.round(2),
        "igv_debit_pen": (sales * igv).round(2),
        "igv_credit_pen": (declared_purchases * igv * r.uniform(0.95, 1.05, n)).round(2),
    })


def exchange_rates(cfg: WorldConfig) -> pd.DataFrame:
    r = rng(cfg.seed, S_FX)
    n = cfg.total_days + 1
    pen = 3.75 + np.cumsum(r.normal(0, 0.006, n))
    return pd.DataFrame({"rate_date": [cfg.day(i) for i in range(n)], "currency": "USD", "pen_per_unit": pen.round(4)})


def landing_name(source: str, d: date, tag: str = "") -> str:
    return f"{source}__{d.isoformat()}{'__' + tag if tag else ''}.csv"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def generate(cfg: WorldConfig, lake: Path) -> dict:
    """Simulate the world and land it; returns a summary of what was written."""
    w = simulate(cfg)
    land = Path(lake) / "landing"
    hist_end = cfg.last_history_date
    hist, live = w.history, w.live
    _write_csv(hist[CUSTOMS_COLUMNS], land / "customs" / landing_name("customs", hist_end, "history"))
    for d, g in live.groupby("declaration_date"):
        _write_csv(g[CUSTOMS_COLUMNS], land / "customs" / landing_name("customs", d))
    # Legacy enforcement: what was reported by the end of history in bulk, later reports (and corrections) per day.
    enf = w.enforcement
    _write_csv(enf[enf.reported_date <= hist_end], land / "enforcement" /
               landing_name("enforcement", hist_end, "history"))
    for d, g in enf[enf.reported_date > hist_end].groupby("reported_date"):
        _write_csv(g, land / "enforcement" / landing_name("enforcement", d, "legacy"))
    # The tax side: its own monthly extracts; the customs-facing ``tax`` extract is then the importers' IGV
    # returns (docs/tax.md), so customs features and the tax side read the same numbers.
    tw = simulate_tax(cfg, w.ent.importers, w.items, exchange_rates(cfg), w.ent.taken) if cfg.tax_world else None
    if tw is not None:
        for source, files in extracts(tw, cfg.day(cfg.total_days - 1)).items():
            for d, tag, g in files:
                _write_csv(g, land / source / landing_name(source, d, tag))
        write_tax_truth(tw, truth_dir(lake))
    tax = customs_view(tw, cfg) if tw is not None else tax_returns(w)
    _write_csv(tax[tax.filing_date <= hist_end], land / "tax" / landing_name("tax", hist_end, "history"))
    for d, g in tax[(tax.filing_date > hist_end) & (tax.filing_date <= cfg.live_dates[-1])].groupby("filing_date"):
        _write_csv(g, land / "tax" / landing_name("tax", d))
    fx = exchange_rates(cfg)
    _write_csv(fx[fx.rate_date <= hist_end], land / "exchange_rates" /
               landing_name("exchange_rates", hist_end, "history"))
    for d in cfg.live_dates:
        _write_csv(fx[fx.rate_date == d], land / "exchange_rates" / landing_name("exchange_rates", d))
    # Reference prices: one extract per issue, on the day it comes into force.
    for d, g in w.publications.groupby("valid_from"):
        _write_csv(g, land / "reference_prices" / landing_name("reference_prices", d))
    # Permit register: the state at the end of history in bulk, then what changed, weekly.
    reg = w.permits.register()
    _write_csv(register_extract(reg, cfg, None, cfg.index(hist_end)), land / "permits" /
               landing_name("permits", hist_end, "history"))
    prev = cfg.index(hist_end)
    for d in extract_dates(cfg):
        _write_csv(register_extract(reg, cfg, prev, cfg.index(d)), land / "permits" / landing_name("permits", d))
        prev = cfg.index(d)
    _write_truth(w, lake)
    summary = summarise(w)
    if tw is not None:
        tp = tw.taxpayers
        summary["tax"] = {"taxpayers": len(tp), "importers": int((tp.kind == "importer").sum()),
                          "ghosts": int((tp.kind == "ghost").sum()), "months": len(tw.months),
                          "evader_rate": round(float(tp.evader[tp.kind != "ghost"].mean()), 4),
                          "igv_returns": len(tw.igv), "einvoice_aggregates": len(tw.einvoices),
                          "audits": len(tw.audits)}
    log.info("world: %s", summary)
    return summary


def _write_truth(w: World, lake: Path) -> None:
    tdir = truth_dir(lake)
    write_parquet_atomic(w.items[TRUTH_COLUMNS].reset_index(drop=True), tdir / "items.parquet")
    write_parquet_atomic(w.ent.importers.assign(chapters=w.ent.importers.chapters.map(",".join),
                                                suppliers=w.ent.importers.suppliers.map(",".join)),
                         tdir / "importers.parquet")
    write_parquet_atomic(w.ent.officers, tdir / "officers.parquet")
    reg = w.permits.register()
    write_parquet_atomic(register_extract(reg, w.cfg, None, 10**9), tdir / "permits.parquet")
    write_parquet_atomic(w.reactions, tdir / "reactions.parquet")
    atomic_write_bytes(tdir / "world.json", dumps(w.cfg.to_json()))


def summarise(w: World) -> dict:
    cfg, items = w.cfg, w.items
    decl = items.groupby("declaration_id").is_fraud.any()
    return {
        "difficulty": cfg.difficulty, "items": len(items), "declarations": int(len(decl)),
        "history_items": len(w.history), "live_items": len(w.live),
        "fraud_rate_items": round(float(items.is_fraud.mean()), 4),
        "fraud_rate_declarations": round(float(decl.mean()), 4),
        "legacy_inspected_items": int((~w.enforcement.record_id.str.endswith("-C")).sum()),
        "legacy_frauds_found": int((w.enforcement.result == "FRAUD").sum()),
        "legacy_corrections": int(w.enforcement.record_id.str.endswith("-C").sum()),
        "importers": len(w.ent.importers), "first_live_date": cfg.first_live_date.isoformat(),
        "schemes": cfg.to_json()["schemes"],
        "drift_date": min(cfg.to_json()["schemes"].values(), default=None),
        "declarations_per_day_by_office": {o: round(float(v), 1) for o, v in sorted(
            (items.drop_duplicates("declaration_id").customs_office.value_counts() / cfg.total_days).items())},
    }


def truth_dir(lake: Path) -> Path:
    """Ground truth of the world: read only by the simulator and evaluation, never by the pipeline."""
    return Path(lake) / "world_truth"


def load_world_config(lake: Path) -> WorldConfig:
    return WorldConfig.from_json(json.loads((truth_dir(lake) / "world.json").read_text()))
