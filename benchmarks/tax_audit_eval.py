"""Measure the monthly tax audit selection against the truth (evaluation only: the product never reads it).

Generates a world with the tax side on (default size unless told), ingests the customs tables the daily DAG
would have ingested (customs, enforcement, exchange rates: the customs side of the tax features), then runs
consecutive monthly runs through the product's entry point (``sunat_pipeline.tax.monthly.run_month``) and
reports, per month and pooled over the months:

* the base rate of evaders among the month's eligible taxpayers (truth: ``world_truth/tax_taxpayers.parquet``);
* precision at 1, 5 and 10% of the eligible population and the top 5%'s lift over the base rate, for (a) the
  combined score, (b) the anomaly score alone, (c) the legacy audit policy: its RULES audits opened the month
  after the processed one (what it chose with the same knowledge; truth's audit file, which also holds audits
  still open when the world ends), against the combined score's top at the same count;
* the precision of the list itself (risk picks and random picks).

With ``--airflow`` each month is a backfill run of the ``sunat_tax_monthly`` DAG made by Airflow's scheduler
(api-server, scheduler and DAG processor on an embedded SQLite database in the work folder, as `make demo` runs
its days: ``sunat_pipeline.orchestration.scheduled``), with that run's logical date and data interval.

    .venv/bin/python benchmarks/tax_audit_eval.py [--months 2026-01 ... ] [--seed 42] [--airflow] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.orchestration import schedule
from sunat_pipeline.settings import get_settings
from sunat_pipeline.tax import inputs, monthly, store
from sunat_sim.world import WorldConfig, generate, truth_dir

SHARES = (0.01, 0.05, 0.10)
CUSTOMS_SIDE = ("customs", "enforcement", "exchange_rates")
DEFAULT_MONTHS = ("2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06")


def precision_at(ranked_evader: pd.Series, share: float) -> tuple[int, int]:
    """(evaders, count) in the top ``share`` of a ranking (True/False evader flags, best first)."""
    k = max(1, int(round(share * len(ranked_evader))))
    return int(ranked_evader.head(k).sum()), k


def evaluate_month(settings, month: str, evader: pd.Series, legacy: pd.DataFrame) -> dict:
    sc = store.read(settings, store.SCORES, month)
    sc = sc.assign(evader=sc.taxpayer_id.map(evader).fillna(False).astype(bool))
    out = {"month": month, "eligible": len(sc), "base_rate": float(sc.evader.mean()),
           "supervised": bool(sc.audit_probability.notna().any())}
    by = {"combined": sc.sort_values("population_rank").evader,
          "anomaly": sc.sort_values(["anomaly_score", "taxpayer_id"], ascending=[False, True]).evader}
    for name, ranked in by.items():
        for s in SHARES:
            hit, k = precision_at(ranked.reset_index(drop=True), s)
            out[f"{name}_hits@{s:.0%}"], out[f"{name}_k@{s:.0%}"] = hit, k
            out[f"{name}_p@{s:.0%}"] = hit / k
    nxt = str(pd.Period(month, "M") + 1)
    leg = legacy[(legacy.opened_month == nxt) & (legacy.program == "RULES")]
    out["legacy_audits"] = len(leg)
    out["legacy_hits"] = int(leg.evader.sum())
    out["legacy_p"] = float(leg.evader.mean()) if len(leg) else float("nan")
    k = max(1, len(leg))
    out["combined_hits@legacy_k"] = int(by["combined"].head(k).sum())
    out["combined_p@legacy_k"] = out["combined_hits@legacy_k"] / k
    lst = store.read(settings, store.LIST, month).assign(evader=lambda d: d.taxpayer_id.map(evader).fillna(False))
    for reason in ("risk", "random"):
        g = lst[lst.selection_reason == reason]
        out[f"list_{reason}_n"], out[f"list_{reason}_hits"] = len(g), int(g.evader.sum())
    return out


def pooled(rows: list[dict]) -> dict:
    tot = {"months": len(rows), "eligible": sum(r["eligible"] for r in rows)}
    tot["base_rate"] = sum(r["base_rate"] * r["eligible"] for r in rows) / tot["eligible"]
    for name in ("combined", "anomaly"):
        for s in SHARES:
            hits, k = sum(r[f"{name}_hits@{s:.0%}"] for r in rows), sum(r[f"{name}_k@{s:.0%}"] for r in rows)
            tot[f"{name}_p@{s:.0%}"] = hits / k
    tot["combined_lift@5%"] = tot["combined_p@5%"] / tot["base_rate"]
    tot["anomaly_lift@5%"] = tot["anomaly_p@5%"] / tot["base_rate"]
    la = sum(r["legacy_audits"] for r in rows)
    tot["legacy_p"] = sum(r["legacy_hits"] for r in rows) / max(la, 1)
    tot["legacy_audits"] = la
    tot["combined_p@legacy_k"] = sum(r["combined_hits@legacy_k"] for r in rows) / max(la, 1)
    for reason in ("risk", "random"):
        n = sum(r[f"list_{reason}_n"] for r in rows)
        tot[f"list_{reason}_p"] = sum(r[f"list_{reason}_hits"] for r in rows) / max(n, 1)
    tot["bar_3x_met"] = tot["combined_lift@5%"] >= 3
    tot["beats_anomaly@5%"] = tot["combined_p@5%"] > tot["anomaly_p@5%"]
    tot["beats_legacy"] = tot["combined_p@legacy_k"] > tot["legacy_p"] and tot["combined_p@5%"] > tot["legacy_p"]
    return tot


def _scheduled(settings):
    """Airflow's scheduler on the work folder's own SQLite database, for the monthly DAG. Its start month is the
    current one (its first scheduled run after today), so the scheduler makes no run besides the backfills."""
    from datetime import date

    from sunat_pipeline.orchestration.scheduled import ScheduledAirflow

    return ScheduledAirflow(settings, "sunat_tax_monthly", env={
        "SUNAT_TAX_AUDIT__START_MONTH": date.today().strftime("%Y-%m"),
        "SUNAT_INGEST__DATA_DOCS": "false", "SUNAT_SEED": str(settings.seed)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--months", nargs="+", default=list(DEFAULT_MONTHS))
    p.add_argument("--lake", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument("--airflow", action="store_true", help="run each month as a backfill run of sunat_tax_monthly "
                   "through Airflow's scheduler")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.lake or Path(tmp)
        settings = get_settings(lake_root=root / "data", mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db",
                                airflow_home=root / "airflow",
                                ingest={"data_docs": False}, seed=a.seed)
        t0 = time.time()
        if not (settings.lake / "landing").exists():
            generate(WorldConfig(seed=a.seed, tax_world=True), settings.lake)
        last = inputs.cutoff(max(a.months))
        for s in CUSTOMS_SIDE:  # what the daily DAG would have ingested by then
            ingest.ingest_source(settings, s, last)
        t_world = time.time() - t0
        tdir = truth_dir(settings.lake)
        tp = pd.read_parquet(tdir / "tax_taxpayers.parquet")
        evader = pd.Series(tp.evader.to_numpy(), index=tp.taxpayer_id)
        legacy = pd.read_parquet(tdir / "tax_audits.parquet")
        legacy["opened_month"] = pd.to_datetime(legacy.opened_date).dt.to_period("M").astype(str)
        rows, timings = [], []
        with contextlib.ExitStack() as stack:
            af = stack.enter_context(_scheduled(settings)) if a.airflow else None
            for m in sorted(a.months):
                t = time.time()
                if af is None:
                    monthly.run_month(settings, m)
                else:
                    af.run_at(schedule.monthly_start(settings.operations, m, settings.tax_audit.run_day,
                                                     settings.tax_audit.run_at), m)
                timings.append(round(time.time() - t, 1))
                print(f"[tax-eval] month {m} done in {timings[-1]} s{' (Airflow backfill run)' if af else ''}",
                      flush=True)
                rows.append(evaluate_month(settings, m, evader, legacy))
        tot = pooled(rows)
        result = {"seed": a.seed, "through_airflow": a.airflow, "world_and_customs_ingest_s": round(t_world, 1),
                  "run_month_s": timings,
                  "months": rows, "pooled": tot}
    cols = ["month", "eligible", "base_rate", "supervised", "combined_p@1%", "combined_p@5%", "combined_p@10%",
            "anomaly_p@1%", "anomaly_p@5%", "anomaly_p@10%", "legacy_audits", "legacy_p", "combined_p@legacy_k"]
    print(pd.DataFrame(rows)[cols].round(3).to_string(index=False))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in tot.items()}, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
