"""Fraudsters react to being caught: deterrence, displacement, phoenix importers.

After an inspection finds an importer's fraud (the offender knows at the inspection, before any record is
reported), it may stop for a while (deterred), move (its frauds to another office, or to another broker, or
to another mechanism),
or close and reappear under a new tax id that shares its broker and suppliers (a phoenix). The rest carry
on. Live days are generated before the pipeline runs, so offenders react to the detections of the
history's inspections (whose effects, e.g. deterrence and phoenixes, reach into the live period).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_sim.catalogue import REVENUE_MECHANISMS
from sunat_sim.entities import new_rucs
from sunat_sim.trade import Ctx


def react(ctx: Ctx, caught: list[str], day: int, r: np.random.Generator) -> dict[str, int]:
    """Apply each caught importer's reaction from the day after ``day``; returns counts per reaction."""
    a = ctx.cfg.k["adaptation"]
    imp = ctx.ent.importers
    row = {v: i for i, v in enumerate(imp.importer_id)}
    counts = {"deterred": 0, "displaced": 0, "phoenix": 0, "carried_on": 0}
    phoenixes = []
    for importer in sorted(set(caught)):
        i = row[importer]
        if imp.at[i, "last_day"] <= day:  # already winding down
            continue
        u = r.random()
        if u < a["deterred_share"]:
            ctx.deterred_until[importer] = day + 1 + int(r.exponential(a["deterred_days_mean"]))
            counts["deterred"] += 1
        elif u < a["deterred_share"] + a["displaced_share"]:
            _displace(ctx, i, r)
            counts["displaced"] += 1
        elif (u < a["deterred_share"] + a["displaced_share"] + a["phoenix_share"]
              and imp.at[i, "propensity"] >= a["phoenix_min_propensity"]):
            phoenixes.append((i, day + int(r.integers(a["phoenix_lag_days"][0], a["phoenix_lag_days"][1] + 1))))
            counts["phoenix"] += 1
        else:
            counts["carried_on"] += 1
    if phoenixes:
        ids = new_rucs(r, len(phoenixes), ctx.ent.taken)
        new = imp.loc[[i for i, _ in phoenixes]].copy()
        new["importer_id"], new["first_day"], new["phoenix_of"] = ids, [d for _, d in phoenixes], new.importer_id
        new["last_day"] = ctx.cfg.total_days + 1
        for i, _ in phoenixes:
            imp.at[i, "last_day"] = day + int(r.integers(0, 8))  # the old company winds down
        ctx.ent.importers = pd.concat([imp, new], ignore_index=True)
    return counts


def _displace(ctx: Ctx, i: int, r: np.random.Generator) -> None:
    imp = ctx.ent.importers
    where = ("office", "broker", "mechanism")[int(r.integers(3))]
    if where == "office":  # its frauds now go through another office; its ordinary trade stays where it is
        others = [o for o in ctx.offices.customs_office if o != imp.at[i, "home_office"]]
        imp.at[i, "fraud_office"] = others[int(r.integers(len(others)))]
    elif where == "broker":
        brk = ctx.ent.declarants
        complicit = brk.declarant_id[brk.complicit].to_numpy()
        pool = complicit if len(complicit) and r.random() < 0.5 else brk.declarant_id.to_numpy()
        imp.at[i, "declarant_id"] = pool[int(r.integers(len(pool)))]
    else:
        others = [m for m in REVENUE_MECHANISMS if m != imp.at[i, "preferred_mechanism"]]
        imp.at[i, "preferred_mechanism"] = others[int(r.integers(len(others)))]
