"""Training runs in MLflow (issue #5): what a run logs, baselines, champion/challenger, rollback, device fallback,
the experiment's type and the registered model's descriptions.

The session's long tiny world (ingested with the real GX suites, shared with other modules) is trained twice
into a throw-away MLflow store (about 25 s on a 2-core machine, mostly ingest and MLflow's first start)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tinyworld import LEARNABLE_WORLD

from sunat_pipeline.lake.store import partition
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.modeling.metrics import PRIMARY_METRIC
from sunat_pipeline.modeling.model import RiskModel, resolve_device
from sunat_pipeline.settings import TrainingSettings, get_settings

TRAINING = TrainingSettings(n_estimators=40, max_depth=4, learning_rate=0.15, bag_size=2, holdout_days=12)
ARTIFACTS = {"feature_catalog.csv", "feature_importance.csv", "feature_importance.png", "shap_summary.png",
             "shap_mean_abs.csv", "precision_recall_curve.png", "lift_chart.png", "reliability.csv",
             "reliability.png", "champion_decision.json", "data_snapshot.json"}


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """The long world ingested up to its third live day (the most labels of the shared worlds), in a lake and
    MLflow store of the module's own that the registry finds through the environment; trained twice that day."""
    d1 = LEARNABLE_WORLD.live_dates[2]
    s = tiny_world(LEARNABLE_WORLD, upto=d1).copy(tmp_path_factory.mktemp("train"), training=TRAINING)
    mp = pytest.MonkeyPatch()
    mp.setenv("SUNAT_LAKE_ROOT", str(s.lake))
    mp.setenv("SUNAT_MLFLOW_TRACKING_URI", s.tracking_uri)
    first = train.train_and_register(s, d1, reason="test")
    second = train.train_and_register(s, d1, reason="test again")  # a challenger, judged against the first
    yield s, first, second
    mp.undo()


def _run(s, run_id):
    return registry.client(s).get_run(run_id)


def test_run_logs_params_snapshot_metrics_and_baselines(trained):
    s, first, _ = trained
    run = _run(s, first["run_id"])
    p, m = run.data.params, run.data.metrics
    for k in ("n_estimators", "max_depth", "learning_rate", "bag_size", "min_child_weight", "colsample_bytree",
              "device", "device_requested", "holdout_days", "training_data_sha256"):
        assert k in p, k
    # Data snapshot: rows and a checksum per input source.
    for src in ("customs_history", "outcomes", "reference", "tax", "fx"):
        assert int(p[f"data_{src}_rows"]) >= 0 and len(p[f"data_{src}_sha256"]) == 64
    assert int(p["data_customs_history_rows"]) > int(p["data_n_labelled"]) > 0 and int(p["data_outcomes_rows"]) > 0
    assert int(p["data_n_train"]) + int(p["data_n_holdout"]) == int(p["data_n_labelled"])
    for k in ("roc_auc", "pr_auc", "calibration_brier", "calibration_ece", "label_share_random",
              "label_share_legacy", "promoted"):
        assert k in m, k
    for rate in ("1", "2", "5", "10"):
        for name in ("precision", "recall", "revenue"):
            for prefix in ("", "rules_", "random_"):
                assert f"{prefix}{name}_at_{rate}" in m, f"{prefix}{name}_at_{rate}"
    assert 0 <= m["calibration_brier"] <= 1 and 0 <= m["calibration_ece"] <= 1
    # The history was chosen by the legacy policy: the pipeline cannot claim any of it was random.
    assert m["label_share_legacy"] == 1.0 and m["label_share_random"] == 0.0
    # The model beats random order at the capacity on this world.
    assert m["precision_at_10"] > m["random_precision_at_10"]


def test_run_artifacts_and_decision(trained, tmp_path):
    s, first, second = trained
    client = registry.client(s)
    names = {a.path for a in client.list_artifacts(first["run_id"])}
    assert names >= ARTIFACTS, ARTIFACTS - names
    d = Path(client.download_artifacts(first["run_id"], "champion_decision.json", str(tmp_path)))
    dec = json.loads(d.read_text())
    assert dec["promoted"] is True and dec["why"] == "no champion yet"
    rel = pd.read_csv(client.download_artifacts(first["run_id"], "reliability.csv", str(tmp_path)))
    assert {"mean_predicted", "observed_rate", "n"} <= set(rel.columns) and rel.n.sum() == first["metrics"]["n_holdout"]
    shap = pd.read_csv(client.download_artifacts(first["run_id"], "shap_mean_abs.csv", str(tmp_path)))
    assert len(shap) == int(_run(s, first["run_id"]).data.params["n_features"])
    # The second run compares itself with the champion on the same holdout, and says so.
    dec2 = second["decision"]
    assert dec2["champion_version"] == first["version"]
    assert {"challenger_revenue_at_10", "champion_revenue_at_10", "rules_revenue_at_10", "promoted", "why"} <= set(dec2)
    run2 = _run(s, second["run_id"])
    assert run2.data.tags["champion_decision"] == dec2["why"]


def test_champion_alias_and_rollback(trained):
    s, first, second = trained
    client = registry.client(s)
    expected = second["version"] if second["promoted"] else first["version"]
    assert str(client.get_model_version_by_alias(s.registered_model, "champion").version) == expected
    registry.pin_champion(s, first["version"])
    mv, model = registry.champion(s)
    assert str(mv.version) == first["version"] and isinstance(model, RiskModel)
    with pytest.raises(Exception):  # noqa: B017 - MLflow raises its own error for an unknown version
        registry.pin_champion(s, "999")


def test_a_loaded_version_is_kept_for_the_process(trained):
    """Loaded once per process (a version never changes): the champion's model and the same version by number
    are one object, predicting as a fresh load does; ``load=False`` gives the version without loading."""
    import mlflow

    s, first, second = trained
    mv, model = registry.champion(s)
    assert registry.load_version(s, mv.version) is model
    again, none = registry.champion(s, load=False)
    assert again.version == mv.version and none is None
    other = second["version"] if str(mv.version) == first["version"] else first["version"]
    assert registry.load_version(s, other) is not model
    X, _ = train.training_set(s, LEARNABLE_WORLD.live_dates[2])
    fresh = mlflow.pyfunc.load_model(f"models:/{s.registered_model}/{mv.version}").unwrap_python_model().model
    pd.testing.assert_frame_equal(model.predict(X), fresh.predict(X))


def test_label_sources_read_the_pipeline_selection_reasons(tmp_path):
    s = get_settings(lake_root=tmp_path / "lake")
    meta = pd.DataFrame({"declaration_id": ["A", "A", "B", "C"], "item_no": [1, 2, 1, 1],
                         "declaration_date": pd.to_datetime(["2026-03-01"] * 3 + ["2026-02-20"]).date})
    p = partition(s.scored_dir, "declaration_date", pd.Timestamp("2026-03-01").date())
    p.mkdir(parents=True)
    pd.DataFrame({"declaration_id": ["A", "A", "B"], "item_no": [1, 2, 1],
                  "selection_reason": ["random", "random", "exploitation"]}).to_parquet(p / "part-0.parquet")
    out = train.label_sources(s, meta)
    assert out["label_share_random"] == 0.5 and out["label_share_exploitation"] == 0.25
    assert out["label_share_legacy"] == 0.25 and out["n_labels_random"] == 2
    # Scored days after the labelled ones are not read.
    assert train.label_sources(s, meta[meta.declaration_id == "C"])["label_share_legacy"] == 1.0


def test_experiment_opens_in_the_model_training_view(trained):
    s, first, _ = trained
    exp = registry.client(s).get_experiment_by_name(s.mlflow_experiment)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert _run(s, first["run_id"]).info.experiment_id == exp.experiment_id
    # The UI picks its view from the link (the tag alone does not switch MLflow 3.17.2's UI).
    assert registry.experiment_url(exp.experiment_id, "http://h:5000/") == (
        f"http://h:5000/#/experiments/{exp.experiment_id}?workflowType=machine_learning")


def test_registered_model_and_versions_are_described(trained):
    s, first, second = trained
    client = registry.client(s)
    model = client.get_registered_model(s.registered_model)
    assert "probability that an item is found fraudulent" in model.description
    assert "champion" in model.description
    v1 = client.get_model_version(s.registered_model, first["version"])
    assert "Promoted to champion: no champion yet." in v1.description
    assert f"on {first['metrics']['n_train']} inspected items" in v1.description
    v2 = client.get_model_version(s.registered_model, second["version"])
    verdict = "Promoted to champion" if second["promoted"] else "Not promoted"
    assert f"{verdict}: {second['decision']['why']}." in v2.description
    assert f"{PRIMARY_METRIC} {second['metrics'][PRIMARY_METRIC]:.4f}" in v2.description


@pytest.mark.parametrize(("challenger", "champion", "margin", "promoted"), [
    (0.50, None, 0.05, True),  # no champion: the first model always becomes one
    (0.55, 0.50, 0.05, True),  # exactly champion + margin
    (0.60, 0.50, 0.05, True),
    (0.54, 0.50, 0.05, False),  # better, but by less than the margin
    (0.50, 0.50, 0.0, True),  # a tie with no margin keeps the newer model
    (0.49, 0.50, 0.0, False),
])
def test_promotion_rule(challenger, champion, margin, promoted):
    got, why = train.promotion(challenger, champion, margin)
    assert got is promoted
    if champion is not None:
        assert f"{challenger:.4f}" in why and f"{champion:.4f}" in why and str(margin) in why


def test_cuda_is_never_required(monkeypatch, caplog):
    import xgboost

    resolve_device.cache_clear()
    monkeypatch.setattr(xgboost, "build_info", lambda: {"USE_CUDA": False})
    with caplog.at_level(logging.WARNING, logger="sunat_pipeline.modeling.model"):
        assert resolve_device("cuda") == "cpu"
    assert "training on cpu instead" in caplog.text
    assert resolve_device("cpu") == "cpu"
    X = pd.DataFrame({"a": np.arange(200.0), "b": np.arange(200.0) % 7})
    m = RiskModel(n_estimators=5, max_depth=2, bag_size=1, device="cuda:0", n_jobs=1).fit(X, (X.a > 100).astype(int))
    assert m.predict(X).fraud_probability.between(0, 1).all()
    resolve_device.cache_clear()


def test_old_pickles_and_new_parameters():
    m = RiskModel(min_child_weight=3.0, reg_lambda=2.0)
    assert m.get_params()["min_child_weight"] == 3.0 and RiskModel(**m.get_params()).get_params() == m.get_params()
    old = RiskModel()
    del old.min_child_weight, old.gamma  # a model pickled before these parameters existed
    assert old.get_params()["min_child_weight"] == 1.0 and old.get_params()["gamma"] == 0.0
    with pytest.raises(ValueError):
        m.set_params(nope=1)


def test_bag_members_on_their_own_rows_only_above_the_cap():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    y = (X.a + rng.normal(0, 0.5, 600) > 1).astype(int)
    kw = dict(n_estimators=10, max_depth=3, bag_size=2, n_jobs=1)
    small = RiskModel(max_member_rows=None, **kw).fit(X, y).predict(X)
    pd.testing.assert_frame_equal(small, RiskModel(max_member_rows=600, **kw).fit(X, y).predict(X))  # unchanged
    capped = RiskModel(max_member_rows=200, **kw).fit(X, y)
    assert all(c.get_booster().num_boosted_rounds() == 10 for c in capped.classifiers_)
    assert capped._member_rows(600, 1).shape == (200,) and capped._member_rows(150, 1) is None
    assert not np.array_equal(capped._member_rows(600, 1), capped._member_rows(600, 2))
    pd.testing.assert_frame_equal(capped.predict(X), RiskModel(max_member_rows=200, **kw).fit(X, y).predict(X))


def test_a_training_that_fails_to_register_is_not_counted_and_the_retry_trains(trained, monkeypatch):
    """Registering (or promoting) happens inside the MLflow run: when it fails the run ends FAILED, so the day
    stays untrained and the task's retry trains again instead of skipping with "already trained"."""
    s, _, _ = trained
    day = LEARNABLE_WORLD.live_dates[2] + pd.Timedelta(days=1).to_pytimedelta()
    before = registry.last_training_date(s)

    def broken(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(registry, "register", broken)
    with pytest.raises(ConnectionError):
        train.train_if_due(s, day, force=True)
    failed = registry.client(s).search_runs([registry.experiment(s)], f"tags.training_date = '{day.isoformat()}'")
    assert [r.info.status for r in failed] == ["FAILED"]
    assert registry.runs_for(s, day) == [] and registry.last_training_date(s) == before
    monkeypatch.undo()
    again = train.train_if_due(s, day, force=True)
    assert again["trained"] and registry.last_training_date(s) == day
