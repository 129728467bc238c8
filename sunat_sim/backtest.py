"""Policy backtest on the synthetic world: replay the live period day by day, closed loop, once per policy.

For each seed a world is generated once (landing extracts + ground truth) and its history ingested once (up to
the last history day every policy's lake is the same). Each (seed, policy) run then gets its own copy of that
lake and its own MLflow store, and replays every live
day through the pipeline's own daily steps (``sunat_pipeline.daily.run_day``: ingest, reconcile, scheduled
retraining, scoring and selection, feedback, KPIs) with the policy's settings overlay
(``config/policies/*.yaml``) and the same capacity (a share of each office's recent volume). After each day
the inspection simulator plays the officers on what *that* policy selected, so a policy learns only from its
own selections. Same world seed, same inspection draws: policies are compared on common random numbers.

Evaluation (``backtest_metrics``) reads the truth afterwards; no policy ever reads it. Runs go to worker
processes (``workers``), each run is deterministic, and a run that finished is reused when the backtest is
run again with the same configuration (``result.json`` in its folder).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sunat_pipeline.settings import get_settings
from sunat_sim.config import DEFAULT_DIFFICULTY

log = logging.getLogger(__name__)
# What a backtest switches off: plots and validation pages nobody opens (the runs' lakes and MLflow stores are
# scratch); the validations themselves run as in production.
BACKTEST_OVERLAY = {"training": {"log_plots": False}, "ingest": {"data_docs": False}}


@dataclass
class BacktestConfig:
    policies: list[str]
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    live_days: int = 60
    history_days: int = 180
    per_day: int = 300
    capacity: float = 0.10
    difficulty: str = DEFAULT_DIFFICULTY
    workers: int = 2
    # The KPI report is not a step the next day depends on (bar drift's retraining requests): by default it runs
    # once, after the last day, for the pipeline's own estimates.
    kpi_daily: bool = False

    def world_key(self, seed: int) -> dict:
        return {"seed": seed, "history_days": self.history_days, "live_days": self.live_days,
                "per_day": self.per_day, "difficulty": self.difficulty, "history_ingested": True}


def world_dir(workdir: Path, cfg: BacktestConfig, seed: int) -> Path:
    return Path(workdir) / "worlds" / f"seed-{seed}"


def run_dir(workdir: Path, seed: int, policy: str) -> Path:
    return Path(workdir) / "runs" / f"seed-{seed}" / policy


def prepare_world(workdir: Path, cfg: BacktestConfig, seed: int) -> dict:
    """Generate the seed's world once (reused while its configuration is the same)."""
    from sunat_pipeline import daily
    from sunat_pipeline.ingest.sources import SOURCES
    from sunat_sim.world import WorldConfig, generate

    d = world_dir(workdir, cfg, seed)
    stamp = d / "world_key.json"
    key = cfg.world_key(seed)
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        return json.loads(stamp.read_text())["summary"]
    shutil.rmtree(d, ignore_errors=True)
    t = time.time()
    wcfg = WorldConfig(seed=seed, history_days=cfg.history_days, live_days=cfg.live_days,
                       declarations_per_day=cfg.per_day, difficulty=cfg.difficulty)
    summary = generate(wcfg, d)
    # Up to the last day of history every policy's lake is the same: ingest the history once per world (the
    # pipeline's own ingest step), and let each run start from a copy.
    hist = get_settings(lake_root=d, mlflow_tracking_uri=f"sqlite:///{d / 'unused-mlflow.db'}")
    for source in SOURCES:
        daily.ingest(hist, source, wcfg.last_history_date)
    stamp.write_text(json.dumps({"key": key, "summary": summary}, indent=2, default=str))
    print(f"[backtest] world seed {seed}: {summary['declarations']} declarations, fraud "
          f"{summary['fraud_rate_declarations']:.1%} of declarations; history ingested ({time.time() - t:.0f} s)",
          flush=True)
    return summary


def policy_settings(lake: Path, tracking_db: Path, policy, capacity: float, seed: int):
    """The pipeline's settings for one run: the base settings, the policy's overlay, the common capacity."""
    from sunat_pipeline.backtest.policies import apply, capacity_overlay

    base = get_settings(lake_root=lake, mlflow_tracking_uri=f"sqlite:///{tracking_db}", seed=seed)
    return apply(base, policy, capacity=capacity_overlay(capacity), backtest=BACKTEST_OVERLAY)


def run_policy(workdir: str, cfg_dict: dict, seed: int, policy_name: str) -> dict:
    """One closed-loop replay of the live period (runs in a worker process)."""
    from sunat_pipeline import daily
    from sunat_pipeline.backtest.policies import load_policy
    from sunat_pipeline.logs import setup
    from sunat_sim.inspection import inspect_day
    from sunat_sim.world import load_world_config

    setup(logging.WARNING)
    for name in ("", "sunat_pipeline", "sunat_sim"):  # a forked worker inherits the parent's INFO level
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = BacktestConfig(**cfg_dict)
    rdir = run_dir(Path(workdir), seed, policy_name)
    policy = load_policy(get_settings(), policy_name)
    key = {"world": cfg.world_key(seed), "policy": asdict(policy), "capacity": cfg.capacity,
           "kpi_daily": cfg.kpi_daily, "overlay": BACKTEST_OVERLAY}
    done = rdir / "result.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    shutil.rmtree(rdir, ignore_errors=True)
    wdir = world_dir(Path(workdir), cfg, seed)
    lake = rdir / "data"
    shutil.copytree(wdir, lake, ignore=shutil.ignore_patterns("world_key.json", "unused-mlflow.db*"))
    settings = policy_settings(lake, rdir / "mlflow.db", policy, cfg.capacity, seed)
    days = load_world_config(lake).live_dates
    t0, per_day, trainings = time.time(), [], []
    for i, day in enumerate(days, 1):
        t = time.time()
        out = daily.run_day(settings, day, kpi=cfg.kpi_daily)
        insp = inspect_day(settings, day)
        tr = out["train_if_due"]
        if tr.get("trained"):
            trainings.append({"date": day.isoformat(), "version": tr.get("version"), "promoted": tr.get("promoted"),
                              "reason": tr.get("reason"), "decision": tr.get("decision", {})})
        per_day.append({"date": day.isoformat(), "channels": out["score"]["channels"],
                        "reasons": out["score"]["selection_reasons"], "model_version": out["score"]["model_version"],
                        "frauds_found": insp["frauds_found"], "seconds": round(time.time() - t, 2)})
        if i == 1 or i % 10 == 0 or i == len(days):
            found = sum(d["frauds_found"] for d in per_day)
            print(f"[backtest] seed {seed} {policy_name:<18} day {i}/{len(days)} {day}: {found} frauds found so far "
                  f"({time.time() - t0:.0f} s)", flush=True)
    if not cfg.kpi_daily:
        daily.kpi_report(settings, days[-1])
    res = {"key": key, "seed": seed, "policy": policy_name, "lake": str(lake), "tracking_db": str(rdir / "mlflow.db"),
           "days": per_day, "trainings": trainings, "seconds": round(time.time() - t0, 1)}
    done.write_text(json.dumps(res, indent=2, default=str))
    return res


def run(cfg: BacktestConfig, workdir: Path) -> list[dict]:
    """Every (seed, policy) run; worlds first, then the runs spread over ``cfg.workers`` processes."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for seed in cfg.seeds:
        prepare_world(workdir, cfg, seed)
    tasks = [(seed, p) for seed in cfg.seeds for p in cfg.policies]
    print(f"[backtest] {len(tasks)} runs ({len(cfg.policies)} policies x {len(cfg.seeds)} seeds x {cfg.live_days} "
          f"live days) on {cfg.workers} worker(s)", flush=True)
    results = []
    if cfg.workers <= 1:
        for seed, p in tasks:
            results.append(run_policy(str(workdir), asdict(cfg), seed, p))
            _progress(len(results), len(tasks), t0, results[-1])
    else:
        # One XGBoost thread per worker: the workers already use the cores.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=cfg.workers) as ex:
            futs = [ex.submit(run_policy, str(workdir), asdict(cfg), seed, p) for seed, p in tasks]
            for f in as_completed(futs):
                results.append(f.result())
                _progress(len(results), len(tasks), t0, results[-1])
    order = {(s, p): i for i, (s, p) in enumerate(tasks)}
    return sorted(results, key=lambda r: order[(r["seed"], r["policy"])])


def _progress(done: int, total: int, t0: float, r: dict) -> None:
    el = time.time() - t0
    eta = el / done * (total - done)
    print(f"[backtest] run {done}/{total} done: seed {r['seed']} {r['policy']} in {r['seconds']:.0f} s "
          f"({el / 60:.1f} min elapsed, ~{eta / 60:.1f} min left)", flush=True)
