"""`sunat-sim` command line: generate the synthetic world, play the inspections, report on the world, run the demo."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

from sunat_pipeline.logs import setup
from sunat_pipeline.settings import get_settings
from sunat_sim.config import DEFAULT_DIFFICULTY, DIFFICULTIES
from sunat_sim.world import truth_dir


def _date(s: str) -> date:
    return date.fromisoformat(s)


def _world_options(p: argparse.ArgumentParser, seed_default: int | None) -> None:
    p.add_argument("--seed", type=int, default=seed_default)
    p.add_argument("--difficulty", choices=DIFFICULTIES, default=DEFAULT_DIFFICULTY,
                   help="preset of config/world.yaml (default %(default)s)")
    p.add_argument("--history-days", type=int, default=180)
    p.add_argument("--live-days", type=int, default=14)
    p.add_argument("--per-day", type=int, default=300, help="declarations per day (average)")


def _config(a, seed: int):
    from sunat_sim.world import WorldConfig

    kw = {"min_delay_days": a.min_delay, "max_delay_days": a.max_delay} if hasattr(a, "min_delay") else {}
    return WorldConfig(seed=seed, start_date=getattr(a, "start", date(2026, 1, 1)), history_days=a.history_days,
                       live_days=a.live_days, declarations_per_day=a.per_day, difficulty=a.difficulty,
                       tax_world=getattr(a, "tax_world", False), **kw)


def cmd_generate(a) -> int:
    from sunat_sim.world import generate

    s = get_settings()
    if (s.landing.exists() or truth_dir(s.lake).exists()) and not a.force:
        print(f"a world already exists under {s.lake}; use --force to replace it (this deletes the lake)",
              file=sys.stderr)
        return 2
    if a.force and s.lake.exists():
        shutil.rmtree(s.lake)
    print(json.dumps(generate(_config(a, a.seed if a.seed is not None else s.seed), s.lake), indent=2))
    return 0


def cmd_inspect(a) -> int:
    from sunat_sim.inspection import inspect_day

    print(json.dumps(inspect_day(get_settings(), a.date), indent=2))
    return 0


def cmd_report(a) -> int:
    from sunat_sim.report import build_report, format_report, to_json
    from sunat_sim.world import load_world_config, simulate

    if a.from_lake:
        cfg = load_world_config(get_settings().lake)  # the same world again: generation is deterministic
    else:
        cfg = _config(a, a.seed if a.seed is not None else get_settings().seed)
    rep = build_report(simulate(cfg))
    print(format_report(rep), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(to_json(rep), indent=2, sort_keys=True) + "\n")
    return 0


def cmd_summary(a) -> int:
    from sunat_sim import demo

    demo.print_summary(get_settings())
    return 0


def cmd_demo(a) -> int:
    from sunat_sim import demo

    return demo.run(get_settings(), history_days=a.history_days, live_days=a.live_days, per_day=a.per_day,
                    seed=a.seed, difficulty=a.difficulty)


def cmd_backtest(a) -> int:
    import time

    from sunat_pipeline.backtest.policies import SHIPPED, load_policy
    from sunat_sim import backtest, backtest_report

    s = get_settings()
    policies = a.policy or list(SHIPPED)
    for p in policies:
        load_policy(s, p)  # an unknown or invalid policy fails before any world is generated
    cfg = backtest.BacktestConfig(policies=policies, seeds=a.seed or [1, 2, 3], live_days=a.days,
                                  history_days=a.history_days, per_day=a.per_day, capacity=a.capacity,
                                  difficulty=a.difficulty, workers=a.workers, kpi_daily=a.kpi_daily,
                                  shared_ingest=not a.no_shared_ingest)
    out = Path(a.out or s.lake / "backtests" / "latest").resolve()
    t0 = time.time()
    results = backtest.run(cfg, out / "work")
    summary = backtest_report.summarise(cfg, results, time.time() - t0)
    json_path = Path(a.json).resolve() if a.json else out / "backtest.json"
    html_path = Path(a.html).resolve() if a.html else out / "backtest.html"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_bytes(backtest_report.render_html(summary))
    run_id = None if a.no_mlflow else backtest_report.log_mlflow(s, summary, json_path, html_path)
    print(backtest_report.format_table(summary))
    print(f"JSON: {json_path}\nHTML: {html_path.as_uri()}")
    if run_id:
        print(f"MLflow: experiment '{backtest_report.EXPERIMENT}' run {run_id} at {s.tracking_uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(prog="sunat-sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate the synthetic world into the landing zone")
    _world_options(g, None)
    g.add_argument("--tax-world", action="store_true",
                   help="also land the tax side: register, IGV and income returns, e-invoices, audits (docs/tax.md)")
    g.add_argument("--start", type=_date, default=date(2026, 1, 1))
    g.add_argument("--min-delay", type=int, default=1, help="min days before an inspection result is reported")
    g.add_argument("--max-delay", type=int, default=5)
    g.add_argument("--force", action="store_true", help="replace an existing lake")
    g.set_defaults(fn=cmd_generate)
    i = sub.add_parser("inspect", help="simulate the inspections of a scored day")
    i.add_argument("--date", type=_date, required=True)
    i.set_defaults(fn=cmd_inspect)
    r = sub.add_parser("report", help="world report: fraud rates, give-away checks, reference model, drift "
                       "(evaluation only; simulates the world in memory)")
    _world_options(r, None)
    r.add_argument("--from-lake", action="store_true", help="report on the world generated in the lake")
    r.add_argument("--json", help="also write the report as JSON to this file")
    r.set_defaults(fn=cmd_report)
    d = sub.add_parser("demo", help="generate a world and run its live days through Airflow")
    _world_options(d, 42)
    d.set_defaults(fn=cmd_demo)
    sub.add_parser("summary", help="print the per-day summary").set_defaults(fn=cmd_summary)
    b = sub.add_parser("backtest", help="replay the live period once per selection policy (closed loop, equal "
                       "capacity) and compare the policies on the ground truth (docs/backtest.md)")
    b.add_argument("--policy", action="append", help="policy name (config/policies/NAME.yaml) or YAML path; "
                   "repeat; default: every shipped policy")
    b.add_argument("--seed", type=int, action="append", help="world and policy seed; repeat (default 1 2 3)")
    b.add_argument("--days", type=int, default=60, help="live days replayed (default %(default)s)")
    b.add_argument("--history-days", type=int, default=180)
    b.add_argument("--per-day", type=int, default=300, help="declarations per day (average)")
    b.add_argument("--difficulty", choices=DIFFICULTIES, default=DEFAULT_DIFFICULTY)
    b.add_argument("--capacity", type=float, default=0.10, help="share of each office's declarations inspected "
                   "(default %(default)s), 40%% RED and 60%% YELLOW")
    b.add_argument("--workers", type=int, default=2, help="runs in parallel (default %(default)s)")
    b.add_argument("--kpi-daily", action="store_true", help="run the KPI report every day, as the DAG does (drift "
                   "can then request retrainings; slower); default: once after the last day")
    b.add_argument("--out", help="working folder (worlds, runs; finished runs are reused); default "
                   "<lake>/backtests/latest")
    b.add_argument("--json", help="where to write the figures (default OUT/backtest.json)")
    b.add_argument("--html", help="where to write the HTML summary (default OUT/backtest.html)")
    b.add_argument("--no-mlflow", action="store_true", help="do not log the backtest to MLflow")
    b.add_argument("--no-shared-ingest", action="store_true", help="every run ingests every source itself (the "
                   "same results, slower); default: the policy-independent sources once per seed and day")
    b.set_defaults(fn=cmd_backtest)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
