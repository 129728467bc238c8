"""The world report: deterministic, and its give-away checks find a give-away when there is one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sunat_sim.cli import main
from sunat_sim.config import load_knobs
from sunat_sim.evaluation import CATEGORICAL, FLAGS, NUMERIC, RATIOS
from sunat_sim.report import bars, build_report, format_report, to_json, value_flags
from sunat_sim.world import WorldConfig, simulate

CFG = WorldConfig(seed=5, history_days=45, live_days=10, declarations_per_day=50)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report():
    return build_report(simulate(CFG))


def test_report_is_deterministic_and_complete(report):
    again = build_report(simulate(CFG))
    text = format_report(report)
    assert text == format_report(again)
    assert json.dumps(to_json(report), sort_keys=True) == json.dumps(to_json(again), sort_keys=True)
    for part in ("Fraud by mechanism", "Best single observable features", "Most precise single flags",
                 "Full-label reference model", "Drift schedule", "Bars:"):
        assert part in text
    single = report["single"]
    assert set(single.feature) == set(NUMERIC + RATIOS + FLAGS + CATEGORICAL)
    assert single.auc.between(0.5, 1).all()
    assert list(report["drift"].scheme) == [s["name"] for s in CFG.k["schemes"]]
    assert 0.5 < report["model"]["auc"] <= 1
    names = [b[0] for b in bars(report)]
    assert len(names) == 4 + len(CFG.k["schemes"])


def _frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    f = pd.DataFrame({c: rng.normal(size=n) for c in NUMERIC + RATIOS})
    for c in FLAGS:
        f[c] = (rng.random(n) < 0.3).astype(float)
    for c in CATEGORICAL:
        f[c] = rng.choice(["a", "b", "c", "d"], n)
    return f


def test_value_flags_find_planted_give_aways():
    rng = np.random.default_rng(0)
    n = 20000
    y = (rng.random(n) < 0.05).astype(int)
    f = _frame(n, rng)
    clean = value_flags(f, y)
    assert clean.precision.max() < 0.2
    # A permit prefix only forgers use, on 10% of frauds: precision 1.
    tell = np.flatnonzero(y)[: int(0.1 * y.sum())]
    f.loc[tell, "permit_no"] = "PX-forged"
    # A ratio below a threshold only for frauds, on 5% of them.
    low = np.flatnonzero(y)[-int(0.05 * y.sum()):]
    f.loc[low, "value_over_reference"] = -50.0
    flags = value_flags(f, y).set_index("feature")
    assert flags.loc["permit_no", "flag"] == "== PX-forged" and flags.loc["permit_no", "precision"] == 1.0
    assert flags.loc["value_over_reference", "precision"] == 1.0
    assert flags.loc["value_over_reference", "flag"].startswith("<=")
    # Under 2% of frauds: not a give-away by the bar's definition.
    f2 = _frame(n, rng)
    f2.loc[np.flatnonzero(y)[:5], "permit_no"] = "PX-rare"
    assert "PX-rare" not in set(value_flags(f2, y).flag)


def test_bars_judge_the_figures(report):
    rep = dict(report)
    rep["fraud_rate_declarations"] = 0.01
    rep["flags"] = pd.DataFrame([{"feature": "permit_no", "flag": "== PX", "precision": 1.0, "coverage": 0.1}])
    rep["drift"] = rep["drift"].assign(in_top10=[0.9, 0.1, np.nan])
    got = {name.split(":")[0]: ok for name, ok, _ in bars(rep)}
    assert got["declaration-level fraud rate in [3%, 8%]"] is False
    assert [ok for name, ok, _ in bars(rep) if name.startswith("no single value")] == [False]
    assert [ok for _, ok, _ in bars(rep)][-3:] == [False, True, None]


def test_report_command_on_the_lake_world(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SUNAT_LAKE_ROOT", str(tmp_path / "data"))
    assert main(["generate", "--seed", "4", "--history-days", "30", "--live-days", "5", "--per-day", "30",
                 "--difficulty", "easy"]) == 0
    capsys.readouterr()
    out = tmp_path / "report.json"
    assert main(["report", "--from-lake", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "seed 4, difficulty easy" in text and "Bars:" in text
    rep = json.loads(out.read_text())
    assert rep["config"]["difficulty"] == "easy" and rep["bars"]
    # The lake's world, simulated again: the same declarations as were landed.
    landed = pd.concat([pd.read_csv(p) for p in (tmp_path / "data" / "landing" / "customs").glob("*.csv")])
    assert rep["items"] == len(landed) and rep["declarations"] == landed.declaration_id.nunique()


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k != "offices":
            out += _leaves(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_every_knob_is_documented_and_presets_only_override_knobs():
    raw = yaml.safe_load((ROOT / "config" / "world.yaml").read_text())
    knobs = load_knobs("realistic")
    assert "presets" in raw and set(raw["presets"]) == {"easy", "hard"}
    doc = (ROOT / "docs" / "world.md").read_text()
    missing = [k for k in _leaves({x: v for x, v in knobs.items() if x != "schemes"})
               if f"`{k.split('.')[-1]}`" not in doc]
    assert not missing, f"knobs not explained in docs/world.md: {missing}"
    for s in knobs["schemes"]:
        assert f"`{s['kind']}`" in doc
    for level in ("easy", "hard"):
        k = load_knobs(level)
        assert k != knobs and set(_leaves(k)) == set(_leaves(knobs))
    with pytest.raises(KeyError):
        from sunat_sim.config import _merge
        _merge(knobs, {"prices": {"no_such_knob": 1}})
    assert re.search(r"## What the product reads of it", doc)  # the contract between world and product
