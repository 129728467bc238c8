"""`sunat-sim` command line: generate the synthetic world, play the inspections, run the demo."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date

from sunat_pipeline.logs import setup
from sunat_pipeline.settings import get_settings
from sunat_sim.world import truth_dir


def _date(s: str) -> date:
    return date.fromisoformat(s)


def cmd_generate(a) -> int:
    from sunat_sim.world import WorldConfig, generate

    s = get_settings()
    if (s.landing.exists() or truth_dir(s.lake).exists()) and not a.force:
        print(f"a world already exists under {s.lake}; use --force to replace it (this deletes the lake)",
              file=sys.stderr)
        return 2
    if a.force and s.lake.exists():
        shutil.rmtree(s.lake)
    cfg = WorldConfig(seed=a.seed if a.seed is not None else s.seed, start_date=a.start, history_days=a.history_days,
                      live_days=a.live_days, declarations_per_day=a.per_day, min_delay_days=a.min_delay,
                      max_delay_days=a.max_delay)
    print(json.dumps(generate(cfg, s.lake), indent=2))
    return 0


def cmd_inspect(a) -> int:
    from sunat_sim.inspection import inspect_day

    print(json.dumps(inspect_day(get_settings(), a.date), indent=2))
    return 0


def cmd_summary(a) -> int:
    from sunat_sim import demo

    demo.print_summary(get_settings())
    return 0


def cmd_demo(a) -> int:
    from sunat_sim import demo

    return demo.run(get_settings(), history_days=a.history_days, live_days=a.live_days, per_day=a.per_day,
                    seed=a.seed)


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(prog="sunat-sim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate the synthetic world into the landing zone")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--start", type=_date, default=date(2026, 1, 1))
    g.add_argument("--history-days", type=int, default=180)
    g.add_argument("--live-days", type=int, default=14)
    g.add_argument("--per-day", type=int, default=300, help="declarations per day")
    g.add_argument("--min-delay", type=int, default=1, help="min days before an inspection result is reported")
    g.add_argument("--max-delay", type=int, default=5)
    g.add_argument("--force", action="store_true", help="replace an existing lake")
    g.set_defaults(fn=cmd_generate)
    i = sub.add_parser("inspect", help="simulate the inspections of a scored day")
    i.add_argument("--date", type=_date, required=True)
    i.set_defaults(fn=cmd_inspect)
    d = sub.add_parser("demo", help="generate a world and run its live days through Airflow")
    d.add_argument("--history-days", type=int, default=180)
    d.add_argument("--live-days", type=int, default=14)
    d.add_argument("--per-day", type=int, default=300)
    d.add_argument("--seed", type=int, default=42)
    d.set_defaults(fn=cmd_demo)
    sub.add_parser("summary", help="print the per-day summary").set_defaults(fn=cmd_summary)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
