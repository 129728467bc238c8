"""The world's actors: importers, customs brokers (declarants), foreign suppliers, officers, scheme actors.

Importers have a latent fraud propensity from a mixture (most honest, some occasional, a few habitual),
a trading volume, a usual office and broker, the chapters they trade and their suppliers. Suppliers are
manufacturers (goods of their own country), trading houses in hubs (goods made elsewhere: the ordinary
reason why origin differs from the seller's country), or front companies in preferential-origin
countries. New schemes recruit established importers with a clean record and bring in new ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sunat_sim.catalogue import ORIGINS, REVENUE_MECHANISMS, hs_frame
from sunat_sim.config import S_ENTITIES, S_SCHEMES, WorldConfig, rng

RUC_BASE = 20_100_000_000  # companies' tax ids (RUC): 20 + 9 digits, one range for all (no tell in the id)


@dataclass
class Entities:
    importers: pd.DataFrame
    declarants: pd.DataFrame
    suppliers: pd.DataFrame
    officers: pd.DataFrame
    hs: pd.DataFrame
    taken: set = field(default_factory=set)  # tax ids in use (a phoenix gets a fresh one)


def new_lines(cfg: WorldConfig) -> list[tuple]:
    """HS lines created during the simulation by a scheme's tariff amendment."""
    return [(s["hs_code"], s["description"], s["duty_rate"], 18.0, 0.1, "new")
            for s in cfg.k["schemes"] if s["kind"] == "new_hs_line"]


def office_table(cfg: WorldConfig) -> pd.DataFrame:
    o = cfg.k["offices"]
    df = pd.DataFrame([(c, v[0], float(v[1]), v[2]) for c, v in o.items()],
                      columns=["customs_office", "name", "share", "transport_mode"])
    df["share"] /= df.share.sum()
    return df


def new_rucs(r: np.random.Generator, n: int, taken: set) -> list[str]:
    return _rucs(r, n, RUC_BASE, taken)


def _rucs(r: np.random.Generator, n: int, base: int, taken: set) -> list[str]:
    out = []
    while len(out) < n:
        x = str(base + int(r.integers(0, 899_999_999)))
        if x not in taken:
            taken.add(x)
            out.append(x)
    return out


def make_entities(cfg: WorldConfig) -> Entities:
    k = cfg.k["entities"]
    r = rng(cfg.seed, S_ENTITIES)
    hs = hs_frame(new_lines(cfg))
    base_hs = hs[hs.flag != "new"]
    n_imp = max(60, int(cfg.declarations_per_day * k["importers_per_daily_declaration"]))
    n_brk = max(12, int(n_imp * k["declarants_per_importer"]))
    n_sup = max(40, int(n_imp * k["suppliers_per_importer"]))
    chapters = sorted(base_hs.hs_code.str[:2].unique())
    ch_p = np.array([0.15 if c in ("01", "41", "29") else 1.0 for c in chapters])  # restricted trade is rare
    ch_p /= ch_p.sum()

    brk = pd.DataFrame({"declarant_id": [f"B{i:04d}" for i in range(n_brk)],
                        "complicit": r.random(n_brk) < k["complicit_declarant_share"]})
    origins = list(ORIGINS)
    op = np.array([ORIGINS[o][1] for o in origins])
    op /= op.sum()
    kind = r.choice(["manufacturer", "trader"], n_sup, p=[1 - k["trader_supplier_share"], k["trader_supplier_share"]])
    country = np.where(kind == "trader", r.choice(k["trader_countries"], n_sup), r.choice(origins, n_sup, p=op))
    n_front = max(3, n_sup // 30)
    sup = pd.DataFrame({
        "supplier_id": [f"S{i:05d}" for i in range(n_sup + n_front)],
        "supplier_country": np.concatenate([country, r.choice(k["front_countries"], n_front)]),
        "kind": np.concatenate([kind, np.full(n_front, "front")]),
        "shady": np.concatenate([r.random(n_sup) < k["shady_supplier_share"], np.ones(n_front, bool)]),
        "price_level": np.exp(r.normal(0, cfg.k["prices"]["supplier_level_sigma"], n_sup + n_front)),
    })
    fronts = sup.supplier_id[sup.kind == "front"].to_numpy()
    regular = sup.supplier_id[sup.kind != "front"].to_numpy()

    kinds = k["importer_kinds"]
    names = list(kinds)
    ik = r.choice(len(names), n_imp, p=np.array([kinds[n][0] for n in names]) / sum(v[0] for v in kinds.values()))
    prop = np.array([r.beta(kinds[names[i]][1], kinds[names[i]][2]) for i in ik])
    habitual = np.array([names[i] == "habitual" for i in ik])
    activity = (r.pareto(k["activity_pareto"], n_imp) + 0.2) * np.where(habitual, k["habitual_activity"], 1.0)
    offices = office_table(cfg)
    mech = r.choice(list(cfg.k["fraud"]["mechanism_mix"]), n_imp,
                    p=np.array(list(cfg.k["fraud"]["mechanism_mix"].values())))
    sups = []
    for i in range(n_imp):
        s = list(r.choice(regular, size=int(r.integers(1, 5)), replace=False))
        front = mech[i] == "origin" and names[ik[i]] != "honest" and r.random() < k["front_supplier_share"]
        if front or r.random() < 0.03:  # an offender's front; fronts also sell genuine local goods to others
            s.append(str(r.choice(fronts)))
        sups.append(s)
    taken: set = set()
    imp = pd.DataFrame({
        "importer_id": _rucs(r, n_imp, RUC_BASE, taken),
        "kind": np.array(names)[ik], "propensity": prop, "activity": activity,
        "home_office": _home_offices(r, activity, offices),
        "declarant_id": r.choice(brk.declarant_id, n_imp),
        "chapters": [list(r.choice(chapters, size=int(r.integers(1, 4)), replace=False, p=ch_p))
                     for _ in range(n_imp)],
        "suppliers": sups,
        "preferred_mechanism": mech,
        "first_day": np.where(r.random(n_imp) < k["new_importer_share"], r.integers(0, cfg.total_days, n_imp), 0),
        "last_day": cfg.total_days + 1,
        "price_level": np.exp(r.normal(0, cfg.k["prices"]["importer_level_sigma"], n_imp)),
        "scheme": "", "scheme_start": -1, "scheme_propensity": 0.0, "scheme_activity": 0.0, "phoenix_of": "",
        "fraud_office": "",
    })
    ent = Entities(imp, brk, sup, _officers(cfg, r, offices), hs, taken)
    _add_scheme_actors(cfg, ent, taken)
    return ent


def _home_offices(r: np.random.Generator, activity: np.ndarray, offices: pd.DataFrame) -> np.ndarray:
    """Each importer's usual office, so that the offices' volumes follow their shares (large importers first,
    each to the office with the most volume still to fill; ties broken at random)."""
    target = offices.share.to_numpy() * activity.sum()
    load = np.zeros(len(offices))
    out = np.empty(len(activity), dtype=object)
    for i in np.argsort(-activity, kind="stable"):
        gap = target - load + r.random(len(offices)) * 1e-9
        j = int(np.argmax(gap))
        out[i], load[j] = offices.customs_office.iloc[j], load[j] + activity[i]
    return out


def _officers(cfg: WorldConfig, r: np.random.Generator, offices: pd.DataFrame) -> pd.DataFrame:
    a = cfg.k["administration"]
    rows = []
    for o in offices.itertuples():
        n = max(2, int(round(a["officers_per_daily_declaration"] * cfg.declarations_per_day * o.share)))
        skill = np.clip(np.exp(r.normal(0, a["officer_skill_sigma"], n)), 0.4, 1.6)
        rows += [(f"OF{o.customs_office}{i:03d}", o.customs_office, float(s)) for i, s in enumerate(skill)]
    return pd.DataFrame(rows, columns=["officer_id", "customs_office", "skill"])


def _add_scheme_actors(cfg: WorldConfig, ent: Entities, taken: set) -> None:
    """Each scheme recruits clean established importers of its chapters and brings in new ones."""
    r = rng(cfg.seed, S_SCHEMES)
    imp = ent.importers
    median_activity = float(imp.activity.median())
    regular = ent.suppliers.supplier_id[ent.suppliers.kind == "manufacturer"].to_numpy()
    for si, s in enumerate(cfg.k["schemes"]):
        start = cfg.scheme_start(s)
        chapters = sorted({c[:2] for c in s.get("misdeclared_from", [])} | set(s.get("chapters", [])))
        n = max(3, int(round(s["actors_per_100_declarations"] * cfg.declarations_per_day / 100)))
        n_new = int(round(n * s["new_actor_share"]))
        eligible = imp.index[(imp.scheme == "") & (imp.kind == "honest") & (imp.first_day < start - 30)
                             & (imp.activity <= imp.activity.quantile(0.9))
                             & imp.chapters.map(lambda cs, ch=chapters: bool(set(cs) & set(ch)))]
        rec = r.choice(eligible, size=min(n - n_new, len(eligible)), replace=False) if len(eligible) else []
        props = r.beta(*s["propensity"], n)
        imp.loc[rec, ["scheme", "scheme_start"]] = [s["name"], start]
        imp.loc[rec, "scheme_propensity"] = props[: len(rec)]
        # From the start, a recruit's trade grows to the scheme's volume (its own, if larger).
        imp.loc[rec, "scheme_activity"] = np.maximum(imp.loc[rec, "activity"], s["activity"] * median_activity)
        extra_sup = []
        if s["kind"] == "hub_transshipment":  # the scheme's trading houses in the hub
            ids = [f"S8{si}{j:03d}" for j in range(3)]
            hubs = pd.DataFrame({"supplier_id": ids, "supplier_country": s["hub_country"], "kind": "hub",
                                 "shady": True, "price_level": 1.0})
            ent.suppliers = pd.concat([ent.suppliers, hubs], ignore_index=True)
            extra_sup = ids
            recs = set(rec)
            imp["suppliers"] = [[*v, *ids] if i in recs else v for i, v in zip(imp.index, imp.suppliers, strict=True)]
        new = pd.DataFrame({
            "importer_id": _rucs(r, n_new, RUC_BASE, taken), "kind": "scheme",
            "propensity": 0.0, "activity": s["activity"] * median_activity * np.exp(r.normal(0, 0.5, n_new)),
            "home_office": r.choice(["118", "235"], n_new),
            "declarant_id": r.choice(ent.declarants.declarant_id, n_new),
            "chapters": [list(chapters) for _ in range(n_new)],
            "suppliers": [[*r.choice(regular, 2, replace=False), *extra_sup] for _ in range(n_new)],
            "preferred_mechanism": r.choice(list(REVENUE_MECHANISMS), n_new),
            "first_day": start, "last_day": cfg.total_days + 1,
            "price_level": np.exp(r.normal(0, cfg.k["prices"]["importer_level_sigma"], n_new)),
            "scheme": s["name"], "scheme_start": start, "scheme_propensity": props[len(rec):len(rec) + n_new],
            "scheme_activity": 0.0,
            "phoenix_of": "", "fraud_office": "",
        })
        imp = pd.concat([imp, new], ignore_index=True)
    ent.importers = imp
