"""The monthly tax run (sunat_pipeline/tax/) on a small tax world: every landed tax file accounted for, a
capacity-bounded list per office with reasons and a random share, point-in-time features (later files change
nothing), determinism, idempotent re-runs, outcomes folded back, and the customs record in the tax features."""

from __future__ import annotations

import copy
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from tinyworld import lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.ingest.sources import TAX_SOURCES, parse_landing_name
from sunat_pipeline.modeling import registry
from sunat_pipeline.orchestration import schedule
from sunat_pipeline.tax import auditlist, features, inputs, monthly, outcomes, store, train
from sunat_pipeline.tax.models import TaxAnomalyModel, TaxAuditModel
from sunat_sim.config import load_knobs
from sunat_sim.world import WorldConfig, generate

KNOBS = copy.deepcopy(load_knobs())
# Seven tax months before the customs world and quick, frequent audits: labels exist by the first run.
KNOBS["tax"]["prehistory_months"] = 7
KNOBS["tax"]["audit"]["delay_days"] = [20, 40]
KNOBS["tax"]["audit"]["share_per_month"] = 0.06
CFG = WorldConfig(seed=9, history_days=60, live_days=2, declarations_per_day=30, tax_world=True, knobs=KNOBS)
MONTH = "2026-01"
CUT = date(2026, 2, 1)
TAX = {"capacity_share": 0.1, "random_share": 0.3, "min_positive_labels": 2, "holdout_months": 1}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    s = lake_settings(tmp_path_factory.mktemp("tax_pipeline"), ingest={"data_docs": False}, tax_audit=TAX)
    generate(CFG, s.lake)
    # What the daily DAG ingests (the customs history lands in bulk after the cutoff: rows dated before it count).
    for source in ("customs", "enforcement", "exchange_rates"):
        ingest.ingest_source(s, source, CFG.day(CFG.total_days - 1))
    out = monthly.run_month(s, MONTH)
    return s, out


def _bytes(s, table: str) -> bytes:
    return store.path(s, table, MONTH).read_bytes()


def test_every_tax_file_landed_by_the_cutoff_is_in_bronze_or_quarantine(lake):
    s, out = lake
    due = [p for src in TAX_SOURCES if (s.landing / src).exists() for p in (s.landing / src).iterdir()
           if (lf := parse_landing_name(p)) is not None and lf.available <= CUT]
    man = ingest.manifest(s)
    man = man[man.source.isin(TAX_SOURCES)]
    assert len(due) > 10 and out["ingest"]["landed"] == len(due) == len(man)
    assert set(man.stored_at) <= {"bronze", "quarantine"}


def test_the_list_respects_each_office_capacity_with_a_random_share_and_reasons(lake):
    s, out = lake
    sc = store.read(s, store.SCORES, MONTH)
    lst = store.read(s, store.LIST, MONTH)
    assert list(lst.columns) == auditlist.LIST_COLUMNS and not lst.taxpayer_id.duplicated().any()
    eligible = sc.groupby("tax_office").size()
    for office, g in lst.groupby("tax_office"):
        cap = auditlist.capacity(s, office, int(eligible[office]))
        assert len(g) == min(cap, eligible[office]), office
        assert (g.selection_reason == "random").sum() == round(0.3 * len(g)), office
        risk = g[g.selection_reason == "risk"]
        others = sc[(sc.tax_office == office) & ~sc.taxpayer_id.isin(risk.taxpayer_id)]
        # The risk picks are the top of the office's combined score.
        assert len(risk) == 0 or risk.combined_score.min() >= others.combined_score.max(), office
    assert (lst.selection_reason == "random").any() and (lst.selection_reason == "risk").any()
    assert lst.reasons.map(len).min() >= 2  # why listed, then at least one feature in words
    assert all(r[0].startswith(("ranked", "chosen at random")) for r in lst.reasons)
    assert lst.selection_probability.between(0, 1).all()
    assert set(sc.taxpayer_id) >= set(lst.taxpayer_id) and len(lst) < len(sc)


def test_both_models_are_registered_with_a_champion(lake):
    s, out = lake
    rec = store.read_json(s, store.MODELS, MONTH)
    assert rec["supervised"]["trained"] and rec["n_labels"] > 0
    for name in (s.tax_audit.anomaly_model, s.tax_audit.audit_model):
        mv = registry.champion_version(train.model_settings(s, name))
        assert mv is not None
    assert store.read(s, store.SCORES, MONTH).audit_probability.notna().all()


def test_outcomes_become_labels_and_record_which_listed_taxpayers_were_audited(lake):
    s, _ = lake
    inp = inputs.load(s, MONTH)
    a = outcomes.audits(s, inp)
    assert len(a) and (pd.to_datetime(a.closed_date) < pd.Timestamp(CUT)).all()
    assert a.label.isna().equals(a.result == "NOT_LOCATED")
    assert (a[a.label == 1].result == "ASSESSED").all()
    # A list of the month before an audit opened names its taxpayer: the fold records it.
    one = a.iloc[0]
    fake = pd.DataFrame({"taxpayer_id": [one.taxpayer_id], "selection_reason": ["random"]})
    store.write(s, store.LIST, one.features_month, fake)
    try:
        r = outcomes.fold(s, MONTH, inp)
        got = store.read(s, store.OUTCOMES, MONTH)
        assert r["listed_and_audited"] == 1 and got.set_index("audit_id").loc[one.audit_id, "listed_reason"] == "random"
    finally:
        store.path(s, store.LIST, one.features_month).unlink()
        outcomes.fold(s, MONTH, inp)
    assert not store.read(s, store.OUTCOMES, MONTH).listed.any()


def test_customs_offences_known_before_the_cutoff_feed_the_tax_features(lake):
    s, _ = lake
    f = store.read(s, store.FEATURES, MONTH).set_index("taxpayer_id")
    off = inputs.load(s, MONTH).offences.set_index("importer_id")
    caught = off[off.customs_offences > 0].index.intersection(f.index)
    assert len(caught) and (f.loc[caught, "customs_offences"] >= 1).all()
    imports = inputs.load(s, MONTH).imports.importer_id.unique()
    assert f.loc[~f.index.isin(imports), "customs_offences"].isna().all()


def test_same_inputs_give_the_same_models_scores_and_list(lake):
    s, _ = lake
    f = store.read(s, store.FEATURES, MONTH)
    e = f[f.eligible]
    a1, a2 = TaxAnomalyModel(50, seed=3).fit(e), TaxAnomalyModel(50, seed=3).fit(e)
    np.testing.assert_array_equal(a1.score(e), a2.score(e))
    lab = train.labelled(s, inputs.load(s, MONTH))
    m1 = TaxAuditModel(a1, seed=3).fit(lab, lab.label, sample_weight=lab.weight)
    m2 = TaxAuditModel(a2, seed=3).fit(lab, lab.label, sample_weight=lab.weight)
    np.testing.assert_array_equal(m1.score(e), m2.score(e))
    before = _bytes(s, store.LIST)
    auditlist.score(s, MONTH)
    auditlist.build_list(s, MONTH)
    assert _bytes(s, store.LIST) == before


def _land_igv(s, available: date, rows: pd.DataFrame) -> None:
    folder = s.landing / "igv_returns"
    rows.to_csv(folder / f"igv_returns__{available}__late.csv", index=False, lineterminator="\n")


def test_later_files_change_nothing_and_a_rerun_gives_the_same_output(lake):
    s, _ = lake
    outputs = {t: _bytes(s, t) for t in (store.FEATURES, store.SCORES, store.LIST)}
    versions = {n: len(registry.client(s).search_model_versions(f"name='{n}'"))
                for n in (s.tax_audit.anomaly_model, s.tax_audit.audit_model)}
    f = store.read(s, store.FEATURES, MONTH)
    who = f[f.eligible].taxpayer_id.iloc[:2].tolist()
    # A return filed after the cutoff for the month before, and one filed before it in a file landed after it.
    late = pd.DataFrame({"taxpayer_id": who, "period": ["2025-12", "2025-11"],
                         "filing_date": ["2026-02-10", "2026-01-25"], "sales_pen": [9e8, 9e8],
                         "purchases_pen": [1.0, 1.0], "igv_debit_pen": [1.62e8, 1.62e8], "igv_credit_pen": [0.18, 0.18],
                         "credit_carried_forward_pen": [0.0, 0.0], "igv_payable_pen": [1.62e8, 1.62e8]})
    _land_igv(s, date(2026, 2, 15), late)
    outs = ingest.ingest_source(s, "igv_returns", date(2026, 2, 15))
    assert {o.status for o in outs if "late" in o.name} == {"accepted"}
    pd.testing.assert_frame_equal(features.build(s, inputs.load(s, MONTH)), f)
    monthly.run_month(s, MONTH)
    assert {t: _bytes(s, t) for t in outputs} == outputs
    for t in outputs:
        assert [p.name for p in store.path(s, t, MONTH).parent.iterdir()] == ["part-0.parquet"]
    assert versions == {n: len(registry.client(s).search_model_versions(f"name='{n}'")) for n in versions}
    # The next month knows them (the check above could fail).
    nxt = inputs.load(s, "2026-02").returns
    assert ((nxt.taxpayer_id == who[0]) & (nxt.sales_pen == 9e8)).any()


def test_the_monthly_schedule_processes_the_previous_month_in_local_time():
    import pendulum

    s = lake_settings(__import__("pathlib").Path("/nonexistent"))
    ta, ops = s.tax_audit, s.operations
    assert schedule.monthly_start(ops, "2026-01", ta.run_day, ta.run_at) == pendulum.datetime(
        2026, 2, 2, 7, 0, tz="America/Lima")
    end = pendulum.datetime(2026, 3, 2, 7, 0, tz="America/Lima").in_timezone("UTC")
    assert schedule.processing_month({"data_interval_end": end}, ops.timezone) == "2026-02"
    jan = datetime(2026, 1, 2, 12, 30, tzinfo=pendulum.timezone("UTC"))
    assert schedule.processing_month({"data_interval_end": jan}, ops.timezone) == "2025-12"
    assert schedule.processing_month({"params": {"month": "2025-07"}}, ops.timezone) == "2025-07"


def test_a_ratio_reason_tells_the_typical_taxpayers_value():
    """An auditor reads "0.8 times the declared sales" against the usual ratio (e-invoices cover only sales to
    businesses): the anomaly model's median is told beside it; features without a typical value are left alone."""
    import math

    import pandas as pd

    from sunat_pipeline.tax.reasons import explain, with_typical

    center = pd.Series({"invoiced_over_declared_sales": math.log(0.46), "log_sales": 10.0})
    text = explain("invoiced_over_declared_sales", math.log(0.8), {"sector": "COMMERCE"})
    assert with_typical(text, "invoiced_over_declared_sales", center) == (
        "e-invoices it issued are 0.8 times the sales it declared in the same months (typical taxpayer: 0.5 times)")
    assert with_typical("x", "log_sales", center) == "x" and with_typical("x", "missed_share", center) == "x"
    assert with_typical("x", "invoiced_over_declared_sales", None) == "x"
