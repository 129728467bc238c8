"""`sunat-pipeline` command line: run days, evaluate on external data, operate models, weights and overrides.

The synthetic world and the inspection simulator have their own command, ``sunat-sim``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date

from sunat_pipeline.logs import setup
from sunat_pipeline.settings import get_settings

log = logging.getLogger("sunat_pipeline.cli")


def _date(s: str) -> date:
    return date.fromisoformat(s)


def cmd_run_day(a) -> int:
    from sunat_pipeline.orchestration.runner import run_dag

    s = get_settings()
    t = time.time()
    run_dag(s, a.dag, a.date, quiet=not a.verbose)
    print(f"{a.dag} {a.date}: success in {time.time() - t:.0f} s")
    return 0


def cmd_ingest(a) -> int:
    """What the DAG's ingest tasks run, for one source or all; a rejected file is an outcome, not an error."""
    from sunat_pipeline import ingest
    from sunat_pipeline.ingest.sources import SOURCES

    if a.source and a.source not in SOURCES:
        print(f"unknown source {a.source!r}; known: {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    s = get_settings()
    print("source\tfile\tstatus\trows\treport")
    counts: dict[str, int] = {}
    for source in [a.source] if a.source else list(SOURCES):
        for o in ingest.ingest_source(s, source, a.date):
            counts[o.status] = counts.get(o.status, 0) + 1
            print(f"{source}\t{o.name}\t{o.status}\t{o.rows}\t{o.report or o.detail}")
    print(f"{sum(counts.values())} files up to {a.date}: {counts or 'none landed'}; Data Docs: "
          f"{ingest.data_docs_index(s)}")
    return 0


def cmd_tax_month(a) -> int:
    """The monthly tax run in this process (what the sunat_tax_monthly DAG's tasks run, in order)."""
    from sunat_pipeline.tax import monthly

    t = time.time()
    out = monthly.run_month(get_settings(), a.month)
    lst = out["audit_list"]
    print(f"tax month {a.month}: listed {lst['listed']} taxpayers over {lst['offices']} offices {lst['by_reason']} "
          f"-> {lst['path']} ({time.time() - t:.0f} s)")
    return 0


def cmd_weights_history(a) -> int:
    from sunat_pipeline.feedback.weights import weights_history

    h = weights_history(get_settings())
    if a.rule:
        h = h[h.rule_id.isin(a.rule)]
    if a.last and len(h):
        h = h[h.version.isin(sorted(h.version.unique())[-a.last:])]
    print(h.to_csv(index=False) if a.format == "csv" else h.to_json(orient="records", indent=2)
          if a.format == "json" else h.to_string(index=False) if len(h) else "(no weights version yet)")
    return 0


def cmd_pin(a) -> int:
    from sunat_pipeline.modeling.registry import pin_champion

    pin_champion(get_settings(), a.version)
    print(f"champion -> version {a.version}")
    return 0


def cmd_evaluate(a) -> int:
    from pathlib import Path

    from sunat_pipeline.modeling.evaluate import evaluate

    res = evaluate(a.mapping, a.train, a.test, settings=get_settings(), budget_s=a.budget_s, max_trials=a.max_trials,
                   do_search=not a.no_search, seed=a.seed, bag_size=a.bag_size, n_jobs=a.n_jobs)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: res[k] for k in ("n_train", "n_test", "precision_at_1", "precision_at_5", "precision_at_10",
                                           "recall_at_5", "roc_auc", "seconds")}, indent=2))
    return 0


def cmd_backtest(a) -> int:
    from pathlib import Path

    from sunat_pipeline.backtest.external import DEFAULT_POLICIES, run_backtest, summary_lines

    # One line a week per policy is the progress; the per-call lines of selection and features would bury it.
    for noisy in ("sunat_pipeline.selection", "sunat_pipeline.features"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = run_backtest(a.mapping, a.data, a.policy or DEFAULT_POLICIES, labelled_weeks=a.labelled_weeks,
                       capacity=a.capacity, seed=a.seed, settings=get_settings(), bag_size=a.bag_size,
                       n_jobs=a.n_jobs, max_weeks=a.max_weeks, reveal_all=a.reveal_all,
                       progress=lambda m: print(m, file=sys.stderr, flush=True))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=str))
    print("\n".join(summary_lines(res)))
    print(f"{a.json}: {len(res['policies'])} policies in {res['seconds']:.0f} s")
    return 0


def cmd_override(a) -> int:
    from sunat_pipeline.selection.overrides import record

    try:
        rec = record(get_settings(), a.declaration, a.channel, a.officer, a.why, day=a.date)
    except (LookupError, ValueError) as e:
        print(str(e).strip("'\""), file=sys.stderr)
        return 2
    print(json.dumps(rec, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(prog="sunat-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run-day", help="run (or re-run) one day through Airflow")
    r.add_argument("--date", type=_date, required=True)
    r.add_argument("--dag", default="sunat_daily")
    r.add_argument("--verbose", action="store_true", help="stream Airflow's output")
    r.set_defaults(fn=cmd_run_day)
    ig = sub.add_parser("ingest", help="ingest the files landed up to a day (what the DAG's ingest tasks run)")
    ig.add_argument("--date", type=_date, required=True, help="ingest every file available up to this day")
    ig.add_argument("--source", help="only this source (default: every source)")
    ig.set_defaults(fn=cmd_ingest)
    tm = sub.add_parser("tax-month", help="run (or re-run) the monthly tax audit selection for a month, in process")
    tm.add_argument("--month", required=True, help="the processed month, YYYY-MM (its cutoff: the 1st of the next)")
    tm.set_defaults(fn=cmd_tax_month)
    pc = sub.add_parser("pin-champion", help="rollback: point @champion at an earlier model version")
    pc.add_argument("--version", required=True)
    pc.set_defaults(fn=cmd_pin)
    wh = sub.add_parser("weights-history", help="rule-weight versions: each rule's weight and evidence per version")
    wh.add_argument("--rule", action="append", help="only this rule id (repeatable)")
    wh.add_argument("--last", type=int, default=None, help="only the last N versions")
    wh.add_argument("--format", choices=["table", "csv", "json"], default="table")
    wh.set_defaults(fn=cmd_weights_history)
    ev = sub.add_parser("evaluate", help="offline: the production features and model trained on external labelled "
                        "files, scored on a test file")
    ev.add_argument("--mapping", required=True, help="column mapping to the canonical schema (mappings/*.yaml)")
    ev.add_argument("--train", required=True, action="append", help="training CSV (repeat for several)")
    ev.add_argument("--test", required=True, help="test CSV (read once, for the final figures)")
    ev.add_argument("--json", required=True, help="where to write the results")
    ev.add_argument("--budget-s", type=float, default=None, help="time budget of the hyperparameter search (default: "
                    "evaluate.SEARCH_BUDGET_S)")
    ev.add_argument("--max-trials", type=int, default=None, help="at most this many search trials (default: "
                    "settings.training.search_max_trials)")
    ev.add_argument("--no-search", action="store_true", help="use the parameters of settings.training")
    ev.add_argument("--bag-size", type=int, default=None, help="default: settings.training.bag_size")
    ev.add_argument("--n-jobs", type=int, default=2)
    ev.add_argument("--seed", type=int, default=None, help="default: settings.seed")
    ev.set_defaults(fn=cmd_evaluate)
    bt = sub.add_parser("backtest", help="offline: selection policies replayed week by week on an external labelled, "
                        "timestamped extract (labels revealed only for what each policy selects)")
    bt.add_argument("--mapping", required=True, help="column mapping to the canonical schema (mappings/*.yaml)")
    bt.add_argument("--data", required=True, action="append", help="labelled CSV (repeat; rows are put in time order)")
    bt.add_argument("--labelled-weeks", type=int, default=4, help="first weeks fully labelled (default 4)")
    bt.add_argument("--capacity", type=float, default=0.10, help="share of each week's declarations inspected")
    bt.add_argument("--policy", action="append", help="policy name (config/policies/) or YAML path; repeat "
                    "(default: random, exploit, hybrid)")
    bt.add_argument("--json", required=True, help="where to write the results")
    bt.add_argument("--seed", type=int, default=None, help="default: settings.seed")
    bt.add_argument("--max-weeks", type=int, default=None, help="stop after this many weeks (a quick look)")
    bt.add_argument("--bag-size", type=int, default=None, help="default: settings.training.bag_size")
    bt.add_argument("--n-jobs", type=int, default=2)
    bt.add_argument("--reveal-all", action="store_true", help="diagnostic: reveal every label of each week, not only "
                    "the selected (what the model could reach with full information)")
    bt.set_defaults(fn=cmd_backtest)
    ov = sub.add_parser("override", help="record an officer's override of a declaration's channel (who and why)")
    ov.add_argument("--declaration", required=True, help="declaration id (DAM)")
    ov.add_argument("--channel", required=True, type=str.upper, choices=["RED", "YELLOW", "GREEN"])
    ov.add_argument("--officer", required=True, help="who overrides")
    ov.add_argument("--why", required=True, help="why, in plain language")
    ov.add_argument("--date", type=_date, default=None, help="declaration date (default: looked up)")
    ov.set_defaults(fn=cmd_override)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
