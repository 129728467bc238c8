"""Synthetic customs world: persistent entities, fraud mechanisms, drift, tax returns, legacy history.

The generator writes two things that must never be mixed:

* landing extracts (what source systems would drop): ``<lake>/landing/<source>/<source>__<date>[__tag].csv``
* the ground truth (``<lake>/world_truth``), read only by the inspection simulator and evaluation code.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by (seed, purpose, day), so the
same seed and options give the same files byte for byte.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_sim.io import atomic_write_bytes, write_parquet_atomic

log = logging.getLogger(__name__)

# --- Catalogue -----------------------------------------------------------------------------------
# HS10 code, description, duty ad valorem, base unit price USD/kg, kg per unit, flags.
# Chapters hold codes with different duties so misclassification into a cheaper code is possible.
HS_CATALOGUE = [
    ("6109100000", "T-shirts of cotton, knitted", 0.11, 22.0, 0.2, ""),
    ("6110200000", "Sweaters of cotton, knitted", 0.11, 26.0, 0.45, ""),
    ("6117809000", "Knitted clothing accessories", 0.06, 18.0, 0.1, ""),
    ("6403990000", "Footwear, leather uppers", 0.11, 40.0, 0.9, "ipr"),
    ("6402990000", "Footwear, rubber or plastics", 0.06, 14.0, 0.7, ""),
    ("6406100000", "Uppers and parts of footwear", 0.04, 9.0, 0.3, ""),
    ("8471300000", "Portable computers", 0.0, 160.0, 2.0, ""),
    ("8473300000", "Parts of computers", 0.0, 90.0, 0.5, ""),
    ("8418109000", "Refrigerators", 0.06, 6.0, 60.0, ""),
    ("8450110000", "Washing machines", 0.06, 5.5, 55.0, ""),
    ("8415101000", "Air conditioners", 0.06, 8.0, 35.0, ""),
    ("8517130000", "Smartphones", 0.0, 420.0, 0.25, "ipr"),
    ("8528720000", "Television receivers", 0.06, 22.0, 12.0, ""),
    ("8516500000", "Microwave ovens", 0.06, 7.0, 14.0, ""),
    ("8544429000", "Electric conductors", 0.04, 6.5, 5.0, ""),
    ("8507600000", "Lithium-ion batteries", 0.04, 30.0, 0.5, ""),
    ("8708299000", "Parts of motor vehicle bodies", 0.04, 7.0, 8.0, ""),
    ("8711200000", "Motorcycles 50-250 cc", 0.11, 8.0, 110.0, ""),
    ("8714109000", "Parts of motorcycles", 0.04, 9.0, 2.0, ""),
    ("3923210000", "Sacks and bags of polyethylene", 0.06, 2.8, 0.05, ""),
    ("3901100000", "Polyethylene in primary forms", 0.0, 1.3, 25.0, ""),
    ("3915900000", "Waste and scrap of plastics", 0.0, 0.35, 1000.0, "waste"),
    ("2914110000", "Acetone", 0.0, 1.1, 200.0, "precursor"),
    ("2902300000", "Toluene", 0.0, 1.0, 200.0, "precursor"),
    ("2905120000", "Propan-1-ol and propan-2-ol", 0.0, 1.5, 200.0, ""),
    ("0106190000", "Live mammals, other", 0.0, 250.0, 5.0, "cites"),
    ("0106200000", "Live reptiles", 0.0, 180.0, 1.0, "cites"),
    ("4103300000", "Raw hides and skins of reptiles", 0.0, 120.0, 1.0, "cites"),
    ("3304990000", "Beauty or make-up preparations", 0.06, 28.0, 0.2, "ipr"),
    ("3303000000", "Perfumes and toilet waters", 0.06, 45.0, 0.3, "ipr"),
    ("9503009900", "Toys, other", 0.11, 9.0, 0.5, "ipr"),
    ("9503002200", "Toy parts and accessories", 0.04, 7.0, 0.2, ""),
    ("2208300000", "Whiskies", 0.11, 14.0, 1.2, "ipr"),
    ("2204210000", "Wine in containers of 2 l or less", 0.11, 6.0, 1.2, ""),
    ("4011100000", "Tyres for motor cars", 0.06, 4.5, 9.0, ""),
    ("4011200000", "Tyres for buses or lorries", 0.04, 4.0, 45.0, ""),
    ("7208510000", "Flat-rolled iron, > 10 mm", 0.0, 0.7, 1000.0, ""),
    ("7210490000", "Flat-rolled iron, zinc coated", 0.04, 0.95, 1000.0, ""),
]

ORIGINS = {  # price multiplier, import share
    "CN": (0.80, 0.38), "US": (1.20, 0.12), "BR": (0.95, 0.05), "CO": (0.95, 0.04),
    "CL": (1.00, 0.04), "MX": (0.95, 0.04), "DE": (1.30, 0.05), "IN": (0.80, 0.05),
    "KR": (1.10, 0.05), "JP": (1.30, 0.04), "EC": (0.90, 0.03), "AR": (0.95, 0.03),
    "VN": (0.75, 0.03), "TH": (0.85, 0.02), "IT": (1.25, 0.03), "ES": (1.10, 0.02),
    "BO": (0.90, 0.01), "FR": (1.25, 0.02),
}
# Origins with a 0% preferential duty (Andean Community): the target of origin misdeclaration.
PREFERENTIAL_ORIGINS = ("CO", "EC", "BO")
CURRENCIES = {"US": "USD", "CN": "USD", "DE": "EUR", "IT": "EUR", "ES": "EUR", "FR": "EUR"}
EUR_PER_USD = 0.92

OFFICES = {  # SUNAT office code: (name, share of declarations, transport mode)
    "118": ("Maritima del Callao", 0.55, "SEA"),
    "235": ("Aerea y Postal", 0.20, "AIR"),
    "172": ("Tacna", 0.10, "ROAD"),
    "046": ("Paita", 0.08, "SEA"),
    "019": ("Tumbes", 0.07, "ROAD"),
}

IGV_RATE = 0.16
IPM_RATE = 0.02
MECHANISMS = ("undervaluation", "misclassification", "origin", "quantity", "prohibited", "counterfeit")
# Physical exams (RED) find most frauds; documentary checks (YELLOW) miss what only eyes can see.
DETECTION = {
    "RED": dict.fromkeys(MECHANISMS, 0.92),
    "YELLOW": {"undervaluation": 0.6, "misclassification": 0.5, "origin": 0.65, "quantity": 0.25,
               "prohibited": 0.45, "counterfeit": 0.3},
}
SOURCES = ("customs", "tax", "enforcement", "reference_prices", "exchange_rates")


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 42
    start_date: date = date(2026, 1, 1)
    history_days: int = 180
    live_days: int = 14
    declarations_per_day: int = 300
    legacy_random_share: float = 0.03
    min_delay_days: int = 1
    max_delay_days: int = 5
    drift_day: int | None = None  # index of the day the new scheme starts; default: 3rd live day

    @property
    def total_days(self) -> int:
        return self.history_days + self.live_days

    @property
    def first_live_date(self) -> date:
        return self.start_date + timedelta(days=self.history_days)

    @property
    def live_dates(self) -> list[date]:
        return [self.first_live_date + timedelta(days=i) for i in range(self.live_days)]

    @property
    def drift_index(self) -> int:
        return self.history_days + 2 if self.drift_day is None else self.drift_day

    def to_json(self) -> dict:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["first_live_date"] = self.first_live_date.isoformat()
        d["drift_date"] = (self.start_date + timedelta(days=self.drift_index)).isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict) -> WorldConfig:
        keys = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in keys}
        kw["start_date"] = date.fromisoformat(kw["start_date"])
        return cls(**kw)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


@dataclass
class Entities:
    importers: pd.DataFrame
    declarants: pd.DataFrame
    suppliers: pd.DataFrame
    hs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        HS_CATALOGUE, columns=["hs_code", "description", "duty_rate", "base_price", "kg_per_unit", "flag"]))


def make_entities(cfg: WorldConfig) -> Entities:
    rng = _rng(cfg.seed, 1)
    n_imp = max(60, int(cfg.declarations_per_day * 2.5))
    n_brk = max(12, n_imp // 15)
    n_sup = max(40, n_imp // 2)
    hs = Entities(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()).hs
    chapters = sorted(hs.hs_code.str[:2].unique())
    # Restricted-goods chapters (wildlife, hides, precursors) are traded by few importers.
    ch_p = np.array([0.15 if c in ("01", "41", "29") else 1.0 for c in chapters])
    ch_p /= ch_p.sum()

    # Brokers: a few are complicit and raise the fraud odds of what they lodge.
    brk = pd.DataFrame({
        "declarant_id": [f"B{i:04d}" for i in range(n_brk)],
        "complicit": rng.random(n_brk) < 0.1,
        "ring": False,
    })
    # Suppliers live in one origin country.
    origin_codes = list(ORIGINS)
    origin_p = np.array([ORIGINS[o][1] for o in origin_codes])
    sup = pd.DataFrame({
        "supplier_id": [f"S{i:05d}" for i in range(n_sup)],
        "supplier_country": rng.choice(origin_codes, size=n_sup, p=origin_p / origin_p.sum()),
        "shady": rng.random(n_sup) < 0.08,
    })
    # Importers: latent propensity from a mixture (most honest, some occasional, a few habitual).
    kind = rng.choice(3, size=n_imp, p=[0.75, 0.20, 0.05])
    prop = np.where(kind == 0, rng.beta(1, 60, n_imp), np.where(kind == 1, rng.beta(2, 16, n_imp),
                                                                rng.beta(6, 5, n_imp)))
    office_codes = list(OFFICES)
    office_p = np.array([OFFICES[o][1] for o in office_codes])
    ruc = 20_100_000_000 + rng.choice(899_999_999, size=n_imp, replace=False)
    imp = pd.DataFrame({
        "importer_id": ruc.astype(str),
        "propensity": prop,
        "habitual": kind == 2,
        "activity": rng.pareto(1.3, n_imp) + 0.2,
        "home_office": rng.choice(office_codes, size=n_imp, p=office_p),
        "declarant_id": rng.choice(brk.declarant_id[: n_brk], size=n_imp),
        "chapters": [list(rng.choice(chapters, size=rng.integers(1, 4), replace=False, p=ch_p)) for _ in range(n_imp)],
        "suppliers": [list(rng.choice(sup.supplier_id, size=rng.integers(1, 5), replace=False))
                      for _ in range(n_imp)],
        "preferred_mechanism": rng.choice(["undervaluation", "misclassification", "origin", "quantity"],
                                          size=n_imp, p=[0.45, 0.25, 0.15, 0.15]),
        # 20% of importers start trading during the simulated period.
        "first_day": np.where(rng.random(n_imp) < 0.2, rng.integers(0, cfg.total_days, n_imp), -1),
        "ring": False,
    })
    # Drift: a broker ring with new importers routing electronics through VN/TH appears at drift_index.
    n_ring = max(6, n_imp // 30)
    ring_brk = pd.DataFrame({"declarant_id": [f"B9{i:03d}" for i in range(3)], "complicit": True, "ring": True})
    ring_sup = pd.DataFrame({"supplier_id": [f"S9{i:04d}" for i in range(8)],
                             "supplier_country": ["VN", "TH"] * 4, "shady": True})
    ring_ruc = 20_600_000_000 + rng.choice(99_999_999, size=n_ring, replace=False)
    ring_imp = pd.DataFrame({
        "importer_id": ring_ruc.astype(str),
        "propensity": rng.beta(8, 4, n_ring),
        "habitual": False,
        "activity": rng.pareto(1.3, n_ring) + 1.0,
        "home_office": rng.choice(["118", "235"], size=n_ring),
        "declarant_id": rng.choice(ring_brk.declarant_id, size=n_ring),
        "chapters": [["85", "84"] for _ in range(n_ring)],
        "suppliers": [list(rng.choice(ring_sup.supplier_id, size=3, replace=False)) for _ in range(n_ring)],
        "preferred_mechanism": "undervaluation",
        "first_day": cfg.drift_index,
        "ring": True,
    })
    return Entities(
        importers=pd.concat([imp, ring_imp], ignore_index=True),
        declarants=pd.concat([brk, ring_brk], ignore_index=True),
        suppliers=pd.concat([sup, ring_sup], ignore_index=True),
    )


def reference_prices(ent: Entities) -> pd.DataFrame:
    rows = [(h.hs_code, o, round(h.base_price * m, 4))
            for h in ent.hs.itertuples() for o, (m, _) in ORIGINS.items()]
    return pd.DataFrame(rows, columns=["hs_code", "origin_country", "ref_unit_price_usd_kg"])


def _taxes(cif: np.ndarray, duty_rate: np.ndarray) -> np.ndarray:
    duty = cif * duty_rate
    return duty + (cif + duty) * (IGV_RATE + IPM_RATE)


def generate_day(cfg: WorldConfig, ent: Entities, day_index: int) -> pd.DataFrame:
    """All items lodged on one day, with their true and declared values (the truth frame)."""
    rng = _rng(cfg.seed, 2, day_index)
    d = cfg.start_date + timedelta(days=day_index)
    dow_factor = (1, 1, 1, 1, 1, 0.5, 0.2)[d.weekday()]
    n = int(rng.poisson(cfg.declarations_per_day * dow_factor))
    imp = ent.importers
    active = imp[(imp.first_day <= day_index)]
    weights = active.activity.to_numpy() / active.activity.sum()
    chosen = active.iloc[rng.choice(len(active), size=n, p=weights)].reset_index(drop=True)
    if n == 0:
        return pd.DataFrame()
    brk = ent.declarants.set_index("declarant_id")
    sup = ent.suppliers.set_index("supplier_id")
    hs = ent.hs
    hs_by_ch = {ch: g.hs_code.to_numpy() for ch, g in hs.groupby(hs.hs_code.str[:2])}

    # Declaration-level draws.
    office = np.where(rng.random(n) < 0.85, chosen.home_office, rng.choice(list(OFFICES), size=n))
    complicit = brk.loc[chosen.declarant_id, "complicit"].to_numpy()
    p_fraud = 1 - (1 - chosen.propensity.to_numpy()) * (1 - 0.08 * complicit)
    is_fraud_decl = rng.random(n) < p_fraud
    n_items = 1 + rng.poisson(1.8, n)
    sup_lists = chosen.suppliers.tolist()
    supplier = np.array([s[k] for s, k in zip(sup_lists, (rng.random(n) * [len(s) for s in sup_lists]).astype(int),
                                                strict=True)])
    decl_ids = np.array([f"{o}-{d.year}-10-{day_index * 100_000 + i:07d}" for i, o in enumerate(office)])

    # Item-level: repeat the declaration's draws, then pick goods from the importer's chapters.
    rep = np.repeat(np.arange(n), n_items)
    m = len(rep)
    item_no = np.arange(m) - np.repeat(np.cumsum(n_items) - n_items, n_items) + 1
    ch_lists = chosen.chapters.tolist()
    u1, u2 = rng.random(m), rng.random(m)
    chapter = [ch_lists[r][int(a * len(ch_lists[r]))] for r, a in zip(rep, u1, strict=True)]
    true_hs = np.array([hs_by_ch[c][int(b * len(hs_by_ch[c]))] for c, b in zip(chapter, u2, strict=True)])
    # Within a fraudulent declaration 60% of items are fraudulent, at least one.
    fraud_items = is_fraud_decl[rep] & (rng.random(m) < 0.6)
    first_of_decl = np.cumsum(n_items) - n_items
    forced = first_of_decl + (rng.random(n) * n_items).astype(int)
    fraud_items[forced[is_fraud_decl]] = True
    df = pd.DataFrame({
        "declaration_id": decl_ids[rep], "item_no": item_no, "declaration_date": d,
        "customs_office": office[rep], "importer_id": chosen.importer_id.to_numpy()[rep],
        "declarant_id": chosen.declarant_id.to_numpy()[rep], "supplier_id": supplier[rep],
        "supplier_country": sup.loc[supplier, "supplier_country"].to_numpy()[rep],
        "true_hs_code": true_hs, "is_fraud": fraud_items,
        "preferred_mechanism": chosen.preferred_mechanism.to_numpy()[rep],
    })
    m = len(df)
    hs_idx = hs.set_index("hs_code")
    true = hs_idx.loc[df.true_hs_code]

    mult = np.array([ORIGINS[o][0] for o in df.supplier_country])
    true_unit_price = true.base_price.to_numpy() * mult * rng.lognormal(0, 0.22, m)
    kg_per_unit = true.kg_per_unit.to_numpy()
    qty = np.maximum(1, np.round(rng.lognormal(np.log(np.maximum(1, 800 / kg_per_unit)), 0.9, m)))
    true_kg = qty * kg_per_unit * rng.lognormal(0, 0.05, m)
    true_fob = true_kg * true_unit_price
    freight_share = np.where(df.customs_office.map(lambda o: OFFICES[o][2]) == "AIR", 0.09, 0.05)
    true_freight = true_fob * freight_share * rng.lognormal(0, 0.2, m)
    insurance = true_fob * 0.01
    flag = true.flag.to_numpy()
    restricted = np.isin(flag, ["cites", "waste", "precursor"])

    # Permits: legit restricted goods carry one (2% paperwork slips); fraud lacks it or fakes it.
    permit = np.where(restricted, np.where(rng.random(m) < 0.98, "P", ""), "")
    mech = np.full(m, "", dtype=object)
    fr = df.is_fraud.to_numpy()
    pref = df.preferred_mechanism.to_numpy()
    rand_mech = rng.choice(["undervaluation", "misclassification", "origin", "quantity"], size=m,
                           p=[0.45, 0.25, 0.15, 0.15])
    base_mech = np.where(rng.random(m) < 0.7, pref, rand_mech)
    mech = np.where(fr, base_mech, mech)
    mech = np.where(fr & restricted, "prohibited", mech)
    mech = np.where(fr & (flag == "ipr") & (rng.random(m) < 0.5), "counterfeit", mech)

    true_duty_rate = true.duty_rate.to_numpy()
    duty_of = hs.set_index("hs_code").duty_rate.to_dict()
    cheaper_codes = {c: hs_by_ch[c[:2]][[duty_of[x] < duty_of[c] for x in hs_by_ch[c[:2]]]] for c in hs.hs_code}
    decl_hs = df.true_hs_code.to_numpy().copy()
    decl_origin = df.supplier_country.to_numpy().copy()
    decl_fob = true_fob.copy()
    decl_kg = true_kg.copy()
    decl_qty = qty.copy()
    for r in np.flatnonzero(fr):
        mm = mech[r]
        if mm == "misclassification":
            cheaper = cheaper_codes[decl_hs[r]]
            if len(cheaper):
                decl_hs[r] = cheaper[rng.integers(len(cheaper))]
            else:
                mm = "undervaluation"
        if mm == "origin":
            if true_duty_rate[r] > 0 and decl_origin[r] not in PREFERENTIAL_ORIGINS:
                decl_origin[r] = rng.choice(PREFERENTIAL_ORIGINS)
            else:
                mm = "undervaluation"
        if mm == "undervaluation" or mm == "counterfeit":
            decl_fob[r] = true_fob[r] * rng.uniform(0.25, 0.65)
        if mm == "quantity":
            f = rng.uniform(0.4, 0.75)
            decl_qty[r] = max(1, np.round(qty[r] * f))
            decl_kg[r] = true_kg[r] * f
            decl_fob[r] = true_fob[r] * f
        if mm == "prohibited":
            permit[r] = "" if rng.random() < 0.5 else "F"  # missing, or a forged number
        mech[r] = mm
    mech = np.where(fr, mech, "")

    # Drift ring: heavy undervaluation on electronics, origin stays true (a new route).
    ring_imp = set(ent.importers.importer_id[ent.importers.ring])
    ring = df.importer_id.isin(ring_imp).to_numpy() & fr
    decl_fob = np.where(ring, true_fob * rng.uniform(0.2, 0.4, m), decl_fob)
    mech = np.where(ring, "undervaluation", mech)

    decl_freight = true_freight * (decl_fob / true_fob)
    decl_ins = decl_fob * 0.01
    decl_cif = decl_fob + decl_freight + decl_ins
    true_cif = true_fob + true_freight + insurance
    decl_duty = hs_idx.loc[decl_hs].duty_rate.to_numpy()
    decl_duty = np.where(np.isin(decl_origin, PREFERENTIAL_ORIGINS), 0.0, decl_duty)
    true_duty = np.where(np.isin(df.supplier_country, PREFERENTIAL_ORIGINS), 0.0, true.duty_rate.to_numpy())
    evaded = np.maximum(0, _taxes(true_cif, true_duty) - _taxes(decl_cif, decl_duty))
    fine = np.where(np.isin(mech, ["prohibited", "counterfeit"]), 0.5 * true_cif, 0.0)
    revenue = np.where(fr, evaded + fine, 0.0)

    permit_no = np.array([("" if p == "" else f"{'PX' if p == 'F' else 'PM'}-{d.year}-{rng.integers(10**6):06d}")
                          for p in permit])
    currency = np.array([CURRENCIES.get(o, "USD") for o in df.supplier_country])
    fx = np.where(currency == "EUR", EUR_PER_USD, 1.0)
    df = df.assign(
        hs_code=decl_hs, origin_country=decl_origin, quantity=decl_qty.astype(int), net_weight_kg=decl_kg.round(3),
        invoice_currency=currency, fob_invoice=(decl_fob * fx).round(2), fob_usd=decl_fob.round(2),
        freight_usd=decl_freight.round(2), insurance_usd=decl_ins.round(2), cif_usd=decl_cif.round(2),
        duty_rate=decl_duty, permit_no=permit_no, transport_mode=df.customs_office.map(lambda o: OFFICES[o][2]),
        mechanism=mech, revenue_at_stake_usd=revenue.round(2), true_fob_usd=true_fob.round(2),
        true_origin=df.supplier_country, restricted=restricted,
    )
    df["is_fraud"] = df.mechanism != ""
    return df


CUSTOMS_COLUMNS = [
    "declaration_id", "item_no", "declaration_date", "customs_office", "importer_id", "declarant_id",
    "supplier_id", "supplier_country", "transport_mode", "hs_code", "origin_country", "quantity",
    "net_weight_kg", "invoice_currency", "fob_invoice", "fob_usd", "freight_usd", "insurance_usd", "cif_usd",
    "duty_rate", "permit_no",
]
TRUTH_COLUMNS = ["declaration_id", "item_no", "declaration_date", "importer_id", "is_fraud", "mechanism",
                 "revenue_at_stake_usd", "true_hs_code", "true_origin", "true_fob_usd"]


def legacy_channels(items: pd.DataFrame, ent: Entities, cfg: WorldConfig, day_index: int) -> pd.Series:
    """The legacy policy that produced the history: a few fixed rules plus a small random share."""
    rng = _rng(cfg.seed, 3, day_index)
    ref = reference_prices(ent).set_index(["hs_code", "origin_country"]).ref_unit_price_usd_kg
    ref_v = ref.reindex(pd.MultiIndex.from_arrays([items.hs_code, items.origin_country])).to_numpy()
    low_value = (items.fob_usd / items.net_weight_kg).to_numpy() < 0.5 * ref_v
    restricted_no_permit = items.restricted.to_numpy() & (items.permit_no == "").to_numpy()
    known = set(ent.importers.importer_id[ent.importers.habitual & (ent.importers.propensity > 0.55)])
    watch = items.importer_id.isin(known).to_numpy()
    per_decl = pd.DataFrame({"d": items.declaration_id, "red": restricted_no_permit | (low_value & watch),
                             "yellow": low_value | watch}).groupby("d", sort=False).any()
    rnd = rng.random(len(per_decl))
    chan = np.where(per_decl.red, "RED", np.where(per_decl.yellow & (rnd < 0.6), "YELLOW", "GREEN"))
    rnd2 = rng.random(len(per_decl))
    chan = np.where((chan == "GREEN") & (rnd2 < cfg.legacy_random_share),
                    np.where(rng.random(len(per_decl)) < 0.5, "RED", "YELLOW"), chan)
    return pd.Series(chan, index=per_decl.index).reindex(items.declaration_id).to_numpy()


def inspect_items(items: pd.DataFrame, channel: np.ndarray, cfg: WorldConfig, inspection_date: date,
                  stream: int) -> pd.DataFrame:
    """Officers inspect RED and YELLOW items; returns enforcement records with a reporting delay."""
    rng = _rng(cfg.seed, stream, (inspection_date - cfg.start_date).days)
    sel = np.isin(channel, ["RED", "YELLOW"])
    it = items.loc[sel].reset_index(drop=True)
    ch = channel[sel]
    if not len(it):
        return pd.DataFrame(columns=ENFORCEMENT_COLUMNS)
    p = np.array([DETECTION[c].get(m, 0.0) if m else 0.0 for c, m in zip(ch, it.mechanism, strict=True)])
    found = it.is_fraud.to_numpy() & (rng.random(len(it)) < p)
    # One delay per declaration: results of one inspection come back together.
    decl = it.declaration_id.unique()
    delay = pd.Series(rng.integers(cfg.min_delay_days, cfg.max_delay_days + 1, len(decl)), index=decl)
    reported = [inspection_date + timedelta(days=int(x)) for x in delay.reindex(it.declaration_id)]
    recovered = np.where(found, it.revenue_at_stake_usd, 0.0).round(2)
    return pd.DataFrame({
        "record_id": [f"E{(inspection_date - cfg.start_date).days:05d}-{stream}-{i:06d}" for i in range(len(it))],
        "declaration_id": it.declaration_id, "item_no": it.item_no,
        "inspection_date": inspection_date, "channel": ch,
        "result": np.where(found, "FRAUD", "CLEAN"),
        "offence_code": np.where(found, it.mechanism, ""),
        "revenue_recovered_usd": recovered,
        "penalty_usd": (recovered * 0.5).round(2),
        "reported_date": reported,
        "officer_id": [f"OF{x:03d}" for x in rng.integers(0, 120, len(it))],
    })


ENFORCEMENT_COLUMNS = ["record_id", "declaration_id", "item_no", "inspection_date", "channel", "result",
                       "offence_code", "revenue_recovered_usd", "penalty_usd", "reported_date", "officer_id"]


def tax_returns(cfg: WorldConfig, ent: Entities, truth: pd.DataFrame) -> pd.DataFrame:
    """Monthly returns per importer; evaders under-declare purchases and their IGV credit drifts."""
    rng = _rng(cfg.seed, 4)
    t = truth.assign(period=pd.to_datetime(truth.declaration_date).dt.to_period("M").astype(str))
    t["true_cif_pen"] = t.true_fob_usd * 1.06 * 3.75
    monthly = t.groupby(["importer_id", "period"], as_index=False).true_cif_pen.sum()
    imp = ent.importers.set_index("importer_id")
    prop = imp.propensity.reindex(monthly.importer_id).to_numpy()
    n = len(monthly)
    domestic = monthly.true_cif_pen * rng.uniform(0.2, 1.0, n)
    purchases = monthly.true_cif_pen + domestic
    evasion = np.where(prop > 0.2, prop * rng.uniform(0.3, 0.8, n), np.abs(rng.normal(0, 0.03, n)))
    declared_purchases = purchases * (1 - evasion)
    sales = purchases * rng.uniform(1.1, 1.5, n) * (1 - 0.8 * evasion)
    period_end = pd.PeriodIndex(monthly.period, freq="M").end_time.normalize()
    return pd.DataFrame({
        "taxpayer_id": monthly.importer_id,
        "period": monthly.period,
        "filing_date": (period_end + pd.Timedelta(days=12)).date,
        "sales_pen": sales.round(2),
        "purchases_pen": declared_purchases.round(2),
        "igv_debit_pen": (sales * IGV_RATE).round(2),
        "igv_credit_pen": (declared_purchases * IGV_RATE * rng.uniform(0.95, 1.05, n)).round(2),
    })


def exchange_rates(cfg: WorldConfig) -> pd.DataFrame:
    rng = _rng(cfg.seed, 5)
    n = cfg.total_days + 1
    pen = 3.75 + np.cumsum(rng.normal(0, 0.006, n))
    dates = [cfg.start_date + timedelta(days=i) for i in range(n)]
    return pd.DataFrame({"rate_date": dates, "currency": "USD", "pen_per_unit": pen.round(4)})


def landing_name(source: str, d: date, tag: str = "") -> str:
    return f"{source}__{d.isoformat()}{'__' + tag if tag else ''}.csv"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def generate(cfg: WorldConfig, lake: Path) -> dict:
    """Generate the whole world; returns a summary of what was written."""
    landing = lake / "landing"
    tdir = truth_dir(lake)
    ent = make_entities(cfg)
    hist_end = cfg.first_live_date - timedelta(days=1)
    days = []
    enforcement = []
    for i in range(cfg.total_days):
        items = generate_day(cfg, ent, i)
        if items.empty:
            continue
        days.append(items)
        if i < cfg.history_days:
            ch = legacy_channels(items, ent, cfg, i)
            enforcement.append(inspect_items(items, ch, cfg, cfg.start_date + timedelta(days=i), stream=6))
        if (i + 1) % 30 == 0:
            log.info("world: generated %d/%d days", i + 1, cfg.total_days)
    allitems = pd.concat(days, ignore_index=True)
    hist = allitems[allitems.declaration_date <= hist_end]
    live = allitems[allitems.declaration_date > hist_end]

    # Customs: one bulk history extract, then one file per live day (landed as each day comes).
    _write_csv(hist[CUSTOMS_COLUMNS], landing / "customs" / landing_name("customs", hist_end, "history"))
    for d, g in live.groupby("declaration_date"):
        _write_csv(g[CUSTOMS_COLUMNS], landing / "customs" / landing_name("customs", d))
    # Legacy enforcement: what was reported by the end of history in bulk, later reports per day.
    enf = pd.concat(enforcement, ignore_index=True)
    _write_csv(enf[enf.reported_date <= hist_end], landing / "enforcement" /
               landing_name("enforcement", hist_end, "history"))
    for d, g in enf[enf.reported_date > hist_end].groupby("reported_date"):
        _write_csv(g, landing / "enforcement" / landing_name("enforcement", d, "legacy"))
    # Tax returns: filed monthly; each filing date's returns are one extract.
    tax = tax_returns(cfg, ent, allitems)
    tax_hist = tax[tax.filing_date <= hist_end]
    _write_csv(tax_hist, landing / "tax" / landing_name("tax", hist_end, "history"))
    for d, g in tax[(tax.filing_date > hist_end) & (tax.filing_date <= cfg.live_dates[-1])].groupby("filing_date"):
        _write_csv(g, landing / "tax" / landing_name("tax", d))
    fx = exchange_rates(cfg)
    _write_csv(fx[fx.rate_date <= hist_end], landing / "exchange_rates" /
               landing_name("exchange_rates", hist_end, "history"))
    for d in cfg.live_dates:
        _write_csv(fx[fx.rate_date == d], landing / "exchange_rates" / landing_name("exchange_rates", d))
    _write_csv(reference_prices(ent), landing / "reference_prices" /
               landing_name("reference_prices", hist_end, "history"))

    # Ground truth, apart from everything the pipeline reads.
    write_parquet_atomic(allitems[TRUTH_COLUMNS + ["restricted"]].reset_index(drop=True),
                         tdir / "items.parquet")
    ent_out = ent.importers.drop(columns=["chapters", "suppliers"])
    write_parquet_atomic(ent_out, tdir / "importers.parquet")
    atomic_write_bytes(tdir / "world.json", json.dumps(cfg.to_json(), indent=2).encode())
    summary = {
        "items": len(allitems), "declarations": int(allitems.declaration_id.nunique()),
        "history_items": len(hist), "live_items": len(live),
        "fraud_rate_items": round(float(allitems.is_fraud.mean()), 4),
        "legacy_inspected_items": len(enf), "legacy_frauds_found": int((enf.result == "FRAUD").sum()),
        "importers": len(ent.importers), "first_live_date": cfg.first_live_date.isoformat(),
        "drift_date": cfg.to_json()["drift_date"],
    }
    log.info("world: %s", summary)
    return summary


def truth_dir(lake: Path) -> Path:
    """Ground truth of the world: read only by the simulator and evaluation, never by the pipeline."""
    return Path(lake) / "world_truth"


def load_world_config(lake: Path) -> WorldConfig:
    return WorldConfig.from_json(json.loads((truth_dir(lake) / "world.json").read_text()))
