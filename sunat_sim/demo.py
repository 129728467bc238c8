"""`make demo`: a synthetic world, then each live day through Airflow followed by the inspections."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import timedelta

import pandas as pd

from sunat_pipeline.settings import Settings
from sunat_sim.config import DEFAULT_DIFFICULTY

log = logging.getLogger(__name__)
CAPACITY_ENV = "SUNAT_SELECTION__CAPACITY"  # read by the product's settings: SelectionSettings.capacity
VOLUME_DAYS = 28  # an administration sizes each office's inspection teams on its recent volume


def office_volumes(settings: Settings, cfg) -> dict[str, float]:
    """Average declarations a day per office over the last weeks of the history, from the landed customs extract
    (what the administration itself can count)."""
    from sunat_sim.world import landing_name

    path = settings.landing / "customs" / landing_name("customs", cfg.last_history_date, "history")
    c = pd.read_csv(path, usecols=["declaration_id", "declaration_date", "customs_office"], dtype=str)
    since = (cfg.last_history_date - timedelta(days=VOLUME_DAYS - 1)).isoformat()
    recent = c[c.declaration_date >= since].drop_duplicates("declaration_id")
    days = min(VOLUME_DAYS, cfg.history_days)
    return {o: n / days for o, n in recent.customs_office.value_counts().sort_index().items()}


def capacity_json(settings: Settings, cfg) -> str:
    """Each office's daily capacity as the product's settings read it (``SUNAT_SELECTION__CAPACITY``)."""
    from sunat_sim.administration import office_capacity

    return json.dumps(office_capacity(cfg, office_volumes(settings, cfg)), sort_keys=True)


def run(settings: Settings, history_days: int = 180, live_days: int = 14, per_day: int = 300, seed: int = 42,
        difficulty: str = DEFAULT_DIFFICULTY) -> int:
    from sunat_pipeline.orchestration.scheduled import ScheduledAirflow
    from sunat_sim.inspection import inspect_day
    from sunat_sim.world import WorldConfig, generate

    t0 = time.time()
    # A demo starts from a clean slate: its lake, its MLflow store and its Airflow runs.
    for p in (settings.lake, settings.root / ".local" / "mlflow"):
        if p.exists():
            shutil.rmtree(p)
    shutil.rmtree(settings.airflow_home_path / "runs", ignore_errors=True)
    reset_airflow(settings)
    cfg = WorldConfig(seed=seed, history_days=history_days, live_days=live_days, declarations_per_day=per_day,
                      difficulty=difficulty)
    print(f"[demo] generating the synthetic world ({difficulty}): {history_days} days of history + {live_days} live "
          f"days, {per_day} declarations/day (seed {seed})", flush=True)
    w = generate(cfg, settings.lake)
    schemes = ", ".join(f"{k} from {v}" for k, v in w["schemes"].items())
    print(f"[demo] world: {w['items']} items, {w['declarations']} declarations, fraud rate "
          f"{w['fraud_rate_declarations']:.1%} of declarations; new schemes: {schemes} ({time.time() - t0:.0f} s)",
          flush=True)
    # The administration sets each office's capacity from its volume; the DAG runs read it from the environment.
    os.environ[CAPACITY_ENV] = capacity_json(settings, cfg)
    print(f"[demo] inspection capacity per office (declarations a day): {os.environ[CAPACITY_ENV]}", flush=True)
    # Each day is a backfill run made by Airflow's scheduler (real queued / start / end times in the UI); the
    # inspections of the day happen between runs, as the inspectors would work between two mornings.
    t = time.time()
    with ScheduledAirflow(settings, "sunat_daily") as airflow:
        print(f"[demo] Airflow scheduler, DAG processor and api-server up ({time.time() - t:.0f} s)", flush=True)
        for i, day in enumerate(cfg.live_dates, 1):
            t = time.time()
            airflow.run_day(day)
            insp = inspect_day(settings, day)
            print(f"[demo] day {i}/{len(cfg.live_dates)} {day}: Airflow run ok, {insp['inspected_items']} items "
                  f"inspected, {insp['frauds_found']} frauds found ({time.time() - t:.0f} s)", flush=True)
    print_summary(settings)
    print(f"[demo] finished in {time.time() - t0:.0f} s")
    return 0


def reset_airflow(settings: Settings) -> None:
    """The embedded Airflow starts empty too (its SQLite database, markers and task logs): the UI then shows only
    this demo's runs."""
    if settings.airflow_db_url:
        return
    home = settings.airflow_home_path
    for f in [home / "airflow.db", *home.glob(".migrated-*"), *home.glob(".pool-*")]:
        f.unlink(missing_ok=True)
    shutil.rmtree(home / "logs", ignore_errors=True)


def truth_table(settings: Settings) -> pd.DataFrame:
    """Per scored day, what really happened (ground truth): frauds present, caught, missed, revenue at stake and
    recovered. Evaluation only: the pipeline never sees these figures."""
    from sunat_sim.inspection import first_findings
    from sunat_sim.world import truth_dir

    runs = sorted((settings.gold / "score_runs").glob("declaration_date=*/run.json"))
    days = [json.loads(p.read_text())["declaration_date"] for p in runs]
    tpath = truth_dir(settings.lake) / "items.parquet"
    if not days or not tpath.exists():
        return pd.DataFrame()
    truth = pd.read_parquet(tpath)
    truth = truth[pd.to_datetime(truth.declaration_date).dt.strftime("%Y-%m-%d").isin(days)]
    m = truth.merge(first_findings(settings), on=["declaration_id", "item_no"], how="left")
    m["day"] = pd.to_datetime(m.declaration_date).dt.strftime("%Y-%m-%d")
    m["caught"] = m.is_fraud & (m.result == "FRAUD")
    m["inspected"] = m.result.notna()
    g = m.groupby("day")
    out = pd.DataFrame({
        "fraud_items": g.is_fraud.sum(), "fraud_declarations": m[m.is_fraud].groupby("day").declaration_id.nunique(),
        "inspected_frauds": m[m.is_fraud & m.inspected].groupby("day").size(),
        "caught": g.caught.sum(), "false_findings": m[~m.is_fraud & (m.result == "FRAUD")].groupby("day").size(),
        "revenue_at_stake_usd": g.revenue_at_stake_usd.sum(),
        "recovered_usd": m[m.caught].groupby("day").revenue_recovered_usd.sum(),
    }).fillna(0)
    out["missed"] = out.fraud_items - out.caught
    cols = ["fraud_items", "fraud_declarations", "inspected_frauds", "caught", "missed", "false_findings",
            "revenue_at_stake_usd", "recovered_usd"]
    return out[cols].astype({c: int for c in cols[:6]}).round(0).reset_index(names="date")


def print_summary(settings: Settings) -> None:
    from sunat_pipeline.feedback import weights
    from sunat_pipeline.modeling import registry
    from sunat_pipeline.reporting.kpi import latest_summary
    from sunat_pipeline.reporting.report import day_table, last_report, registry_summary

    tab = day_table(settings)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\nPer processed day (channels count declarations; outcomes are the inspections reported so far):")
        print(tab.to_string(index=False) if len(tab) else "(no day scored yet)")
        truth = truth_table(settings)
        if len(truth):
            print("\nSame days, EVALUATION ONLY (the world's ground truth, which the pipeline never sees): frauds "
                  "present, caught by the inspections (whenever reported), missed; revenue at stake vs recovered:")
            print(truth.to_string(index=False))
    if len(tab):
        print(f"\nTotal: {int(tab['items'].sum())} items scored, {int(tab.RED.sum())} RED / "
              f"{int(tab.YELLOW.sum())} YELLOW / {int(tab.GREEN.sum())} GREEN declarations, "
              f"{int(tab.frauds_found.sum())} frauds found, {tab.revenue_recovered_usd.sum():,.0f} USD recovered")
    if len(truth):
        t = truth.sum(numeric_only=True)
        print(f"Truth (evaluation only): {int(t.fraud_items)} fraudulent items present, {int(t.caught)} caught "
              f"({t.caught / max(t.fraud_items, 1):.1%}), {int(t.missed)} missed, {int(t.false_findings)} wrong "
              f"findings; {t.recovered_usd:,.0f} of {t.revenue_at_stake_usd:,.0f} USD at stake recovered "
              f"({t.recovered_usd / max(t.revenue_at_stake_usd, 1):.1%})")
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
    exp = registry.client(settings).get_experiment_by_name(settings.mlflow_experiment)
    if exp is not None:
        print(f"Training runs:    {registry.experiment_url(exp.experiment_id)}  (MLflow's model-training view)")
    print("Query:            duckdb -c \"select channel, count(*) from "
          f"'{settings.scored_dir}/*/*.parquet' group by 1\"")
