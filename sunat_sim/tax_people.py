"""The tax side's population: every importer is a taxpayer (same tax id), plus domestic firms by sector, size
and region, plus ghost suppliers (shells that only sell invoices); who evades, how, and how hard; and the
e-invoicing network (which firms buy from which).

Evasion is latent and correlates with customs fraud: an importer's probability of evading grows with its
customs fraud propensity. Nothing here is landed; ``tax_world`` turns it into returns and extracts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_sim.config import S_TAX_PEOPLE, WorldConfig, rng
from sunat_sim.entities import new_rucs

MECHANISMS = ("underreported_sales", "fictitious_purchases", "low_margin", "excess_deductions", "non_filing",
              "unrecorded_imports")
GHOST = "ghost_supplier"  # a ghost's own truth mechanism
USD_PEN = 3.75  # the imports' book value uses the month's rate where one exists (tax_world); this is the seed


def tax_months(cfg: WorldConfig) -> pd.PeriodIndex:
    """The simulated tax months: ``prehistory_months`` before the customs world, through its last day's month."""
    first = pd.Period(cfg.start_date, "M") - int(cfg.k["tax"]["prehistory_months"])
    last = pd.Period(cfg.day(cfg.total_days - 1), "M")
    return pd.period_range(first, last, freq="M")


def _month_of(cfg: WorldConfig, months: pd.PeriodIndex, day_index: np.ndarray) -> np.ndarray:
    """Month index (into ``months``) of world day indexes."""
    d = pd.to_datetime(cfg.start_date) + pd.to_timedelta(np.asarray(day_index), unit="D")
    return (d.to_period("M") - months[0]).map(lambda x: x.n).to_numpy()


def import_matrix(items: pd.DataFrame, ids: list[str], months: pd.PeriodIndex, fx: pd.DataFrame) -> np.ndarray:
    """Each importer's imports per month at the value the DAM states (declared CIF plus duty, in PEN at the
    month's mean rate): what its books should show as imported purchases. Zero outside the customs world."""
    out = np.zeros((len(ids), len(months)))
    if items.empty:
        return out
    per = pd.to_datetime(items.declaration_date).dt.to_period("M")
    rate = fx.assign(m=pd.to_datetime(fx.rate_date).dt.to_period("M")).groupby("m").pen_per_unit.mean()
    pen = items.cif_usd * (1 + items.duty_rate) * per.map(rate).fillna(USD_PEN).astype(float)
    g = pd.DataFrame({"i": pd.Index(ids).get_indexer(items.importer_id),
                      "m": (per - months[0]).map(lambda x: x.n).to_numpy(), "v": pen.to_numpy()})
    g = g[(g.i >= 0) & (g.m >= 0) & (g.m < len(months))].groupby(["i", "m"]).v.sum()
    out[g.index.get_level_values(0), g.index.get_level_values(1)] = g.to_numpy()
    return out


def _pick(r: np.random.Generator, mix: dict, n: int) -> np.ndarray:
    names = list(mix)
    p = np.array([float(v[0]) if isinstance(v, list) else float(v) for v in mix.values()])
    return np.array(names)[r.choice(len(names), n, p=p / p.sum())]


def make_taxpayers(cfg: WorldConfig, importers: pd.DataFrame, imports: np.ndarray, taken: set,
                   months: pd.PeriodIndex) -> pd.DataFrame:
    """One row per taxpayer: register fields, true economics (monthly sales scale, margin, B2B share,
    deductions) and the evasion truth (``evader``, ``mechanisms``, ``intensity``)."""
    k = cfg.k["tax"]
    r = rng(cfg.seed, S_TAX_PEOPLE)
    nm = len(months)
    sectors = k["sectors"]
    customs_start = (pd.Period(cfg.start_date, "M") - months[0]).n

    # Importers: sales follow their imports (imports are a share of purchases, purchases a share of sales).
    ni = len(importers)
    live = imports[:, customs_start:]
    mean_imp = np.where((live > 0).any(1), live.sum(1) / np.maximum((live > 0).sum(1), 1), 0)
    isec = _pick(r, k["importer_sectors"], ni)
    imargin = np.clip(r.normal([sectors[s][1] for s in isec], [sectors[s][2] for s in isec]), 0.03, 0.8)
    iscale = np.maximum(mean_imp / np.maximum(1 - imargin, 0.2) / r.uniform(0.45, 0.95, ni), 5_000)
    prop = np.maximum(importers.propensity.to_numpy(), importers.scheme_propensity.to_numpy())
    a0, a1 = k["importer_evasion"]
    imp_first = np.maximum(_month_of(cfg, months, importers.first_day.to_numpy()), 0)
    imp_first = np.where(importers.first_day.to_numpy() == 0, 0, imp_first)
    closed = importers.last_day.to_numpy() <= cfg.total_days
    imp_last = np.where(closed, _month_of(cfg, months, np.minimum(importers.last_day, cfg.total_days - 1)), nm - 1)
    imp = pd.DataFrame({
        "taxpayer_id": importers.importer_id.to_numpy(), "kind": "importer", "sector": isec,
        "size": "", "scale": iscale, "margin": imargin,
        "b2b": [sectors[s][3] for s in isec], "deduction_ratio": [sectors[s][4] for s in isec],
        "first_m": imp_first, "last_m": imp_last, "evader": r.random(ni) < np.clip(a0 + a1 * prop, 0, 0.95),
    })

    # Domestic firms by size and sector; a few registered during the simulated months; some close.
    nd = max(20, int(round(k["domestic_per_importer"] * ni)))
    size = _pick(r, k["sizes"], nd)
    med = np.array([k["sizes"][s][1] for s in size], float)
    dsec = _pick(r, {s: v[0] for s, v in sectors.items()}, nd)
    new = r.random(nd) < k["new_firm_share"]
    first = np.where(new, r.integers(1, nm, nd), 0)
    close_at = first + r.geometric(k["closure_per_month"], nd)
    dom = pd.DataFrame({
        "taxpayer_id": new_rucs(r, nd, taken), "kind": "domestic", "sector": dsec, "size": size,
        "scale": med * np.exp(r.normal(0, k["sales_sigma"], nd)),
        "margin": np.clip(r.normal([sectors[s][1] for s in dsec], [sectors[s][2] for s in dsec]), 0.03, 0.85),
        "b2b": np.clip(r.normal([sectors[s][3] for s in dsec], 0.1), 0.02, 0.98),
        "deduction_ratio": [sectors[s][4] for s in dsec], "first_m": first,
        "last_m": np.where(close_at < nm, close_at, nm - 1), "evader": r.random(nd) < k["evader_share"],
    })

    # Ghosts: registered shortly before they start selling invoices, gone a few months later.
    ng = max(2, int(round(k["ghost_share"] * nd)))
    g0 = r.integers(0, max(1, nm - 2), ng)
    glen = r.integers(k["ghost_months"][0], k["ghost_months"][1] + 1, ng)
    ghosts = pd.DataFrame({
        "taxpayer_id": new_rucs(r, ng, taken), "kind": "ghost", "sector": _pick(r, {"commerce": 0.5,
                                                                                    "services": 0.5}, ng),
        "size": "MICRO", "scale": 0.0, "margin": 0.3, "b2b": 1.0, "deduction_ratio": 0.1,
        "first_m": g0, "last_m": np.minimum(g0 + glen, nm - 1), "evader": True,
    })
    tp = pd.concat([imp, dom, ghosts], ignore_index=True)
    n = len(tp)
    # An importer's size is what its sales make it (the administration classifies by declared sales).
    edges = [k["sizes"]["SMALL"][1] / 3, k["sizes"]["MEDIUM"][1] / 3, k["sizes"]["LARGE"][1] / 3]
    tp.loc[tp.kind == "importer", "size"] = np.array(["MICRO", "SMALL", "MEDIUM", "LARGE"])[
        np.searchsorted(edges, tp.scale[tp.kind == "importer"])]
    region = _pick(r, k["regions"], n)
    tp["region"] = region
    tp["tax_office"] = np.where(tp["size"] == "LARGE", "IPCN", np.char.add("IR-", region.astype(str)))
    tp["tax_regime"] = np.where(np.isin(tp["size"], ["MICRO", "SMALL"]) & (r.random(n) < 0.85), "RMT", "RG")
    # Registration: long before for established firms; the month of their start for new ones; ghosts 0-3
    # months before they start.
    start = months[0].start_time
    est = start - pd.to_timedelta(r.integers(60, 20 * 365, n), unit="D")
    began = pd.to_datetime([months[m].start_time for m in tp.first_m]) + pd.to_timedelta(r.integers(0, 27, n), "D")
    lead = pd.to_timedelta(np.where(tp.kind == "ghost", r.integers(5, 90, n), 0), unit="D")
    tp["registered_date"] = np.where((tp.first_m > 0) | (tp.kind == "ghost"), began - lead, est)
    tp["registered_date"] = pd.to_datetime(tp.registered_date).dt.date
    tp["closed"] = tp.last_m < nm - 1
    # Honest address problems: the status noise that ghosts' vanishing hides in.
    nl = r.geometric(k["not_located_per_month"], n) + tp.first_m
    tp["not_located_m"] = np.where((tp.kind != "ghost") & (nl <= tp.last_m), nl, -1)
    tp.loc[tp.kind == "ghost", "not_located_m"] = np.where(r.random(ng) < 0.6, tp.last_m[tp.kind == "ghost"], -1)
    _assign_evasion(tp, k, r)
    return tp


def _assign_evasion(tp: pd.DataFrame, k: dict, r: np.random.Generator) -> None:
    n = len(tp)
    mix = k["mechanism_mix"]
    first = _pick(r, mix, n)
    second = _pick(r, mix, n)
    two = r.random(n) < k["second_mechanism"]
    unrec = (tp.kind == "importer").to_numpy() & (r.random(n) < k["unrecorded_imports"])
    mechs = []
    for i, ev in enumerate(tp.evader.to_numpy()):
        kind = tp.kind.iat[i]
        if kind == "ghost":
            mechs.append(GHOST)
            continue
        if not ev:
            mechs.append("")
            continue
        m = [first[i]] + ([second[i]] if two[i] and second[i] != first[i] else [])
        if unrec[i]:
            m = ["unrecorded_imports", *m[:1]]
        mechs.append(",".join(m))
    tp["mechanisms"] = mechs
    tp["intensity"] = np.where(tp.evader, r.beta(*k["intensity"], n), 0.0)
    # Fictitious purchases come as invoices bought from ghosts, or as purchases no seller ever reported.
    tp["fict_variant"] = np.where(tp.mechanisms.str.contains("fictitious"),
                                  np.where(r.random(n) < 0.5, "ghost", "unbacked"), "")


def has(tp: pd.DataFrame, mechanism: str) -> np.ndarray:
    return tp.mechanisms.str.split(",").map(lambda m: mechanism in m).to_numpy()


def supplier_links(tp: pd.DataFrame, k: dict, r: np.random.Generator, demand: np.ndarray) -> pd.DataFrame:
    """Who buys from whom, and how much a month on average: each firm draws e-invoicing suppliers (more for
    larger firms) in proportion to their B2B capacity, and each seller draws customers in proportion to their
    needs; the amounts are then fitted (iterative proportional fitting) so that every buyer's invoiced
    purchases meet its ``demand`` and every seller's invoiced sales its B2B share of sales (rescaled to the
    same total), so neither side's books carry unexplained gaps."""
    real = np.flatnonzero((tp.kind != "ghost").to_numpy())
    scale = tp.scale.to_numpy()
    supply = (scale * tp.b2b.to_numpy())[real]
    need = demand[real]
    n_of = 1 + r.poisson(k["suppliers_per_log_scale"] * np.maximum(np.log10(scale[real] + 1) - 3.5, 0))
    b1 = np.repeat(real, n_of)
    s1 = real[r.choice(len(real), len(b1), p=supply / supply.sum())]
    s2 = np.repeat(real, n_of)
    b2 = real[r.choice(len(real), len(s2), p=need / need.sum())]
    links = pd.DataFrame({"buyer": np.r_[b1, b2], "seller": np.r_[s1, s2]}).query("buyer != seller")
    links = links.drop_duplicates().reset_index(drop=True)
    row_t = pd.Series(supply * need.sum() / supply.sum(), index=real)
    col_t = pd.Series(need, index=real)
    v = r.gamma(1.0, 1.0, len(links))
    for _ in range(15):
        v *= (col_t.reindex(links.buyer).to_numpy()
              / pd.Series(v).groupby(links.buyer.to_numpy()).transform("sum").to_numpy().clip(1e-9))
        v *= (row_t.reindex(links.seller).to_numpy()
              / pd.Series(v).groupby(links.seller.to_numpy()).transform("sum").to_numpy().clip(1e-9))
    links["base"] = v  # average monthly invoiced amount of the pair
    return links


def ghost_links(tp: pd.DataFrame, r: np.random.Generator) -> pd.DataFrame:
    """Evaders who buy invoices: each from one or two ghosts active while it trades."""
    buyers = np.flatnonzero((tp.fict_variant == "ghost").to_numpy())
    ghosts = np.flatnonzero((tp.kind == "ghost").to_numpy())
    rows = [(b, int(g)) for b in buyers for g in r.choice(ghosts, min(len(ghosts), 1 + int(r.random() < 0.4)),
                                                          replace=False)]
    return pd.DataFrame(rows, columns=["buyer", "seller"])
