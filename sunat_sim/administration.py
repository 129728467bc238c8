"""The administration of the world: office capacity, the legacy selection policy, and inspections.

The legacy policy knows only what an administration knows: the declaration's fields, the reference price
in force, the permit register as known that morning, the importers it has caught before (a watch list
from findings reported so far) and how long an importer has been declaring; plus a share of random
controls. Inspections are imperfect: each officer finds a fraud with a probability that depends on the
channel (a documentary check cannot count units or see a counterfeit), the mechanism and the officer's
skill; assessments recover part of the revenue at stake; a few honest items are wrongly found
fraudulent; and some findings are overturned later, which lands as a correction record (result CLEAN)
in a later extract. A fraud the inspection misses is recorded CLEAN, as in reality.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from sunat_sim.config import WorldConfig
from sunat_sim.entities import office_table

ENFORCEMENT_COLUMNS = ["record_id", "declaration_id", "item_no", "inspection_date", "channel", "result",
                       "offence_code", "revenue_recovered_usd", "penalty_usd", "reported_date", "officer_id"]


def expected_volume(cfg: WorldConfig, importers: pd.DataFrame) -> dict[str, float]:
    """Declarations a day each office can expect: importers lodge at their usual office (by trading volume), the
    rest spread by the offices' shares."""
    o = office_table(cfg)
    home = cfg.k["entities"]["home_office_share"]
    act = importers.groupby("home_office").activity.sum().reindex(o.customs_office, fill_value=0.0)
    share = home * act.to_numpy() / act.sum() + (1 - home) * o.share.to_numpy()
    return dict(zip(o.customs_office, share * cfg.declarations_per_day, strict=True))


def office_capacity(cfg: WorldConfig, daily_declarations: dict[str, float]) -> dict[str, dict]:
    """Inspections a day per office (declarations), a share of its average daily volume (``daily_declarations``:
    declarations a day per office, observed or expected)."""
    share = cfg.k["administration"]["capacity_share"]
    return {str(o): {"red": max(1, int(round(v * share["red"]))), "yellow": max(1, int(round(v * share["yellow"])))}
            for o, v in sorted(daily_declarations.items())}


def legacy_channels(items: pd.DataFrame, cfg: WorldConfig, r: np.random.Generator, ref_in_force: np.ndarray,
                    permit_known_valid: np.ndarray, watch: set[str], past_declarations: dict[str, int],
                    capacity: dict[str, dict]) -> np.ndarray:
    """The legacy policy's channel for each item (one channel per declaration)."""
    lk = cfg.k["administration"]["legacy"]
    restricted = items.hs_code.str.startswith(tuple(lk["restricted_prefixes"])).to_numpy()
    quoted = (items.permit_no != "").to_numpy()
    mandatory = restricted & (~quoted | ~permit_known_valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = (items.fob_usd / items.net_weight_kg).to_numpy() < lk["low_value_ratio"] * ref_in_force
    pref_elsewhere = items.origin_country.isin(["CO", "EC", "BO"]).to_numpy() & (
        items.origin_country != items.supplier_country).to_numpy()
    watched = items.importer_id.isin(watch).to_numpy()
    score = np.maximum.reduce([np.where(watched, 3.0, 0.0), np.where(low | pref_elsewhere, 2.0, 0.0)])
    per = pd.DataFrame({"d": items.declaration_id.to_numpy(), "office": items.customs_office.to_numpy(),
                        "importer": items.importer_id.to_numpy(), "mandatory": mandatory, "score": score})
    decl = per.groupby("d", sort=False).agg(office=("office", "first"), importer=("importer", "first"),
                                             mandatory=("mandatory", "any"), score=("score", "max"))
    new = np.array([past_declarations.get(x, 0) < lk["new_importer_declarations"] for x in decl.importer])
    decl["score"] = np.maximum(decl.score.to_numpy(), np.where(new & (r.random(len(decl)) < lk["new_importer_share"]),
                                                                 1.0, 0.0))
    decl["jitter"] = r.random(len(decl))
    chan = pd.Series("GREEN", index=decl.index, dtype=object)
    for office, g in decl.groupby("office", sort=True):
        cap = capacity.get(office, {"red": 1, "yellow": 1})
        chan[g.index[g.mandatory]] = "RED"
        red_left = max(0, cap["red"] - int(g.mandatory.sum()))
        queue = g[~g.mandatory & (g.score > 0)].sort_values(["score", "jitter"], ascending=False).index
        chan[queue[:red_left]] = "RED"
        chan[queue[red_left:red_left + cap["yellow"]]] = "YELLOW"
    green = (chan == "GREEN").to_numpy()
    control = green & (r.random(len(chan)) < lk["random_share"])
    chan[control] = np.where(r.random(int(control.sum())) < 0.5, "RED", "YELLOW")
    return chan.reindex(items.declaration_id).to_numpy()


def inspect(items: pd.DataFrame, channel: np.ndarray, cfg: WorldConfig, officers: pd.DataFrame,
            inspection_date: date, r: np.random.Generator, stream: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inspect the RED and YELLOW items: (enforcement records incl. later corrections, the inspected items with
    ``found`` and ``officer_id``). ``items`` carries the truth (is_fraud, mechanism, scheme, revenue at stake)."""
    k = cfg.k["inspection"]
    sel = np.isin(channel, ["RED", "YELLOW"])
    it = items.loc[sel].reset_index(drop=True).assign(channel=channel[sel])
    if it.empty:
        return pd.DataFrame(columns=ENFORCEMENT_COLUMNS), it.assign(found=False, true_find=False, officer_id="")
    decl = it.declaration_id.unique()
    first = it.drop_duplicates("declaration_id").set_index("declaration_id")
    off_of = {}
    for o, g in officers.groupby("customs_office"):
        off_of[o] = (g.officer_id.to_numpy(), g.skill.to_numpy())
    pick = {}
    for dcl, office in zip(decl, first.customs_office.reindex(decl), strict=True):
        ids, skill = off_of.get(office, next(iter(off_of.values())))
        j = int(r.integers(len(ids)))
        pick[dcl] = (ids[j], skill[j])
    officer = np.array([pick[x][0] for x in it.declaration_id])
    skill = np.array([pick[x][1] for x in it.declaration_id])
    schemes = {s["name"]: s for s in cfg.k["schemes"]}
    base = np.array([(schemes[s].get("detection", {}).get(c) if s else None) or k["detection"][c].get(m, 0.0)
                     if m else 0.0 for c, m, s in zip(it.channel, it.mechanism, it.scheme, strict=True)])
    p = np.minimum(k["max_detection"], base * skill)
    fraud = it.is_fraud.to_numpy(dtype=bool)
    true_find = fraud & (r.random(len(it)) < p)
    false_find = ~fraud & (r.random(len(it)) < np.array([k["false_finding"][c] for c in it.channel]))
    found = true_find | false_find
    rec_share = r.beta(*k["recovery_beta"], len(it))
    full = np.isin(it.mechanism, k["fine_mechanisms"])
    stake = it.revenue_at_stake_usd.to_numpy(dtype=float)
    wrong = it.cif_usd.to_numpy(dtype=float) * r.uniform(*k["false_assessment_range"], len(it))
    recovered = np.where(true_find, np.where(full, stake, stake * rec_share), np.where(false_find, wrong, 0.0)).round(2)
    wrong_code = np.where(r.random(len(it)) < 0.7, "undervaluation", "misclassification")
    offence = np.where(true_find, it.mechanism, np.where(false_find, wrong_code, ""))
    delay = dict(zip(decl, r.integers(cfg.min_delay_days, cfg.max_delay_days + 1, len(decl)), strict=True))
    reported = [inspection_date + timedelta(days=int(delay[x])) for x in it.declaration_id]
    day = (inspection_date - cfg.start_date).days
    rec = pd.DataFrame({
        "record_id": [f"E{day:05d}-{stream}-{j:06d}" for j in range(len(it))],
        "declaration_id": it.declaration_id, "item_no": it.item_no, "inspection_date": inspection_date,
        "channel": it.channel, "result": np.where(found, "FRAUD", "CLEAN"), "offence_code": offence,
        "revenue_recovered_usd": recovered, "penalty_usd": (recovered * k["penalty_share"]).round(2),
        "reported_date": reported, "officer_id": officer,
    })
    overturn = found & (r.random(len(it)) < np.where(true_find, k["overturned_true"], k["overturned_false"]))
    lo, hi = k["overturn_delay_days"]
    corr = rec[overturn].copy()
    corr["record_id"] = corr.record_id + "-C"
    corr["result"], corr["offence_code"], corr["revenue_recovered_usd"], corr["penalty_usd"] = "CLEAN", "", 0.0, 0.0
    corr["reported_date"] = [x + timedelta(days=int(r.integers(lo, hi + 1))) for x in corr.reported_date]
    out = pd.concat([rec, corr], ignore_index=True)[ENFORCEMENT_COLUMNS]
    return out, it.assign(found=found, true_find=true_find, officer_id=officer)
