"""Evaluation: the hybrid selection policy's hit rate against its own random share, on a synthetic world.

Generates a world into a temporary lake (never the project's ``data/``), then runs each live day as the
daily DAG does, without Airflow: ingest (GX suites) -> train if due (XGBoost, MLflow in the temporary
folder) -> score and select -> inspection simulator -> feedback. Capacity is ``--rate`` (10%) of each
office's declarations of the day, 40% RED and 60% YELLOW. Then, reading the ground truth (evaluation code
may; the pipeline never does), it compares the hit rate (share of selected declarations with at least one
fraudulent item) of the targeted selections (mandatory rules, exploitation, exploration) with that of the
random quality-control share, and with the day's population rate (what random selection hits on average).
The bar is a ratio of at least 3.

    .venv/bin/python -m benchmarks.eval_policy [--history-days 180 --live-days 14 --per-day 300 --seed 42]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from sunat_sim.world import truth_dir

TARGETED = ("mandatory_rule", "exploitation", "exploration")


def _rate(hits: int, n: int) -> dict:
    """Hit rate with a 95% Wilson interval."""
    if n == 0:
        return {"n": 0, "hits": 0, "hit_rate": None, "ci95": None}
    p, z = hits / n, 1.96
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"n": n, "hits": hits, "hit_rate": round(p, 4), "ci95": [round(c - h, 4), round(c + h, 4)]}


def capacity_for_day(settings, day, rate: float, red_share: float = 0.4):
    """Per-office capacity: ``rate`` of the day's declarations (at least one), RED ``red_share`` of it."""
    from sunat_pipeline import ingest
    from sunat_pipeline.settings import OfficeCapacity

    items = ingest.silver(settings, "customs", upto=day, since=day)
    n = items.groupby("customs_office").declaration_id.nunique()
    caps = {}
    for office, k in n.items():
        total = max(1, int(math.floor(rate * k + 0.5)))
        red = int(math.floor(red_share * total + 0.5))
        caps[str(office)] = OfficeCapacity(red=red, yellow=total - red)
    return caps


def run_world(workdir: Path, history_days: int, live_days: int, per_day: int, seed: int, rate: float,
              selection: dict | None = None) -> dict:
    from sunat_pipeline import ingest as ing
    from sunat_pipeline.feedback import offences as feedback
    from sunat_pipeline.modeling import train
    from sunat_pipeline.selection import score
    from sunat_pipeline.settings import get_settings
    from sunat_sim import inspection
    from sunat_sim.world import SOURCES, WorldConfig, generate

    s = get_settings(lake_root=workdir / "data", mlflow_tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    cfg = WorldConfig(seed=seed, history_days=history_days, live_days=live_days, declarations_per_day=per_day)
    t0 = time.time()
    world = generate(cfg, s.lake)
    print(f"[eval] world: {world['declarations']} declarations, item fraud rate {world['fraud_rate_items']:.1%} "
          f"({time.time() - t0:.0f} s)", flush=True)
    for day in cfg.live_dates:
        t = time.time()
        for src in SOURCES:
            ing.ingest_source(s, src, day)
        tr = train.train_if_due(s, day)
        sel = s.selection.model_copy(update={**(selection or {}), "capacity": capacity_for_day(s, day, rate)})
        run = score.score_day(s.model_copy(update={"selection": sel}), day)
        insp = inspection.inspect_day(s, day)
        feedback.update(s, day)
        print(f"[eval] {day}: trained={tr.get('trained')} channels={run['channels']} "
              f"reasons={run['selection_reasons']} frauds found {insp['frauds_found']} ({time.time() - t:.0f} s)",
              flush=True)
    return {"settings": s, "world": world, "dates": cfg.live_dates}


def evaluate(settings, dates) -> dict:
    """Hit rates per selection reason from the ground truth (declaration level)."""
    truth = pd.read_parquet(truth_dir(settings.lake) / "items.parquet")
    from sunat_pipeline.selection.output import read_scored

    frames = [read_scored(settings, upto=d, since=d,
                          columns=["declaration_id", "declaration_date", "channel", "selection_reason"]) for d in dates]
    dec = pd.concat(frames, ignore_index=True).drop_duplicates("declaration_id")
    t = truth.groupby("declaration_id").agg(fraud=("is_fraud", "any"), revenue=("revenue_at_stake_usd", "sum"))
    dec = dec.join(t, on="declaration_id")
    sel = dec[dec.channel != "GREEN"]
    out = {"days": len(dates), "declarations": len(dec), "population": _rate(int(dec.fraud.sum()), len(dec)),
           "selected": _rate(int(sel.fraud.sum()), len(sel)), "by_reason": {}}
    for r, g in sel.groupby("selection_reason"):
        out["by_reason"][r] = {**_rate(int(g.fraud.sum()), len(g)),
                               "revenue_at_stake_usd": round(float(g.revenue.sum()), 2)}
    tg = sel[sel.selection_reason.isin(TARGETED)]
    rnd = sel[sel.selection_reason == "random"]
    out["targeted"] = _rate(int(tg.fraud.sum()), len(tg))
    out["random"] = _rate(int(rnd.fraud.sum()), len(rnd))
    hr = out["targeted"]["hit_rate"] or 0.0
    out["ratio_targeted_vs_random"] = round(hr / out["random"]["hit_rate"], 2) if out["random"]["hit_rate"] else None
    out["ratio_targeted_vs_population"] = round(hr / out["population"]["hit_rate"], 2) \
        if out["population"]["hit_rate"] else None
    out["revenue_captured_share"] = round(float(sel.revenue.sum() / dec.revenue.sum()), 4) if dec.revenue.sum() else 0
    out["bar"] = 3.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history-days", type=int, default=180)
    ap.add_argument("--live-days", type=int, default=14)
    ap.add_argument("--per-day", type=int, default=300)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rate", type=float, default=0.10, help="capacity as a share of each office's declarations")
    ap.add_argument("--revenue-share", type=float, default=None, help="exploitation_revenue_share (default: setting)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the temporary lake goes (kept if given)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="sunat-eval-"))
    t0 = time.time()
    try:
        sel = {"exploitation_revenue_share": a.revenue_share} if a.revenue_share is not None else None
        w = run_world(workdir, a.history_days, a.live_days, a.per_day, a.seed, a.rate, sel)
        res = {"config": {"history_days": a.history_days, "live_days": a.live_days, "per_day": a.per_day,
                          "seed": a.seed, "rate": a.rate, "selection": w["settings"].selection.model_dump(
                              exclude={"capacity"}) | (sel or {})},
               **evaluate(w["settings"], w["dates"]), "seconds": round(time.time() - t0)}
    finally:
        if a.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))
    ratio = res["ratio_targeted_vs_random"]
    print(f"[eval] targeted hit rate {res['targeted']['hit_rate']:.1%} vs random share {res['random']['hit_rate']:.1%}"
          f" -> x{ratio} (population {res['population']['hit_rate']:.1%} -> x{res['ratio_targeted_vs_population']};"
          f" bar x{res['bar']:g})")
    return 0 if ratio is not None and ratio >= res["bar"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
