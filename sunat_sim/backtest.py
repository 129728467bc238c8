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
    # Ingest the policy-independent sources once per seed and day and give every run the result
    # (``backtest_shared``); off: every run ingests every source itself (the same results, slower).
    shared_ingest: bool = True

    def world_key(self, seed: int) -> dict:
        return {"seed": seed, "history_days": self.history_days, "live_days": self.live_days,
                "per_day": self.per_day, "difficulty": self.difficulty, "history_ingested": True}


def world_dir(workdir: Path, cfg: BacktestConfig, seed: int) -> Path:
    return Path(workdir) / "worlds" / f"seed-{seed}"


def run_dir(workdir: Path, seed: int, policy: str) -> Path:
    return Path(workdir) / "runs" / f"seed-{seed}" / policy


def shared_dir(workdir: Path, seed: int) -> Path:
    return Path(workdir) / "worlds" / f"seed-{seed}-shared"


def ingest_settings(lake: Path, seed: int):
    """The settings the shared ingest runs with: a run's, less its policy and capacity (which change no ingest
    setting of a shipped policy; a run checks with ``backtest_shared.compatible``)."""
    from sunat_pipeline.backtest.policies import apply

    base = get_settings(lake_root=lake, mlflow_tracking_uri=f"sqlite:///{lake.parent / 'unused-mlflow.db'}", seed=seed)
    return apply(base, {}, backtest=BACKTEST_OVERLAY)


def prepare_world(workdir: Path, cfg: BacktestConfig, seed: int) -> dict:
    """Generate the seed's world once (reused while its configuration is the same), and its shared ingest."""
    d = world_dir(workdir, cfg, seed)
    stamp = d / "world_key.json"
    key = cfg.world_key(seed)
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        summary = json.loads(stamp.read_text())["summary"]
    else:
        shutil.rmtree(shared_dir(workdir, seed), ignore_errors=True)  # made from the world replaced
        summary = _generate(d, cfg, seed, key)
    if cfg.shared_ingest:
        from sunat_sim import backtest_shared
        from sunat_sim.world import load_world_config

        backtest_shared.prepare(d, shared_dir(workdir, seed), lambda lake: ingest_settings(lake, seed),
                                load_world_config(d).live_dates, {"world": key, "overlay": BACKTEST_OVERLAY})
    return summary


def _generate(d: Path, cfg: BacktestConfig, seed: int, key: dict) -> dict:
    from sunat_pipeline import daily
    from sunat_pipeline.ingest.sources import SOURCES
    from sunat_sim.world import WorldConfig, generate

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
    (d / "world_key.json").write_text(json.dumps({"key": key, "summary": summary}, indent=2, default=str))
    print(f"[backtest] world seed {seed}: {summary['declarations']} declarations, fraud "
          f"{summary['fraud_rate_declarations']:.1%} of declarations; history ingested ({time.time() - t:.0f} s)",
          flush=True)
    return summary


def policy_settings(lake: Path, tracking_db: Path, policy, capacity: float, seed: int, workers: int = 1):
    """The pipeline's settings for one run: the base settings, the policy's overlay, the common capacity; each
    XGBoost fit gets the run's share of the cores (``workers`` runs at once: more threads than cores would make
    every fit wait on the others; the models are the same whatever the thread count)."""
    from sunat_pipeline.backtest.policies import apply, capacity_overlay

    base = get_settings(lake_root=lake, mlflow_tracking_uri=f"sqlite:///{tracking_db}", seed=seed)
    threads = {"training": {"n_jobs": max(1, (os.cpu_count() or 1) // max(1, workers))}}
    return apply(base, policy, capacity=capacity_overlay(capacity), backtest=BACKTEST_OVERLAY, threads=threads)


def run_policy(workdir: str, cfg_dict: dict, seed: int, policy_name: str) -> dict:
    """One closed-loop replay of the live period (runs in a worker process)."""
    from sunat_pipeline import daily
    from sunat_pipeline.backtest.policies import load_policy
    from sunat_pipeline.logs import setup
    from sunat_sim import backtest_shared
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
    settings = policy_settings(lake, rdir / "mlflow.db", policy, cfg.capacity, seed, cfg.workers)
    days = load_world_config(lake).live_dates
    shared = shared_dir(Path(workdir), seed) if cfg.shared_ingest and backtest_shared.compatible(
        settings, ingest_settings(lake, seed)) else None
    t0, per_day, trainings = time.time(), [], []
    for i, day in enumerate(days, 1):
        t = time.time()
        if shared is not None:
            backtest_shared.apply(shared, day, lake)
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
    """Every (seed, policy) run spread over ``cfg.workers`` processes: each seed's world (and shared ingest)
    first, then its runs, the policies that train models before the rules-only ones (the longest first)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks = [(seed, p) for seed in cfg.seeds for p in _longest_first(cfg.policies)]
    print(f"[backtest] {len(tasks)} runs ({len(cfg.policies)} policies x {len(cfg.seeds)} seeds x {cfg.live_days} "
          f"live days) on {cfg.workers} worker(s)", flush=True)
    results = []
    if cfg.workers <= 1:
        for seed in cfg.seeds:
            prepare_world(workdir, cfg, seed)
        for seed, p in tasks:
            results.append(run_policy(str(workdir), asdict(cfg), seed, p))
            _progress(results, len(tasks), t0, cfg.workers)
    else:
        # The workers already use the cores: one thread each for OpenMP libraries (XGBoost's fits get their
        # share explicitly, ``policy_settings``).
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=cfg.workers) as ex:
            worlds = {ex.submit(prepare_world, workdir, cfg, seed): seed for seed in cfg.seeds}
            pending = set(worlds)
            while pending:
                f = next(as_completed(pending))
                pending.discard(f)
                if f in worlds:  # a seed's world is ready: its runs join the queue
                    f.result()
                    pending |= {ex.submit(run_policy, str(workdir), asdict(cfg), s, p) for s, p in tasks
                                if s == worlds[f]}
                else:
                    results.append(f.result())
                    _progress(results, len(tasks), t0, cfg.workers)
    order = {(s, p): i for i, (s, p) in enumerate((s, p) for s in cfg.seeds for p in cfg.policies)}
    return sorted(results, key=lambda r: order[(r["seed"], r["policy"])])


def _longest_first(policies: list[str]) -> list[str]:
    """Policies that train models take two to three times as long as rules-only ones: started first, they do
    not leave one worker finishing a long run alone at the end."""
    from sunat_pipeline.backtest.policies import load_policy

    base = get_settings()
    return sorted(policies, key=lambda p: not load_policy(base, p).settings.get("training", {}).get("enabled", True))


def _progress(done: list[dict], total: int, t0: float, workers: int) -> None:
    """A finished run, and the time left: the runs left at the mean run time so far, spread over the workers."""
    el, r = time.time() - t0, done[-1]
    left = (total - len(done)) * sum(d["seconds"] for d in done) / len(done) / max(1, workers)
    print(f"[backtest] run {len(done)}/{total} done: seed {r['seed']} {r['policy']} in {r['seconds']:.0f} s "
          f"({el / 60:.1f} min elapsed, ~{left / 60:.0f} min left)", flush=True)
