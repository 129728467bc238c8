"""`make demo`: a synthetic world, then each live day through Airflow followed by the inspections."""

from __future__ import annotations

import logging
import shutil
import time

import pandas as pd

from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def run(settings: Settings, history_days: int = 180, live_days: int = 14, per_day: int = 300, seed: int = 42) -> int:
    from sunat_pipeline.orchestration.runner import ensure_db, run_dag
    from sunat_sim.inspection import inspect_day
    from sunat_sim.world import WorldConfig, generate

    t0 = time.time()
    # A demo starts from a clean slate: its lake, its MLflow store and its Airflow runs.
    for p in (settings.lake, settings.root / ".local" / "mlflow"):
        if p.exists():
            shutil.rmtree(p)
    shutil.rmtree(settings.airflow_home_path / "runs", ignore_errors=True)
    cfg = WorldConfig(seed=seed, history_days=history_days, live_days=live_days, declarations_per_day=per_day)
    print(f"[demo] generating the synthetic world: {history_days} days of history + {live_days} live days, "
          f"{per_day} declarations/day (seed {seed})", flush=True)
    w = generate(cfg, settings.lake)
    print(f"[demo] world: {w['items']} items, {w['declarations']} declarations, fraud rate "
          f"{w['fraud_rate_items']:.1%}, drift from {w['drift_date']} ({time.time() - t0:.0f} s)", flush=True)
    ensure_db(settings)
    for i, day in enumerate(cfg.live_dates, 1):
        t = time.time()
        # Only a test/CI demo may need fresh Airflow state per run; dags test replaces the day's run itself.
        run_dag(settings, "sunat_daily", day)
        insp = inspect_day(settings, day)
        print(f"[demo] day {i}/{len(cfg.live_dates)} {day}: Airflow run ok, {insp['inspected_items']} items "
              f"inspected, {insp['frauds_found']} frauds found ({time.time() - t:.0f} s)", flush=True)
    print_summary(settings)
    print(f"[demo] finished in {time.time() - t0:.0f} s")
    return 0


def print_summary(settings: Settings) -> None:
    from sunat_pipeline.feedback import weights
    from sunat_pipeline.reporting.report import day_table, registry_summary

    tab = day_table(settings)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nPer processed day (channels count declarations; outcomes are the inspections reported so far):")
        print(tab.to_string(index=False) if len(tab) else "(no day scored yet)")
    if len(tab):
        print(f"\nTotal: {int(tab['items'].sum())} items scored, {int(tab.RED.sum())} RED / "
              f"{int(tab.YELLOW.sum())} YELLOW / {int(tab.GREEN.sum())} GREEN declarations, "
              f"{int(tab.frauds_found.sum())} frauds found, {tab.revenue_recovered_usd.sum():,.0f} USD recovered")
    from sunat_pipeline.reporting.kpi import latest_summary
    from sunat_pipeline.reporting.report import last_report

    k = latest_summary(settings)
    if k:
        f = {c: (format(k[c], ".2f" if c == "efficiency_index" else ".1%") if pd.notna(k[c]) else "n/a") for c in
             ("efficiency_index", "hit_rate_targeted", "hit_rate_random", "hit_rate_red", "hit_rate_yellow")}
        print(f"Efficiency index (targeted / random hit rate, all days, as of {k['report_date']}): "
              f"{f['efficiency_index']} ({f['hit_rate_targeted']} vs {f['hit_rate_random']}); hit rate "
              f"RED {f['hit_rate_red']}, YELLOW {f['hit_rate_yellow']}")
    print(f"KPI report:       {last_report(settings) or '(none yet)'}  (one a day; tables: {settings.gold / 'kpi'})")
    reg = registry_summary(settings)
    print(f"\nScored Parquet:   {settings.scored_dir}/declaration_date=YYYY-MM-DD/part-0.parquet")
    print(f"Offence database: {settings.gold / 'offences'}")
    print(f"Rule weights:     {settings.gold / 'rule_weights'} ({len(weights.versions(settings))} versions)")
    print(f"MLflow:           {settings.tracking_uri}  experiment '{settings.mlflow_experiment}', registered "
          f"model '{settings.registered_model}' versions {reg['versions']}, champion v{reg['champion']}")
    print("UIs:              make ui  -> Airflow http://localhost:8080 (login printed), MLflow http://localhost:5000")
    print("Query:            duckdb -c \"select channel, count(*) from "
          f"'{settings.scored_dir}/*/*.parquet' group by 1\"")
