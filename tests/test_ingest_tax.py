"""Ingestion of the tax side's extracts: a generated tax world lands and is accepted whole; each bad file of
each tax source gets its deliberate outcome (quarantined with its reason, or accepted and flagged), and the
good file landed beside it is never lost."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from tinyworld import lake_settings

from sunat_pipeline import ingest
from sunat_pipeline.ingest import silver_tables
from sunat_pipeline.ingest.sources import SOURCES, TAX_SOURCES
from sunat_sim.config import load_knobs
from sunat_sim.world import WorldConfig, generate

KNOBS = copy.deepcopy(load_knobs())
# A few monthly files per source keep the run short; audits open from the 7th month and close quickly so that
# some report within the world.
KNOBS["tax"]["prehistory_months"] = 7
KNOBS["tax"]["audit"]["delay_days"] = [20, 40]
CFG = WorldConfig(seed=9, history_days=60, live_days=2, declarations_per_day=30, tax_world=True, knobs=KNOBS)
DAY = date(2026, 3, 1)  # the bad cases' available date: rows of February


def csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode()


def test_a_generated_tax_world_is_ingested_whole(tmp_path):
    settings = lake_settings(tmp_path)
    generate(CFG, settings.lake)
    last = CFG.day(CFG.total_days - 1)
    for source in TAX_SOURCES:
        if source == "income_returns":  # no whole year in this short world (tests/test_tax_world.py lands one)
            assert not (settings.landing / source).exists()
            continue
        outs = ingest.ingest_source(settings, source, last)
        assert outs and {o.status for o in outs} == {"accepted"}, (source, [(o.name, o.detail) for o in outs])
        landed = sum(len(pd.read_csv(p)) for p in (settings.landing / source).glob("*.csv"))
        assert sum(o.rows for o in outs) == landed
        assert len(silver_tables.silver(settings, source)) == landed, source
    ingest.reconcile(settings, last, TAX_SOURCES)


def igv(n: int = 3, **kw) -> pd.DataFrame:
    df = pd.DataFrame({
        "taxpayer_id": [f"2010000{i:04d}" for i in range(n)], "period": "2026-01", "filing_date": "2026-02-16",
        "sales_pen": "1000.0", "purchases_pen": "600.0", "igv_debit_pen": "180.0", "igv_credit_pen": "108.0",
        "credit_carried_forward_pen": "0.0", "igv_payable_pen": "72.0"})
    return df.assign(**kw)


def income(n: int = 3, **kw) -> pd.DataFrame:
    return pd.DataFrame({
        "taxpayer_id": [f"2010000{i:04d}" for i in range(n)], "fiscal_year": "2025", "filing_date": "2026-02-20",
        "revenue_pen": "12000.0", "cost_of_sales_pen": "8000.0", "deductions_pen": "1000.0",
        "taxable_profit_pen": "3000.0", "income_tax_pen": "885.0"}).assign(**kw)


def register(n: int = 3, **kw) -> pd.DataFrame:
    return pd.DataFrame({
        "taxpayer_id": [f"2010000{i:04d}" for i in range(n)], "sector": "commerce", "tax_regime": "RMT",
        "region": "LIMA", "tax_office": "IR-LIMA", "status": "ACTIVE", "domicile_condition": "LOCATED",
        "registered_date": "2020-05-04", "status_date": "2026-02-10"}).assign(**kw)


def einvoices(n: int = 3, **kw) -> pd.DataFrame:
    return pd.DataFrame({
        "seller_id": [f"2010000{i:04d}" for i in range(n)], "buyer_id": "20100009999", "period": "2026-02",
        "invoices": "4", "taxable_amount_pen": "5000.0", "igv_pen": "900.0"}).assign(**kw)


def audits(n: int = 3, **kw) -> pd.DataFrame:
    return pd.DataFrame({
        "audit_id": [f"AUD-202510-{i:04d}" for i in range(n)], "taxpayer_id": "20100000001", "program": "RULES",
        "period_from": "2024-10", "period_to": "2025-09", "opened_date": "2025-10-06", "closed_date": "2026-02-11",
        "result": "ASSESSED", "assessed_tax_pen": "1500.0", "penalty_pen": "750.0"}).assign(**kw)


GOOD = {"igv_returns": igv, "income_returns": income, "taxpayers": register, "einvoices": einvoices,
        "tax_audits": audits}
BETWEEN, PAIR = "expect_column_values_to_be_between on column", "expect_column_pair_values_a_to_be_greater_than_b"
REGEX, INSET = "expect_column_values_to_match_regex on column", "expect_column_values_to_be_in_set on column"
# (source, tag) -> (rows, expected status, phrases the report must hold)
CASES = {
    ("igv_returns", "negative"): (igv(sales_pen=["-5.0", "10", "10"]), "rejected", [f"{BETWEEN} 'sales_pen'"]),
    ("igv_returns", "dupkey"): (pd.concat([igv(), igv(1)]), "rejected", ["expect_compound_columns_to_be_unique"]),
    ("igv_returns", "badperiod"): (igv(period=["2026-13", "2026-1", "2026-01"]), "rejected",
                                   [f"{REGEX} 'period'", "'2026-13'"]),
    ("igv_returns", "badruc"): (igv(taxpayer_id=["123", "20100000001", "30100000002"]), "rejected",
                                [f"{REGEX} 'taxpayer_id'", "'123'"]),
    ("igv_returns", "future"): (igv(filing_date="2026-03-05"), "rejected", [f"{BETWEEN} 'filing_date'"]),
    ("igv_returns", "nocol"): (igv().drop(columns=["igv_payable_pen"]), "rejected",
                               ["missing columns ['igv_payable_pen']"]),
    ("igv_returns", "debitoversales"): (igv(igv_debit_pen="2000.0"), "accepted_with_warnings", [PAIR]),
    ("income_returns", "oldyear"): (income(fiscal_year="1999"), "rejected", [f"{BETWEEN} 'fiscal_year'"]),
    ("income_returns", "aloss"): (income(taxable_profit_pen="-2500.0", income_tax_pen="0.0"), "accepted", []),
    ("income_returns", "nonnumber"): (income(revenue_pen=["12,000", "x", "1"]), "rejected",
                                      ["values_parse_as_number on column 'revenue_pen'"]),
    ("taxpayers", "badstatus"): (register(status="CLOSED"), "rejected", [f"{INSET} 'status'"]),
    ("taxpayers", "statusbeforeregistration"): (register(status_date="2019-01-01"), "rejected", [PAIR]),
    ("einvoices", "noinvoices"): (einvoices(invoices="0"), "rejected", [f"{BETWEEN} 'invoices'"]),
    ("einvoices", "vatoveramount"): (einvoices(igv_pen="6000.0"), "accepted_with_warnings", [PAIR]),
    ("tax_audits", "badresult"): (audits(result="MAYBE"), "rejected", [f"{INSET} 'result'"]),
    ("tax_audits", "closedbeforeopened"): (audits(closed_date="2025-09-01"), "rejected", [PAIR]),
    ("tax_audits", "periodsbackwards"): (audits(period_from="2025-10"), "rejected", [PAIR]),
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    settings = lake_settings(tmp_path_factory.mktemp("tax_bad_input"))
    for source, make in GOOD.items():
        folder = settings.landing / source
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{source}__{DAY}.csv").write_bytes(csv_bytes(make(5)))
    for (source, tag), (df, _, _) in CASES.items():
        (settings.landing / source / f"{source}__{DAY}__{tag}.csv").write_bytes(csv_bytes(df))
    outs = {}
    for source in GOOD:
        outs.update({o.name: o for o in ingest.ingest_source(settings, source, DAY)})
    return settings, outs


@pytest.mark.parametrize("case", list(CASES), ids=[f"{s}-{t}" for s, t in CASES])
def test_each_bad_tax_file_has_its_deliberate_outcome(lake, case):
    settings, outs = lake
    source, tag = case
    _, status, phrases = CASES[case]
    o = outs[f"{source}__{DAY}__{tag}.csv"]
    assert o.status == status, (case, o.detail)
    text = Path(o.report).read_text() if status == "rejected" else o.detail
    for p in phrases:
        assert p in text, (case, p, text)
    if status == "rejected":
        assert "none of its rows reached silver" in text
        assert list((settings.quarantine / source).glob(f"{o.sha256[:12]}__*"))


def test_good_tax_files_beside_bad_ones_are_accepted_whole(lake):
    settings, outs = lake
    for source in GOOD:
        assert outs[f"{source}__{DAY}.csv"].status == "accepted", source
        silver = silver_tables.silver(settings, source)
        accepted = sum(o.rows for o in outs.values() if o.source == source and o.status != "rejected")
        key = list(SOURCES[source].key)
        assert len(silver.drop_duplicates(key)) <= accepted and len(silver) >= 5, source
