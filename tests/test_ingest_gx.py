"""Great Expectations as it is meant to be used: the committed suites run through Checkpoints of a file-backed
GX project in the lake; GX stores each result and builds the Data Docs site; parallel tasks share the project."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import great_expectations as gx
import pytest
from test_ingest_bad_input import DAY, _settings, csv_bytes, good_frame, land

from sunat_pipeline import ingest
from sunat_pipeline.ingest import run
from sunat_pipeline.ingest.sources import DAILY_SOURCES as SOURCES  # the daily DAG's sources
from sunat_pipeline.ingest.validation import gx_dir
from sunat_pipeline.settings import PROJECT_ROOT, get_settings
from sunat_sim.world import WorldConfig, generate


def _results(settings) -> list[Path]:
    return sorted((gx_dir(settings) / "uncommitted" / "validations").rglob("*.json"))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("gx"))
    land(settings, f"customs__{DAY}.csv", csv_bytes(good_frame(6, seq0=0)))
    land(settings, f"customs__{DAY}__office.csv", csv_bytes(good_frame(3, seq0=10, office="999")))  # a warning
    land(settings, f"customs__{DAY}__negative.csv", csv_bytes(good_frame(3, seq0=20).assign(fob_usd="-1")))
    land(settings, f"customs__{DAY}__empty.csv", b"")  # never reaches GX
    return settings, {o.name: o for o in ingest.ingest_source(settings, "customs", DAY)}


def test_each_read_file_is_validated_by_its_sources_checkpoint_and_the_result_stored(lake):
    settings, outs = lake
    context = gx.get_context(mode="file", project_root_dir=settings.lake)
    assert context.checkpoints.get("customs").validation_definitions[0].suite.name == "customs"
    assert [o.status for o in outs.values()] == ["accepted", "rejected", "rejected", "accepted_with_warnings"]
    # A passing file is validated once; a failing one again by the details Checkpoint (values and rows).
    assert len(_results(settings)) == 1 + 2 + 2  # the empty file was rejected by the reader, before GX
    man = ingest.manifest(settings).set_index("file_name")
    for name in (f"customs__{DAY}.csv", f"customs__{DAY}__office.csv", f"customs__{DAY}__negative.csv"):
        results = man.loc[name, "gx_results"]
        run_names = [r["key"][1] for r in results]  # (suite, run name, run time, batch)
        gate = f"{name}__{outs[name].sha256[:12]}"
        assert run_names == ([gate] if outs[name].status == "accepted" else [gate, gate + "_details"])
        assert man.loc[name, "data_docs"] == results[-1]["page"]
        stored = json.loads(next(p for p in _results(settings) if run_names[-1] + "/" in str(p)).read_text())
        assert stored["meta"]["active_batch_definition"]["data_asset_name"] == "customs"
        assert stored["success"] is (outs[name].status == "accepted")
    # GX's own severity drives the outcome: the critical failure rejects, the warning only flags.
    neg = json.loads(Path(outs[f"customs__{DAY}__negative.csv"].report.replace(".report.txt", ".report.json"))
                     .read_text())
    assert "expect_column_values_to_be_between on column 'fob_usd' (min_value=0.0): 3 rows" in neg["critical"][0]
    office = outs[f"customs__{DAY}__office.csv"]
    assert "expect_column_values_to_be_in_set on column 'customs_office'" in office.detail
    assert "row 1: declaration_id=999-2026-10-0000010" in office.detail  # rows, from the details result


def test_data_docs_are_built_by_gx_with_a_page_per_validation(lake):
    settings, outs = lake
    index = ingest.data_docs_index(settings)
    assert index == settings.lake / "data_docs" / "index.html" and index.exists()
    html = index.read_text()
    for o in outs.values():
        if o.data_docs:
            assert Path(o.data_docs).is_file() and Path(o.data_docs).is_relative_to(index.parent)
            assert f"{o.name}__{o.sha256[:12]}" in html  # the run name, in the index GX rendered
    assert not outs[f"customs__{DAY}__empty.csv"].data_docs


def test_a_page_a_killed_run_never_built_is_built_by_the_next_run(lake):
    settings, outs = lake
    page = Path(outs[f"customs__{DAY}.csv"].data_docs)
    page.unlink()
    again = ingest.ingest_source(settings, "customs", DAY)
    assert {o.status for o in again} == {"duplicate"} and page.is_file()


def test_a_changed_suite_is_synced_into_the_gx_project(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "expectations", root / "expectations")
    settings = get_settings(root=root, lake_root=tmp_path / "data")
    land(settings, f"customs__{DAY}.csv", csv_bytes(good_frame(3, seq0=0, office="999")))
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "accepted_with_warnings"
    suite = json.loads((root / "expectations" / "customs.json").read_text())
    for e in suite["expectations"]:
        if e["kwargs"].get("column") == "customs_office" and e["type"] == "expect_column_values_to_be_in_set":
            e["severity"] = "critical"  # reviewed and committed: an unknown office now rejects
    (root / "expectations" / "customs.json").write_text(json.dumps(suite, indent=2))
    land(settings, f"customs__{DAY + timedelta(days=1)}.csv", csv_bytes(good_frame(3, seq0=5, office="999")))
    [o] = [o for o in ingest.ingest_source(settings, "customs", DAY + timedelta(days=1)) if o.status != "duplicate"]
    assert o.status == "rejected"
    stored = gx.get_context(mode="file", project_root_dir=settings.lake).suites.get("customs")
    office = [e for e in stored.expectations if getattr(e, "column", None) == "customs_office"
              and e.expectation_type == "expect_column_values_to_be_in_set"]
    assert [str(getattr(e.severity, "value", e.severity)) for e in office] == ["critical"]


def _ingest_one(lake_root: str, source: str, day: str) -> list[str]:
    from datetime import date

    settings = get_settings(lake_root=lake_root)
    return [o.status for o in run.ingest_source(settings, source, date.fromisoformat(day))]


def test_the_five_sources_ingested_in_parallel_processes_share_one_gx_project(tmp_path):
    """As the daily DAG runs them: a fresh lake, so the processes also create the project concurrently."""
    cfg = WorldConfig(seed=3, history_days=20, live_days=1, declarations_per_day=10)
    settings = _settings(tmp_path)
    generate(cfg, settings.lake)
    day = cfg.first_live_date
    with ProcessPoolExecutor(len(SOURCES)) as pool:
        statuses = dict(zip(SOURCES, pool.map(_ingest_one, [str(settings.lake)] * len(SOURCES), SOURCES,
                                              [day.isoformat()] * len(SOURCES)), strict=True))
    assert all(s and "rejected" not in s for s in statuses.values()), statuses
    context = gx.get_context(mode="file", project_root_dir=settings.lake)
    assert {c.name for c in context.checkpoints.all()} == {s + x for s in SOURCES for x in ("", "_details")}
    assert set(context.data_sources.get("sunat_landing").get_asset_names()) == set(SOURCES)
    man = ingest.manifest(settings)
    assert len(man) == sum(len(s) for s in statuses.values())
    assert sum(len(r) for r in man.gx_results) == len(_results(settings))  # details too, for files that warned
    html = ingest.data_docs_index(settings).read_text()
    assert all(f"{r.file_name}__{r.sha256[:12]}" in html for r in man.itertuples())
    assert all((settings.lake / p).is_file() for p in man.data_docs)
    assert ingest.reconcile(settings, day)["bronze"] == len(man)


def test_done_markers_are_a_setting_read_from_a_list_or_a_comma_separated_string(monkeypatch):
    monkeypatch.setenv("SUNAT_INGEST__DONE_MARKERS", " customs, tax ")
    assert get_settings().ingest.done_markers == ["customs", "tax"]
    monkeypatch.setenv("SUNAT_INGEST__DONE_MARKERS", '["enforcement"]')
    s = get_settings()
    assert s.ingest.marker_required("enforcement") and not s.ingest.marker_required("customs")
    monkeypatch.setenv("SUNAT_INGEST__DONE_MARKERS", "*")
    assert get_settings().ingest.marker_required("tax")
    monkeypatch.delenv("SUNAT_INGEST__DONE_MARKERS")
    assert get_settings(ingest={"done_markers": "customs"}).ingest.done_markers == ["customs"]


def test_data_docs_can_be_left_for_a_later_build(tmp_path):
    settings = _settings(tmp_path).model_copy(update={"ingest": get_settings().ingest.model_copy(
        update={"data_docs": False})})
    land(settings, f"customs__{DAY}.csv", csv_bytes(good_frame(4, seq0=0)))
    out = ingest.ingest_source(settings, "customs", DAY)
    assert [o.status for o in out] == ["accepted"]
    page = settings.lake / ingest.manifest(settings).iloc[0].gx_results[-1]["page"]
    assert _results(settings) and not page.exists()  # validated and stored by GX, page not rendered
    ingest.build_data_docs(settings)  # a later build renders what is missing
    assert page.exists() and ingest.data_docs_index(settings).exists()
