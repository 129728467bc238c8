"""
### SUNAT policy backtest (synthetic world)

Triggered by hand (no schedule). Replays a synthetic world's live period once per selection policy, closed
loop and at equal capacity, through the same daily pipeline the `sunat_daily` DAG runs, and compares the
policies on the world's ground truth: hit rate, frauds caught, revenue recovered, Norm-Rev, recall per fraud
mechanism, days to detect each new scheme, with paired 95% intervals (docs/backtest.md).

It runs the simulator's command `sunat-sim backtest` (the product never imports the simulator) with the
Params below. Outputs: `<lake>/backtests/<run id>/backtest.json` and `backtest.html`, and a parent run with a
child per policy and seed in the MLflow experiment `policy-backtest`. Policies are the YAML overlays in
`config/policies/` (add a file to add a policy). Six policies x three seeds x 60 days take about 30 minutes
on two cores; the task shows progress in its log.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="sunat_backtest",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=9),  # the task's 4 h and one retry
    # A retry resumes: runs that finished are reused from the run's folder.
    default_args={"owner": "risk-targeting", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "policies": Param([], type="array", items={"type": "string"},
                          description="policy names (config/policies/NAME.yaml) or paths to policy YAML files; "
                          "empty: every shipped policy"),
        "seeds": Param([1, 2, 3], type="array", items={"type": "integer"}, description="world and policy seeds"),
        "days": Param(60, type="integer", minimum=1, description="live days replayed"),
        "capacity": Param(0.10, type="number", exclusiveMinimum=0, maximum=1,
                          description="share of each office's declarations inspected (40% RED, 60% YELLOW)"),
        "history_days": Param(180, type="integer", minimum=30, description="days of history before the live period"),
        "per_day": Param(300, type="integer", minimum=10, description="declarations a day"),
        "workers": Param(2, type="integer", minimum=1, description="runs in parallel"),
    },
    tags=["sunat", "backtest", "policy"],
    doc_md=__doc__,
)
def sunat_backtest():
    @task(execution_timeout=timedelta(hours=4))
    def backtest(**context) -> dict:
        import json
        import logging
        import subprocess
        import sys

        from sunat_pipeline.settings import get_settings

        log = logging.getLogger("sunat.backtest")
        p = context["params"]
        out = get_settings().lake / "backtests" / context["run_id"].replace(":", "_").replace("+", "_")
        cmd = [sys.executable, "-m", "sunat_sim.cli", "backtest", "--days", str(p["days"]), "--capacity",
               str(p["capacity"]), "--history-days", str(p["history_days"]), "--per-day", str(p["per_day"]),
               "--workers", str(p["workers"]), "--out", str(out)]
        for pol in p["policies"]:
            cmd += ["--policy", str(pol)]
        for s in p["seeds"]:
            cmd += ["--seed", str(int(s))]
        log.info("running: %s", " ".join(cmd))
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:  # progress lines into the task log as they come
                if line.startswith("[backtest]") or "PASS" in line or "FAIL" in line or not line.startswith("20"):
                    log.info(line.rstrip())
        if proc.returncode != 0:
            raise RuntimeError(f"sunat-sim backtest failed with exit code {proc.returncode}")
        summary = json.loads((out / "backtest.json").read_text())
        return {"json": str(out / "backtest.json"), "html": str(out / "backtest.html"),
                "bars": {b["bar"]: b["pass"] for b in summary["bars"]}, "minutes": round(summary["seconds"] / 60, 1)}

    backtest()


sunat_backtest()
