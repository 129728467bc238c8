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
                       live_days=a.live_days, declarations_per_day=a.per_day, difficulty=a.difficulty, **kw)


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


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(prog="sunat-sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate the synthetic world into the landing zone")
    _world_options(g, None)
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
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
