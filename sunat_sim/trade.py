"""One day of trade: who declares what, at what price, and which items are frauds (the truth frame).

Honest items carry the ordinary variety of trade (origin differing from the seller's country, heavy-tailed
prices, seasons, legitimately low lots, permits not yet registered or mistyped). Fraudulent items follow
their mechanism; actors of a new scheme, once it starts, follow the scheme's signature instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sunat_pipeline.settings import TaxSettings
from sunat_sim.catalogue import EUR_PER_USD, ORIGINS, PREFERENTIAL_ORIGINS, RESTRICTED_FLAGS, currency_of
from sunat_sim.config import S_DAY, WorldConfig, rng
from sunat_sim.entities import Entities, office_table
from sunat_sim.permits import PermitBook
from sunat_sim.prices import PriceModel

FREIGHT_PER_KG = {"SEA": 0.15, "AIR": 4.0, "ROAD": 0.25}  # USD per kg, before each shipment's own spread


@dataclass
class Ctx:
    """Everything a day's generation reads, and the state the world carries from day to day."""

    cfg: WorldConfig
    ent: Entities
    prices: PriceModel
    permits: PermitBook
    volume: np.ndarray
    deterred_until: dict[str, int] = field(default_factory=dict)
    seq: dict[tuple[str, int], int] = field(default_factory=dict)  # declaration numbers per office and year

    def __post_init__(self):
        hs = self.ent.hs
        self.hs_info = {h.hs_code: h for h in hs.itertuples()}
        base = hs[hs.flag != "new"]
        self.hs_by_ch = {c: g.hs_code.to_numpy() for c, g in base.groupby(base.hs_code.str[:2])}
        duty = dict(zip(hs.hs_code, hs.duty_rate, strict=True))
        price = dict(zip(hs.hs_code, hs.base_price, strict=True))
        near = self.cfg.k["fraud"]["misclassification_price_ratio"]
        self.cheaper = {c: np.array([x for x in self.hs_by_ch[c[:2]] if duty[x] < duty[c]
                                     and 1 / near <= price[x] / price[c] <= near]) for c in base.hs_code}
        self.schemes = {s["name"]: s for s in self.cfg.k["schemes"]}
        self.starts = {s["name"]: self.cfg.scheme_start(s) for s in self.cfg.k["schemes"]}
        sup = self.ent.suppliers.set_index("supplier_id")
        self.sup_country, self.sup_kind = sup.supplier_country.to_dict(), sup.kind.to_dict()
        self.sup_shady, self.sup_level = sup.shady.to_dict(), sup.price_level.to_dict()
        self.complicit = dict(zip(self.ent.declarants.declarant_id, self.ent.declarants.complicit, strict=True))
        self.offices = office_table(self.cfg)
        self.mode = dict(zip(self.offices.customs_office, self.offices.transport_mode, strict=True))


def volume_factors(cfg: WorldConfig) -> np.ndarray:
    """Relative volume of each simulated day (weekday, month of year, month end, growth), mean 1."""
    v = cfg.k["volume"]
    days = pd.date_range(cfg.start_date, periods=cfg.total_days, freq="D")
    f = np.array(v["weekday"])[days.weekday] * np.array(v["month_of_year"])[days.month - 1]
    month_end = days.days_in_month - days.day < v["month_end_days"]
    growth = (1 + v["yearly_growth"]) ** (np.arange(len(days)) / 365)
    f = f * np.where(month_end, 1 + v["month_end_boost"], 1.0) * growth
    return f / f.mean()


def _odds(p: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    return p * ratio / (1 - p + p * ratio)


def taxes(cif: np.ndarray, duty_rate: np.ndarray) -> np.ndarray:
    """Duty, then IGV and IPM on CIF plus duty (the administration's rates, from the product's settings)."""
    t = TaxSettings()
    duty = cif * duty_rate
    return duty + (cif + duty) * (t.igv_rate + t.ipm_rate)


def _units_as(ctx: Ctx, code: str, kg: float, r: np.random.Generator) -> float:
    """Units a false description would declare for ``kg`` of goods: the paperwork is made consistent."""
    kgpu = ctx.hs_info[code].kg_per_unit * np.exp(r.normal(0, ctx.cfg.k["prices"]["kg_per_unit_sigma"]))
    return max(1.0, float(np.round(kg / kgpu)))


def generate_day(ctx: Ctx, i: int) -> pd.DataFrame:
    """All items lodged on day ``i``: declared columns, true values and the fraud truth."""
    cfg, k, ent = ctx.cfg, ctx.cfg.k, ctx.ent
    r = rng(cfg.seed, S_DAY, i)
    d = cfg.day(i)
    n = int(r.poisson(cfg.declarations_per_day * ctx.volume[i]))
    imp = ent.importers
    active = imp[(imp.first_day <= i) & (imp.last_day >= i)]
    if n == 0 or active.empty:
        return pd.DataFrame()
    started = (active.scheme != "").to_numpy() & (active.scheme_start.to_numpy() <= i)
    volume = np.where(started, np.maximum(active.activity, active.scheme_activity), active.activity)
    chosen = active.iloc[r.choice(len(active), size=n, p=volume / volume.sum())]
    ids = chosen.importer_id.to_numpy()
    offices = ctx.offices
    office = np.where(r.random(n) < k["entities"]["home_office_share"], chosen.home_office,
                      r.choice(offices.customs_office, n, p=offices.share))
    in_scheme = (chosen.scheme != "").to_numpy() & (chosen.scheme_start.to_numpy() <= i)
    prop = np.where(in_scheme, chosen.scheme_propensity, chosen.propensity)
    deterred = np.array([ctx.deterred_until.get(x, -1) > i for x in ids])
    prop = np.where(deterred & ~in_scheme, prop * k["adaptation"]["deterred_factor"], prop)
    # Suppliers: a scheme's hub only for the scheme's frauds; otherwise one of the importer's usual ones.
    supplier = np.empty(n, dtype=object)
    for j, sl in enumerate(chosen.suppliers):
        usual = [s for s in sl if ctx.sup_kind[s] != "hub"] or sl
        supplier[j] = usual[int(r.random() * len(usual))]
    ratio = np.where([ctx.complicit[b] for b in chosen.declarant_id], k["entities"]["complicit_declarant_odds"], 1.0)
    ratio = ratio * np.where([ctx.sup_shady[s] for s in supplier], k["entities"]["shady_supplier_odds"], 1.0)
    fraud_decl = r.random(n) < _odds(np.clip(prop, 0, 0.99), ratio)
    scheme = np.where(in_scheme & fraud_decl, chosen.scheme, "")
    moved = fraud_decl & (chosen.fraud_office != "").to_numpy()  # displaced offenders lodge frauds elsewhere
    office = np.where(moved, chosen.fraud_office, office)
    pref_origin = (chosen.preferred_mechanism == "origin").to_numpy()
    for j in np.flatnonzero(fraud_decl & pref_origin & (scheme == "")):  # origin fraud: through its front company
        fronts = [s for s in chosen.suppliers.iloc[j] if ctx.sup_kind[s] == "front"]
        supplier[j] = fronts[int(r.random() * len(fronts))] if fronts else supplier[j]
    for j in np.flatnonzero(scheme == "hub_transshipment"):  # the scheme ships through its hub
        hubs = [s for s in chosen.suppliers.iloc[j] if ctx.sup_kind[s] == "hub"]
        supplier[j] = hubs[int(r.random() * len(hubs))] if hubs else supplier[j]
    decl_ids = []
    for o in office:
        key = (o, d.year)
        ctx.seq[key] = ctx.seq.get(key, 0) + 1
        decl_ids.append(f"{o}-{d.year}-10-{ctx.seq[key]:06d}")

    # Items: goods from the importer's chapters (a scheme's frauds: from the scheme's chapters).
    n_items = 1 + r.poisson(k["volume"]["extra_items_mean"], n)
    rep = np.repeat(np.arange(n), n_items)
    m = len(rep)
    first = np.cumsum(n_items) - n_items
    fraud = fraud_decl[rep] & (r.random(m) < k["fraud"]["fraud_item_share"])
    fraud[(first + (r.random(n) * n_items).astype(int))[fraud_decl]] = True
    ch_lists = chosen.chapters.tolist()
    item_scheme = np.where(fraud, scheme[rep], "")
    true_hs = np.empty(m, dtype=object)
    for t in range(m):
        s = item_scheme[t]
        chs = ch_lists[rep[t]]
        if s:
            sch = ctx.schemes[s]
            if sch["kind"] == "new_hs_line":
                true_hs[t] = sch["misdeclared_from"][int(r.random() * len(sch["misdeclared_from"]))]
                continue
            chs = [c for c in chs if c in sch["chapters"]] or sch["chapters"]
        codes = ctx.hs_by_ch[chs[int(r.random() * len(chs))]]
        true_hs[t] = codes[int(r.random() * len(codes))]
    for s in ctx.schemes.values():  # a new HS line: honest goods that now belong to it move there
        if s["kind"] == "new_hs_line" and i >= ctx.starts[s["name"]]:
            move = (true_hs == s["honest_from"]) & (r.random(m) < s["honest_adoption"])
            true_hs[move] = s["hs_code"]

    sup_i = supplier[rep]
    kind_i = np.array([ctx.sup_kind[s] for s in sup_i])
    country_i = np.array([ctx.sup_country[s] for s in sup_i])
    origins = list(ORIGINS)
    op = np.array([ORIGINS[o][1] for o in origins])
    rand_origin = r.choice(origins, m, p=op / op.sum())
    made_elsewhere = (kind_i == "trader") | (kind_i == "hub") | (
        (kind_i == "manufacturer") & (r.random(m) < k["entities"]["manufacturer_other_origin"]))
    true_origin = np.where(made_elsewhere, rand_origin, country_i).astype(object)
    info = [ctx.hs_info[h] for h in true_hs]
    flag = np.array([h.flag for h in info])
    duty_true = np.array([h.duty_rate for h in info])
    restricted = np.isin(flag, RESTRICTED_FLAGS)

    # Mechanisms of ordinary frauds (schemes have their own).
    f = k["fraud"]
    mix = f["mechanism_mix"]
    pref = chosen.preferred_mechanism.to_numpy()[rep]
    base = np.where(r.random(m) < f["preferred_mechanism_share"], pref,
                    r.choice(list(mix), m, p=np.array(list(mix.values())) / sum(mix.values())))
    mech = np.where(fraud, base, "").astype(object)
    mech[fraud & (flag == "ipr") & (r.random(m) < f["counterfeit_share"])] = "counterfeit"
    mech[fraud & restricted] = "prohibited"
    for t in np.flatnonzero(fraud & (mech == "misclassification")):
        if not len(ctx.cheaper.get(true_hs[t], ())):
            mech[t] = "undervaluation"
    # Origin fraud goes through a front company in a preferential country (goods made in China, re-labelled);
    # without a front, or on duty-free goods, the offender undervalues instead.
    via_front = fraud & (mech == "origin") & (kind_i == "front") & (duty_true > 0)
    mech[fraud & (mech == "origin") & ~via_front] = "undervaluation"
    true_origin[via_front] = "CN"
    for s in ctx.schemes.values():
        sel = item_scheme == s["name"]
        mech[sel] = {"weight_gap": "quantity", "hub_transshipment": "origin", "new_hs_line": "misclassification"}[
            s["kind"]]
        if s["kind"] == "hub_transshipment":
            true_origin[sel] = s["true_origin"]

    # True values.
    pk = k["prices"]
    lvl = np.log(chosen.price_level.to_numpy()[rep] * np.array([ctx.sup_level[s] for s in sup_i]))
    log_price = ctx.prices.log_market(true_hs, true_origin, [d] * m) + lvl + ctx.prices.individual(r, m)
    kgpu = np.array([h.kg_per_unit for h in info]) * np.exp(r.normal(0, pk["kg_per_unit_sigma"], m))
    qty = np.maximum(1, np.round(np.exp(r.normal(np.log(np.maximum(1, 800 / kgpu)), pk["quantity_sigma"]))))
    true_kg = qty * kgpu
    true_fob = true_kg * np.exp(log_price)
    mode = np.array([ctx.mode[o] for o in office[rep]])
    true_freight = true_kg * np.array([FREIGHT_PER_KG[x] for x in mode]) * np.exp(r.normal(0, 0.3, m))
    true_cif = true_fob + true_freight + 0.01 * true_fob

    # Declared values: honest = true; frauds as their mechanism or scheme makes them.
    decl_hs, decl_origin = true_hs.copy(), true_origin.copy()
    decl_fob, decl_kg, decl_qty, decl_freight = true_fob.copy(), true_kg.copy(), qty.copy(), true_freight.copy()
    decl_origin[via_front] = country_i[via_front]
    permit = np.full(m, "", dtype=object)
    permit_status = np.where(restricted, "", "n/a").astype(object)
    for t in np.flatnonzero(restricted):
        args = (ids[rep[t]], true_hs[t], flag[t], i, r)
        permit[t], permit_status[t] = (ctx.permits.forged if mech[t] == "prohibited" else ctx.permits.legit)(*args)
    for t in np.flatnonzero(fraud):
        mm, s = mech[t], item_scheme[t]
        if s:
            sch = ctx.schemes[s]
            if sch["kind"] == "weight_gap":
                q = r.uniform(*sch["quantity_range"])
                decl_qty[t] = max(1, np.round(qty[t] * q))
                decl_fob[t] = true_fob[t] * (decl_qty[t] / qty[t]) * r.uniform(*sch["unit_price_markup"])
            elif sch["kind"] == "hub_transshipment":
                decl_origin[t] = sch["declared_origins"][int(r.random() * len(sch["declared_origins"]))]
                decl_fob[t] = true_fob[t] * ORIGINS[decl_origin[t]][0] / ORIGINS[true_origin[t]][0]
            else:
                decl_hs[t] = sch["hs_code"]
                decl_qty[t] = _units_as(ctx, decl_hs[t], true_kg[t], r)
        elif mm == "misclassification":
            c = ctx.cheaper[true_hs[t]]
            decl_hs[t] = c[int(r.random() * len(c))]
            decl_qty[t] = _units_as(ctx, decl_hs[t], true_kg[t], r)
        elif mm == "undervaluation":
            decl_fob[t] = true_fob[t] * r.uniform(*f["undervaluation_range"])
        elif mm == "counterfeit":
            decl_fob[t] = true_fob[t] * r.uniform(*f["counterfeit_value_range"])
        elif mm == "quantity":
            q = r.uniform(*f["quantity_range"])
            decl_qty[t] = max(1, np.round(qty[t] * q))
            decl_kg[t], decl_fob[t], decl_freight[t] = true_kg[t] * q, true_fob[t] * q, true_freight[t] * q

    decl_duty = np.array([ctx.hs_info[h].duty_rate for h in decl_hs])
    decl_duty = np.where(np.isin(decl_origin, PREFERENTIAL_ORIGINS), 0.0, decl_duty)
    true_duty = np.where(np.isin(true_origin, PREFERENTIAL_ORIGINS), 0.0, duty_true)
    decl_ins = 0.01 * decl_fob
    decl_cif = decl_fob + decl_freight + decl_ins
    fine = np.where(np.isin(mech, ["prohibited", "counterfeit"]), 0.5 * true_cif, 0.0)
    stake = np.where(fraud, np.maximum(0, taxes(true_cif, true_duty) - taxes(decl_cif, decl_duty)) + fine, 0.0)
    currency = np.array([currency_of(c) for c in country_i])
    fx = np.where(currency == "EUR", EUR_PER_USD, 1.0)
    item_no = np.arange(m) - np.repeat(first, n_items) + 1
    return pd.DataFrame({
        "declaration_id": np.array(decl_ids)[rep], "item_no": item_no, "declaration_date": d,
        "customs_office": office[rep], "importer_id": ids[rep], "declarant_id": chosen.declarant_id.to_numpy()[rep],
        "supplier_id": sup_i, "supplier_country": country_i, "transport_mode": mode,
        "hs_code": decl_hs, "origin_country": decl_origin, "quantity": decl_qty.astype(int),
        "net_weight_kg": decl_kg.round(3), "invoice_currency": currency, "fob_invoice": (decl_fob * fx).round(2),
        "fob_usd": decl_fob.round(2), "freight_usd": decl_freight.round(2), "insurance_usd": decl_ins.round(2),
        "cif_usd": (decl_fob.round(2) + decl_freight.round(2) + decl_ins.round(2)).round(2),
        "duty_rate": decl_duty, "permit_no": permit,
        # truth
        "is_fraud": fraud, "mechanism": np.where(fraud, mech, ""), "scheme": item_scheme,
        "revenue_at_stake_usd": stake.round(2), "true_hs_code": true_hs, "true_origin": true_origin,
        "true_fob_usd": true_fob.round(2), "true_quantity": qty.astype(int), "true_net_weight_kg": true_kg.round(3),
        "restricted": restricted, "permit_status": permit_status,
    })
