"""Policy backtest on the synthetic world: policies as settings overlays, paired intervals, truth metrics, and a
small closed-loop replay end to end (JSON, HTML, MLflow), reused and deterministic."""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from sunat_pipeline.backtest import policies as P
from sunat_pipeline.backtest.stats import paired_difference, paired_ratio
from sunat_pipeline.settings import get_settings
from sunat_sim import backtest, backtest_metrics, backtest_report

TINY = {"seeds": [5], "live_days": 3, "history_days": 40, "per_day": 60, "difficulty": "easy", "workers": 1}


# --- policies ---------------------------------------------------------------------------------------

def test_every_shipped_policy_loads_and_changes_what_it_says():
    s = get_settings()
    assert set(P.SHIPPED) <= set(P.available(s))
    got = {n: P.apply(s, P.load_policy(s, n), cap=P.capacity_overlay(0.1)) for n in P.SHIPPED}
    assert got["random"].selection.random_share == 1.0 and not got["random"].selection.mandatory_rules
    assert got["legacy_rules"].selection.rule_weights == "file" and got["legacy_rules"].selection.scorer == "rules"
    assert got["rules_learned"].selection.rule_weights == "learned"
    assert got["exploit"].selection.random_share == 0 and got["exploit"].selection.exploration_share == 0
    assert got["hybrid_no_explore"].selection.exploration_share == 0
    assert got["hybrid"].selection == s.selection.model_copy(update={
        "capacity": {}, "default_capacity_mode": "volume", "red_share": 0.04, "yellow_share": 0.06})
    # equal capacity for every policy
    assert len({(g.selection.red_share, g.selection.yellow_share) for g in got.values()}) == 1


def test_a_user_policy_is_a_file_and_a_bad_one_is_named(tmp_path):
    s = get_settings()
    good = tmp_path / "half_random.yaml"
    good.write_text("description: half random\nsettings:\n  selection: {random_share: 0.5}\n")
    assert P.apply(s, P.load_policy(s, str(good))).selection.random_share == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings:\n  selection: {random_share: 3}\n")
    with pytest.raises(ValueError, match="policy bad"):
        P.load_policy(s, str(bad))
    with pytest.raises(FileNotFoundError, match="no policy"):
        P.load_policy(s, "no_such_policy")
    with pytest.raises(ValueError):
        P.capacity_overlay(0)


# --- paired intervals -------------------------------------------------------------------------------

def test_paired_ratio_interval_brackets_the_truth_and_separates_a_real_difference():
    rng = np.random.default_rng(0)
    b = rng.poisson(5, size=120).astype(float)
    a = 2 * b + rng.poisson(1, size=120)
    groups = np.repeat([1, 2, 3], 40)
    r = paired_ratio(a, b, groups)
    assert r["ratio"] == pytest.approx(a.sum() / b.sum(), abs=1e-4)
    assert 1 < r["ci95"][0] < r["ratio"] < r["ci95"][1]
    same = paired_ratio(b, b, groups)
    assert same["ratio"] == 1 and same["ci95"] == [1, 1]
    noise = paired_difference(rng.poisson(5, 120), rng.poisson(5, 120), groups)
    assert noise["ci95"][0] < 0 < noise["ci95"][1]
    with pytest.raises(ValueError):
        paired_ratio([1, 2], [1], None)


# --- truth metrics on a hand-made run ---------------------------------------------------------------

def test_oracle_takes_as_many_declarations_as_the_policy_selected_per_day_and_office():
    d = pd.DataFrame({"declaration_id": list("abcdef"), "day": ["d1"] * 4 + ["d2"] * 2,
                      "office": ["1", "1", "1", "2", "1", "1"], "selected": [True, False, False, True, False, False],
                      "stake": [1.0, 50.0, 20.0, 7.0, 9.0, 3.0]})
    o = backtest_metrics.oracle_revenue(d)
    # d1: office 1 selected one -> the best stake (50); office 2 one -> 7; d2 selected none -> nothing
    assert o.to_dict() == {"d1": 57.0}


# --- a small closed loop end to end -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_backtest(tmp_path_factory):
    work = tmp_path_factory.mktemp("backtest")
    cfg = backtest.BacktestConfig(policies=["random", "hybrid"], **TINY)
    results = backtest.run(cfg, work / "work")
    return cfg, work, results


def test_each_policy_replays_every_live_day_on_its_own_lake(tiny_backtest):
    cfg, work, results = tiny_backtest
    assert [(r["seed"], r["policy"]) for r in results] == [(5, "random"), (5, "hybrid")]
    for r in results:
        assert len(r["days"]) == cfg.live_days
        scored = sorted(p.name for p in (backtest.run_dir(work / "work", 5, r["policy"]) / "data" / "gold" /
                                         "scored_declarations").glob("declaration_date=*"))
        assert len(scored) == cfg.live_days
    rnd, hyb = results
    # random: only random picks and no model; hybrid: the champion scored and rules went first
    assert all(set(d["reasons"]) <= {"random", "none"} and d["model_version"] == "rules" for d in rnd["days"])
    assert hyb["trainings"] and all(d["model_version"] != "rules" for d in hyb["days"])
    assert any(d["reasons"].get("mandatory_rule", 0) or d["reasons"].get("exploitation", 0) for d in hyb["days"])
    # a policy sees only its own inspections: the enforcement files of its lake are its own
    for r in results:
        lake = backtest.run_dir(work / "work", 5, r["policy"]) / "data"
        insp = pd.concat([pd.read_csv(f, dtype={"declaration_id": str}) for f in
                          (lake / "landing" / "enforcement").glob("*__insp*.csv")])
        sc = pd.read_parquet(lake / "gold" / "scored_declarations", columns=["declaration_id", "channel"])
        selected = set(sc.declaration_id[sc.channel != "GREEN"])
        assert set(insp.declaration_id) <= selected


def test_summary_json_html_and_mlflow(tiny_backtest, tmp_path):
    cfg, work, results = tiny_backtest
    summary = backtest_report.summarise(cfg, results, 1.0)
    for p in ("random", "hybrid"):
        t = summary["policies"][p]
        for k in ("hit_rate", "frauds_caught", "revenue_recovered_usd", "norm_rev", "recall", "recall_by_mechanism",
                  "schemes", "scorer_roc_auc_all_items", "efficiency_index_est", "green_fraud_rate_true"):
            assert k in t, k
        run = summary["runs"][p]["5"]
        assert run["frauds_caught"] <= run["fraud_items"] and 0 <= (run["norm_rev"] or 0) <= 1
        assert len(run["daily"]["day"]) == cfg.live_days
    comp = backtest_report.find(summary["comparisons"], "hybrid", "random")
    assert comp["frauds_caught"]["units"] == cfg.live_days and len(comp["frauds_caught"]["ci95"]) == 2
    assert any("random" in b["bar"] for b in summary["bars"])
    # the speed figure carries the machine it was measured on
    assert summary["machine"]["logical_cpus"] == os.cpu_count() and summary["machine"]["cpu"]
    page = backtest_report.render_html(summary).decode()
    assert "Policy backtest" in page and page.count("data:image/png;base64") == 3
    assert f"({os.cpu_count()} logical CPUs)" in page and summary["machine"]["cpu"] in page
    assert summary["machine"]["cpu"] in backtest_report.format_table(summary).splitlines()[-1]
    js = tmp_path / "b.json"
    js.write_text(json.dumps(summary, default=str))
    ht = tmp_path / "b.html"
    ht.write_text(page)
    s = get_settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = backtest_report.log_mlflow(s, summary, js, ht)
    c = mlflow.MlflowClient(s.tracking_uri)
    exp = c.get_experiment_by_name(backtest_report.EXPERIMENT)
    children = c.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert sorted(r.data.tags["policy"] for r in children) == ["hybrid", "random"]
    assert all("frauds_caught" in r.data.metrics for r in children)
    parent = c.get_run(run_id)
    assert parent.data.tags["machine_cpu"] == summary["machine"]["cpu"]
    # the parent run lasts as long as the backtest did, not as long as logging it took
    assert parent.info.end_time - parent.info.start_time >= summary["seconds"] * 1000


def test_a_finished_run_is_reused_and_a_replay_is_deterministic(tiny_backtest, tmp_path):
    cfg, work, results = tiny_backtest
    again = backtest.run(cfg, work / "work")  # reused from result.json
    assert [r["seconds"] for r in again] == [r["seconds"] for r in results]
    fresh = backtest.run(backtest.BacktestConfig(policies=["random"], **TINY), tmp_path / "work")
    a = backtest_metrics.run_metrics(results[0]["lake"])
    b = backtest_metrics.run_metrics(fresh[0]["lake"])
    assert a["daily"] == b["daily"] and a["frauds_caught"] == b["frauds_caught"]


def test_the_airflow_dag_runs_the_same_backtest_with_its_params(tmp_path):
    from datetime import date

    from sunat_pipeline.orchestration.runner import run_dag

    s = get_settings(lake_root=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                     airflow_home=tmp_path / "airflow")
    conf = {"policies": ["random"], "seeds": [5], "days": 2, "history_days": 40, "per_day": 60, "workers": 1,
            "capacity": 0.1}
    run_dag(s, "sunat_backtest", date(2026, 11, 1), conf=conf)
    out = list((s.lake / "backtests").glob("*/backtest.json"))
    assert len(out) == 1
    summary = json.loads(out[0].read_text())
    assert summary["config"]["policies"] == ["random"] and summary["config"]["live_days"] == 2
    assert (out[0].parent / "backtest.html").exists()
    c = mlflow.MlflowClient(s.tracking_uri)
    assert c.get_experiment_by_name(backtest_report.EXPERIMENT) is not None


def test_gate_agreement_counts_what_each_wrong_decision_cost(tmp_path):
    """Each gate beside the truth's choice: agreement, the true share lost when wrong (regret), and the agreement
    where the two models truly differ by at least MATERIAL."""
    lake = tmp_path / "data"
    n = 100
    ids = [f"D{i:03d}" for i in range(n)]
    fraud = np.zeros(n, bool)
    fraud[:20] = True
    rev = np.where(fraud, 100.0, 0.0)
    rev[0] = 1000.0  # one large fraud: whoever ranks it in its top 10 captures most
    (lake / "world_truth").mkdir(parents=True)
    pd.DataFrame({"declaration_id": ids, "item_no": 1, "is_fraud": fraud, "revenue_at_stake_usd": rev}).to_parquet(
        lake / "world_truth" / "items.parquet")
    good, bad = -np.arange(n, dtype=float), np.arange(n, dtype=float)  # good ranks the frauds first
    for day, (ch, cp, promoted) in {"2026-07-07": (good, bad, True), "2026-07-14": (bad, good, True),
                                    "2026-07-21": (good, good + 0.0, False)}.items():
        d = lake / "gold" / "champion_gate" / f"training_date={day}"
        d.mkdir(parents=True)
        pd.DataFrame({"declaration_id": ids, "item_no": 1, "challenger": ch, "champion": cp}).to_parquet(
            d / "items.parquet")
        (d / "decision.json").write_text(json.dumps({"promoted": promoted, "promotion_margin": 0.0,
                                                     "all_traffic": {"method": "ipw_all_traffic"}}))
    g = backtest_metrics.gate_agreement(lake)
    assert (g["decisions"], g["agree"], g["truth_promotes"]) == (3, 1, 2)  # a tie: the truth promotes
    right, wrong, tie = g["gates"]
    assert right["regret"] == 0 and tie["regret"] == 0
    top10 = (1000 + 9 * 100) / (1000 + 19 * 100)
    assert wrong["regret"] == pytest.approx(top10, abs=1e-4)  # the bad challenger got in: all of it lost
    assert (g["material_decisions"], g["material_agree"]) == (2, 1)
    assert g["mean_regret"] == pytest.approx(top10 / 3, abs=1e-4)


def test_a_bar_reads_as_plain_text_and_the_page_escapes_it_once(tiny_backtest):
    bar = {"bar": "gate agrees <80%> with the truth", "pass": False, "value": 0.6, "ci95": None, "n": 72,
           "truth_promotes": 0.53, "material": {"agreement": 0.59, "decisions": 39}, "mean_regret": 0.014}
    text = backtest_report.bar_value(bar)
    assert text.startswith("0.600 of 72 decisions") and ">= 2 points" in text and "&" not in text
    cfg, _, results = tiny_backtest
    summary = backtest_report.summarise(cfg, results, 1.0)
    page = backtest_report.render_html({**summary, "bars": [bar]}).decode()
    assert "&gt;= 2 points" in page and "&amp;gt;" not in page and "&lt;80%&gt;" in page


def test_each_run_fits_with_its_share_of_the_cores(tmp_path, monkeypatch):
    """Two runs at once on two cores: one XGBoost thread each (two each made every fit wait on the other's)."""
    from sunat_pipeline.backtest.policies import load_policy

    policy = load_policy(get_settings(), "hybrid")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert backtest.policy_settings(tmp_path, tmp_path / "m.db", policy, 0.1, 1, workers=2).training.n_jobs == 1
    assert backtest.policy_settings(tmp_path, tmp_path / "m.db", policy, 0.1, 1, workers=1).training.n_jobs == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert backtest.policy_settings(tmp_path, tmp_path / "m.db", policy, 0.1, 1, workers=3).training.n_jobs == 5
