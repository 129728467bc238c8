"""Audit trail and officer overrides (issue #6), on a tiny world scored without Airflow.

The day is ingested with the real GX suites; the model is a small RiskModel trained on the legacy labels
and handed to scoring in place of the MLflow champion (the registry is tested elsewhere)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pandas as pd
import pytest
from tinyworld import SHORT_WORLD

from sunat_pipeline import ingest
from sunat_pipeline.cli import main as cli
from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.modeling import registry, train
from sunat_pipeline.modeling.model import RiskModel
from sunat_pipeline.selection import audit, output, overrides, score
from sunat_pipeline.settings import OfficeCapacity, SelectionSettings
from sunat_sim.inspection import inspect_day
from sunat_sim.world import truth_dir

SEL = SelectionSettings(default_capacity=OfficeCapacity(red=2, yellow=3), random_share=0.2, exploration_share=0.2)


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The short world ingested up to its first live day, in a lake of the module's own that the CLI finds
    through the environment; the day scored with a small model trained on the legacy labels."""
    d1, d2 = SHORT_WORLD.live_dates[:2]  # D1's selections are inspected and reported on D2
    s = tiny_world(SHORT_WORLD, upto=d1).copy(tmp_path_factory.mktemp("audit"), selection=SEL)
    mp = pytest.MonkeyPatch()
    mp.setenv("SUNAT_LAKE_ROOT", str(s.lake))
    mp.setenv("SUNAT_MLFLOW_TRACKING_URI", s.tracking_uri)
    X, meta = train.training_set(s, d1)
    model = RiskModel(n_estimators=30, max_depth=4, bag_size=2).fit(X, meta.y, meta.revenue)
    mp.setattr(registry, "champion", lambda settings, load=True: (SimpleNamespace(version="1"), model))
    mp.setattr(registry, "load_version", lambda settings, version: model)
    run = score.score_day(s, d1)
    yield SimpleNamespace(s=s, d1=d1, d2=d2, run=run, mp=mp)
    mp.undo()


def _scored(w) -> pd.DataFrame:
    return output.read_scored(w.s, upto=w.d1, since=w.d1)


def test_one_audit_record_per_decision_with_its_provenance(world):
    w = world
    a = audit.read_audit(w.s, w.d1)
    scored = _scored(w)
    assert list(a.columns) == audit.AUDIT_COLUMNS
    assert len(a) == scored.declaration_id.nunique() and not a.declaration_id.duplicated().any()
    assert (a.run_id == w.run["run_id"]).all() and (a.decision_id == a.run_id + ":" + a.declaration_id).all()
    assert set(a.model_version) == {"1"} and set(a.rule_weights_version) == {"rw-initial"}
    assert set(a.config_sha256) == {w.run["config_sha256"]} and set(a.rules_sha256) == {w.run["rules_sha256"]}
    assert all(list(b) == w.run["input_batches"] and len(b) for b in a.input_batches)
    assert set(a.schema_version) == {output.SCHEMA_VERSION} == {"5"}
    # The audit agrees with the scored output, declaration by declaration.
    first = scored.drop_duplicates("declaration_id").set_index("declaration_id")
    aa = a.set_index("declaration_id")
    assert (aa.channel == first.channel.reindex(aa.index)).all()
    assert (aa.selection_reason == first.selection_reason.reindex(aa.index)).all()
    sel = aa[aa.channel != "GREEN"]
    assert len(sel) and all(len(r) > 0 for r in sel.reasons)
    assert w.run["audit_path"] == f"gold/audit/declaration_date={w.d1}/run-{w.run['run_id']}.parquet"


def test_scored_output_carries_reasons_and_the_new_columns(world):
    scored = _scored(world)
    assert list(scored.columns) == output.CONTRACT_COLUMNS + output.EXTRA_COLUMNS
    sel = scored[scored.channel != "GREEN"]
    assert all(len(r) > 0 for r in sel.reasons)
    first = sel.groupby("declaration_id").reasons.first()
    notes = {"random": "random quality-control selection", "exploration": "exploration: model uncertain",
             "exploitation": ("model: ", "model and rules: "), "mandatory_rule": "mandatory rule "}
    for did, reasons in first.items():
        why = sel.selection_reason[sel.declaration_id == did].iat[0]
        assert reasons[0].startswith(notes[why]), reasons
    # the stacked risk score ranks; the model's own probability is kept beside it
    assert scored.model_fraud_probability.between(0, 1).all()
    assert ((scored.channel == "GREEN") == (scored.selection_basis == "none")).all()
    assert (scored.groupby("declaration_id").declaration_fraud_probability.nunique() == 1).all()


def test_rerunning_the_same_run_adds_nothing_and_needs_no_truth(world):
    w = world
    before = _digest(w.s.gold)
    hidden = truth_dir(w.s.lake).with_name("truth_hidden")
    truth_dir(w.s.lake).rename(hidden)
    try:
        again = score.score_day(w.s, w.d1)
    finally:
        hidden.rename(truth_dir(w.s.lake))
    assert again["run_id"] == w.run["run_id"]
    assert _digest(w.s.gold) == before  # scored partition, manifest and audit: byte-identical
    assert len(audit.read_audit(w.s, w.d1)) == len(audit.read_audit(w.s, w.d1).drop_duplicates("decision_id"))


def test_a_new_run_is_appended_beside_the_earlier_ones(world):
    w = world
    first_file = w.s.gold / w.run["audit_path"].removeprefix("gold/")
    first_bytes = first_file.read_bytes()
    s2 = w.s.model_copy(update={"selection": SEL.model_copy(update={"random_share": 0.4})})
    r2 = score.score_day(s2, w.d1)
    assert r2["run_id"] != w.run["run_id"] and r2["config_sha256"] != w.run["config_sha256"]
    assert r2["scored_at"] == w.run["scored_at"]  # the day was first scored then
    assert first_file.read_bytes() == first_bytes  # append-only: the earlier run stays as it was
    a = audit.read_audit(w.s, w.d1)
    assert a.groupby("run_id").size().to_dict() == {w.run["run_id"]: a.declaration_id.nunique(),
                                                    r2["run_id"]: a.declaration_id.nunique()}
    assert set(_scored(w).run_id) == {r2["run_id"]}
    # Back to the first configuration: its run id is already recorded, nothing is added.
    n_files = len(list(first_file.parent.glob("*.parquet")))
    assert score.score_day(w.s, w.d1)["run_id"] == w.run["run_id"]
    assert len(list(first_file.parent.glob("*.parquet"))) == n_files == 2


def test_write_audit_takes_one_run_at_a_time(world, tmp_path):
    s = world.s.model_copy(update={"lake_root": tmp_path})
    with pytest.raises(ValueError, match="one run per audit append"):
        audit.write_audit(s, world.d1, pd.DataFrame({"run_id": ["a", "b"]}))


def test_officer_override_is_honoured_by_the_inspection_and_kept_with_its_outcome(world, capsys):
    w = world
    scored = _scored(w).drop_duplicates("declaration_id")
    green = scored.declaration_id[scored.channel == "GREEN"].iat[0]
    red = scored.declaration_id[scored.channel == "RED"].iat[0]
    assert cli(["override", "--declaration", green, "--channel", "red", "--officer", "OF001",
                "--why", "tip-off from the port police"]) == 0
    assert cli(["override", "--declaration", red, "--channel", "GREEN", "--officer", "OF002",
                "--why", "same goods inspected yesterday", "--date", w.d1.isoformat()]) == 0
    assert cli(["override", "--declaration", "NOPE", "--channel", "RED", "--officer", "X", "--why", "y"]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="officer and the reason"):
        overrides.record(w.s, green, "RED", "OF001", " ")
    ev = overrides.load(w.s)
    assert len(ev) == 2 and list(ev.columns) == overrides.COLUMNS
    assert ev.set_index("declaration_id").loc[green, ["channel", "channel_before", "officer_id"]].tolist() == \
        ["RED", "GREEN", "OF001"]
    assert len(list((w.s.gold / "overrides").rglob("*.json"))) == 2
    scored_before = _digest(w.s.scored_dir)

    inspect_day(w.s, w.d1)
    landed = pd.concat([pd.read_csv(p, dtype=str) for p in (w.s.landing / "enforcement").glob("*__insp*.csv")])
    landed = landed[landed.inspection_date == w.d1.isoformat()]
    assert set(landed.channel[landed.declaration_id == green]) == {"RED"}
    assert red not in set(landed.declaration_id)
    assert _digest(w.s.scored_dir) == scored_before  # the policy's decision is kept as it was

    for src in ("customs", "enforcement"):
        ingest.ingest_source(w.s, src, w.d2)
    feedback.update(w.s, w.d2)
    off = feedback.offences(w.s)
    ours = off[off.declaration_id == green]
    assert len(ours) and set(ours.override_officer) == {"OF001"} and set(ours.override_channel) == {"RED"}
    assert set(ours.override_from_channel) == {"GREEN"} and set(ours.override_why) == {"tip-off from the port police"}
    others = off[(off.declaration_id != green) & (off.selection_reason != "legacy")]
    assert len(others) and others.override_id.isna().all()
