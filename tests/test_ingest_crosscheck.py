"""The cross-source check: inspection results for declarations customs never delivered, or inspected before the
declaration was lodged, are held out of silver (never lost) and released once they agree with customs."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
from test_ingest_bad_input import DAY, _settings, csv_bytes, good_frame, land

from sunat_pipeline import ingest
from sunat_pipeline.ingest.crosscheck import held_path

LATER = DAY + timedelta(days=2)


def results(rows: list[tuple[str, str, int, date]], reported: date = LATER) -> pd.DataFrame:
    """Enforcement rows (record id, declaration id, item, inspection date), all CLEAN, reported ``reported``."""
    return pd.DataFrame([{"record_id": r, "declaration_id": d, "item_no": i, "inspection_date": insp.isoformat(),
                          "channel": "YELLOW", "result": "CLEAN", "offence_code": "", "revenue_recovered_usd": "0.0",
                          "penalty_usd": "0.0", "reported_date": reported.isoformat(), "officer_id": "OF001"}
                         for r, d, i, insp in rows])


def _everything(settings) -> set[str]:
    """Record ids in silver, held, or history: the check may move rows, never lose one."""
    s = ingest.silver(settings, "enforcement")
    h = ingest.history(settings, "enforcement")
    return set(s.record_id) | set(ingest.held(settings).record_id) | set(h.record_id)


def test_results_that_contradict_customs_are_held_then_released(tmp_path):
    settings = _settings(tmp_path)
    customs = good_frame(6, seq0=0)  # declarations ...0000000 and ...0000001, items 1-3
    decl = customs.declaration_id.iloc[0]
    late = good_frame(3, seq0=50)  # its customs file lands later (e.g. quarantined, then corrected)
    land(settings, f"customs__{DAY}.csv", csv_bytes(customs))
    land(settings, f"enforcement__{LATER}.csv", csv_bytes(results([
        ("E1", decl, 1, DAY), ("E2", decl, 2, DAY + timedelta(days=1)),
        ("E3", late.declaration_id.iloc[0], 1, DAY),  # unknown declaration (for now)
        ("E4", decl, 3, DAY - timedelta(days=1)),  # inspected the day before the declaration was lodged
        ("E5", decl, 9, DAY),  # no such item
    ])), source="enforcement")
    for source in ("enforcement", "customs"):  # enforcement first, as parallel tasks may: the check waits
        ingest.ingest_source(settings, source, LATER)
    assert len(ingest.silver(settings, "enforcement")) == 5  # not checked at ingest

    rec = ingest.reconcile(settings, LATER)
    assert rec["held_rows"] == 3 and rec["newly_held"] == 3
    assert sorted(ingest.silver(settings, "enforcement").record_id) == ["E1", "E2"]
    h = ingest.held(settings).set_index("record_id")
    assert h._held_reason.to_dict() == {"E3": "unknown_declaration", "E4": "inspected_before_declaration",
                                        "E5": "unknown_declaration"}
    report = held_path(settings).with_name("held.report.txt").read_text()
    assert "HELD: 3 enforcement rows" in report and "E4: declaration" in report
    assert _everything(settings) == {"E1", "E2", "E3", "E4", "E5"}

    before = ingest.silver(settings, "enforcement")
    assert ingest.reconcile(settings, LATER)["newly_held"] == 0  # a re-run changes nothing
    pd.testing.assert_frame_equal(ingest.silver(settings, "enforcement"), before)

    # The missing customs declaration lands; E4 is corrected by a later record version (a valid date).
    land(settings, f"customs__{LATER}__late.csv", csv_bytes(late.assign(declaration_date=DAY.isoformat())))
    fix = results([("E4", decl, 3, DAY)], reported=LATER + timedelta(days=1))
    land(settings, f"enforcement__{LATER + timedelta(days=1)}__fix.csv", csv_bytes(fix), source="enforcement")
    for source in ("customs", "enforcement"):
        ingest.ingest_source(settings, source, LATER + timedelta(days=1))
    rec = ingest.reconcile(settings, LATER + timedelta(days=1))
    assert rec["held_rows"] == 1 and rec["released_rows"] == 2  # E3 agrees now; the old E4 is superseded
    s = ingest.silver(settings, "enforcement")
    assert sorted(s.record_id) == ["E1", "E2", "E3", "E4"]
    assert s[s.record_id == "E4"].inspection_date.tolist() == [pd.Timestamp(DAY)]  # the corrected version
    assert ingest.held(settings).record_id.tolist() == ["E5"]
    assert _everything(settings) == {"E1", "E2", "E3", "E4", "E5"}
    assert "E4" in set(ingest.history(settings, "enforcement").record_id)  # the superseded version is kept


def test_a_back_load_landing_both_sources_at_once_holds_nothing(tmp_path):
    settings = _settings(tmp_path)
    customs = good_frame(6, seq0=0, day=DAY - timedelta(days=30))
    land(settings, f"customs__{DAY}__history.csv", csv_bytes(customs))
    land(settings, f"enforcement__{DAY}__history.csv", csv_bytes(results(
        [(f"E{i}", d, int(n), DAY - timedelta(days=29)) for i, (d, n) in enumerate(
            zip(customs.declaration_id, customs.item_no, strict=True))], reported=DAY)), source="enforcement")
    for source in ("enforcement", "customs"):
        ingest.ingest_source(settings, source, DAY)
    assert ingest.reconcile(settings, DAY) == {"landed": 2, "bronze": 2}
    assert len(ingest.silver(settings, "enforcement")) == 6 and ingest.held(settings).empty
