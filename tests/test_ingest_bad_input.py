"""Bad input at the landing zone: every case ends in a clear outcome, and none loses a good row of another batch.

One lake receives a good extract and one file per bad case (a single ingest run, so the suite stays fast);
each case is then checked on its own. Further tests cover what needs its own lake: files still being written,
rectifications and their history, crashes between steps, streaming in chunks, Parquet and Latin-1.
"""

from __future__ import annotations

import io
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sunat_pipeline import ingest
from sunat_pipeline.ingest import landing, reading, run, silver_tables
from sunat_pipeline.ingest.sources import ISO_COUNTRIES, ISO_CURRENCIES, MAX_LINE_BYTES, SOURCES
from sunat_pipeline.settings import get_settings

DAY = date(2026, 3, 10)
NEXT = DAY + timedelta(days=1)
COLS = list(SOURCES["customs"].columns)


def good_frame(n: int = 12, day: date = DAY, seq0: int = 0, office: str = "118") -> pd.DataFrame:
    """``n`` valid customs items (text, as landed), 3 items per declaration."""
    i = np.arange(n)
    fob = (100.0 + 10 * i).round(2)
    return pd.DataFrame({
        "declaration_id": [f"{office}-{day.year}-10-{seq0 + k // 3:07d}" for k in i],
        "item_no": (i % 3 + 1).astype(str), "declaration_date": day.isoformat(), "customs_office": office,
        "importer_id": "20512390771", "declarant_id": "B0004", "supplier_id": "S00012", "supplier_country": "CN",
        "transport_mode": "SEA", "hs_code": "7208510000", "origin_country": "CN", "quantity": "2",
        "net_weight_kg": "1950.5", "invoice_currency": "USD", "fob_invoice": fob.astype(str),
        "fob_usd": fob.astype(str), "freight_usd": "50.0", "insurance_usd": "10.0",
        "cif_usd": (fob + 60).round(2).astype(str), "duty_rate": "0.06", "permit_no": "",
    })[COLS]


def csv_bytes(df: pd.DataFrame, sep: str = ",") -> bytes:
    return df.to_csv(index=False, sep=sep, lineterminator="\n").encode()


def _settings(tmp):
    return get_settings(lake_root=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")


def land(settings, name: str, data: bytes, source: str = "customs"):
    folder = settings.landing / source
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def _keys(df: pd.DataFrame) -> set:
    return set(zip(df.declaration_id, df.item_no.astype(int), strict=True))


GOOD = good_frame(12, seq0=0)
LATIN1_ROWS = good_frame(3, seq0=900).assign(permit_no="PERMISO AÑO-ÉXITO")


def _bad_cases() -> dict[str, tuple[bytes, str, list[str]]]:
    """name -> (bytes, expected status, phrases the report must contain)."""
    g = good_frame(6, seq0=100)
    text = csv_bytes(g)
    lines = text.decode().splitlines(keepends=True)
    neg = good_frame(4, seq0=200).assign(fob_usd="-10.0", fob_invoice="-10.0")
    dup = pd.concat([good_frame(4, seq0=300), good_frame(4, seq0=300).head(1)])
    nonnum = good_frame(4, seq0=400).assign(cif_usd=["abc", "1,234.5", "nan", "160"])
    dates = good_frame(4, seq0=500).assign(declaration_date=["2026-02-30", "05/03/2026", "2026-3-1", "2026-03-01"])
    future = (DAY + timedelta(days=3)).isoformat()
    daterange = good_frame(4, seq0=600).assign(declaration_date=[future, future, "1999-12-31", DAY.isoformat()])
    codes = good_frame(4, seq0=700).assign(origin_country=["XX", "CN", "cn", "CN"],
                                          invoice_currency=["USD", "DOLLAR", "ZZZ", "USD"])
    d = DAY.isoformat()
    return {
        f"customs__{d}__empty.csv": (b"", "rejected", ["file is empty"]),
        f"customs__{d}__headeronly.csv": (csv_bytes(g.iloc[:0]), "rejected", ["expect_table_row_count_to_be_between"]),
        f"customs__{d}__nocol.csv": (csv_bytes(g.drop(columns=["fob_usd"])), "rejected",
                                     ["missing columns ['fob_usd']"]),
        f"customs__{d}__extracol.csv": (csv_bytes(good_frame(3, seq0=150).assign(remarks="x")),
                                        "accepted_with_warnings", ["extra columns ['remarks'] ignored"]),
        f"customs__{d}__semicolon.csv": (csv_bytes(g, sep=";"), "rejected", ["missing columns", "wrong delimiter",
                                                                           "';'-separated"]),
        f"customs__{d}__latin1asutf8.csv": (csv_bytes(LATIN1_ROWS).decode().encode("latin-1"), "rejected",
                                            ["not valid UTF-8", "line 2", "Latin-1", "__latin1"]),
        f"customs__{d}__utf8aslatin1__latin1.csv": (csv_bytes(LATIN1_ROWS), "rejected",
                                                   ["declares latin-1 but the content is UTF-8"]),
        f"customs__{d}__notnumber.csv": (csv_bytes(nonnum), "rejected",
                                         ["values_parse_as_number on column 'cif_usd': 3 rows", "'abc'",
                                          "'1,234.5'", "row 1"]),
        f"customs__{d}__negative.csv": (csv_bytes(neg), "rejected", [
            "expect_column_values_to_be_between on column 'fob_usd' (min_value=0.0): 4 rows",
            "row 1: declaration_id=118-2026-10-0000200"]),
        f"customs__{d}__dupkey.csv": (csv_bytes(dup), "rejected",
                                      ["expect_compound_columns_to_be_unique", "2 rows"]),
        f"customs__{d}__truncated.csv": ("".join(lines[:-1]).encode() + lines[-1].encode()[:25], "rejected",
                                         ["last line is truncated", "cut off"]),
        f"customs__{d}__baddates.csv": (csv_bytes(dates), "rejected",
                                        ["values_parse_as_date on column 'declaration_date': 3 rows",
                                         "'2026-02-30'", "'05/03/2026'", "'2026-3-1'"]),
        f"customs__{d}__futureandancient.csv": (csv_bytes(daterange), "rejected", [
            "expect_column_values_to_be_between on column 'declaration_date' (min_value=2000-01-01, "
            f"max_value={d}): 3 rows", f"'{future}'", "'1999-12-31'"]),
        f"customs__{d}__codes.csv": (csv_bytes(codes), "rejected", [
            "expect_column_values_to_be_in_set on column 'origin_country' (allowed=249 values): 2 rows",
            "'XX'", "'cn'", "expect_column_values_to_be_in_set on column 'invoice_currency'", "'DOLLAR'", "'ZZZ'"]),
        f"customs__{d}__a\\b.csv": (csv_bytes(g), "rejected", ["path separator"]),
        f"customs__{d}..csv": (csv_bytes(g.head(5)), "rejected", ["path separator, '..'"]),
    }


CASES = _bad_cases()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("bad_input"))
    land(settings, f"customs__{DAY}.csv", csv_bytes(GOOD))
    for name, (data, _, _) in CASES.items():
        land(settings, name, data)
    # Names the pipeline never reads: copies in progress.
    for name in (f".customs__{DAY}__hidden.csv", f"customs__{DAY}__copy.csv.tmp", f"customs__{DAY}__x.csv.part"):
        land(settings, name, b"declaration_id\n12")
    outside = settings.lake.parent / "outside.csv"
    outside.write_bytes(csv_bytes(GOOD))
    (settings.landing / "customs" / f"customs__{DAY}__link.csv").symlink_to(outside)  # never followed
    outs = {o.name: o for o in ingest.ingest_source(settings, "customs", DAY)}
    return settings, outs


@pytest.mark.parametrize("name", list(CASES), ids=[n.split("__", 2)[-1] for n in CASES])
def test_each_bad_case_has_a_clear_outcome(lake, name):
    settings, outs = lake
    data, status, phrases = CASES[name]
    o = outs[name]
    assert o.status == status, (name, o.detail)
    m = ingest.manifest(settings).set_index("sha256").loc[o.sha256]
    if status == "rejected":
        txt = Path(o.report).read_text()
        for p in phrases:
            assert p in txt, (name, p, txt)
        assert "none of its rows reached silver" in txt
        q = [p for p in (settings.quarantine / "customs").iterdir() if p.name.startswith(o.sha256[:12] + "__")
             and not p.name.endswith((".txt", ".json", ".html"))]
        assert len(q) == 1 and q[0].read_bytes() == data  # unchanged
        assert q[0].parent == settings.quarantine / "customs"  # never outside, whatever the name says
        if "Validation of" in txt:  # read, so validated by Great Expectations: its Data Docs page exists
            assert Path(o.data_docs).read_text().strip() and (settings.lake / m.data_docs).exists()
        else:  # rejected before validation (unreadable, misnamed): the report is the record
            assert not o.data_docs and not m.data_docs
        assert json.loads(q[0].with_name(q[0].name + ".report.json").read_text())["critical"]
        assert m.stored_at == "quarantine" and m.validation == "rejected"
    else:
        for p in phrases:
            assert p in o.detail, (name, p, o.detail)
        assert Path(o.data_docs).read_text().strip() and json.loads(Path(o.report).read_text())["warning"]
        assert m.stored_at == "bronze"


def test_no_good_row_is_lost_and_no_bad_row_gets_in(lake):
    settings, outs = lake
    assert outs[f"customs__{DAY}.csv"].status == "accepted"
    s = ingest.silver(settings, "customs")
    assert _keys(s) == _keys(pd.concat([GOOD, good_frame(3, seq0=150)]))
    assert "remarks" not in s.columns and list(s.columns[: len(COLS)]) == COLS
    rec = ingest.reconcile(settings, DAY)
    assert rec == {"landed": len(CASES) + 1, "bronze": 2, "quarantine": len(CASES) - 1}


def test_in_progress_names_and_symbolic_links_are_never_read(lake):
    settings, outs = lake
    assert not [n for n in outs if n.startswith(".") or n.endswith((".tmp", ".part")) or "link" in n]
    assert all(o.status != "pending" for o in outs.values())


def test_the_same_bad_bytes_again_are_ignored_and_a_corrected_file_is_picked_up(lake):
    settings, _ = lake
    again = ingest.ingest_source(settings, "customs", DAY)
    assert {o.status for o in again} == {"duplicate"}
    fixed = good_frame(4, seq0=200)  # the negative-amounts batch, corrected at the source
    land(settings, f"customs__{DAY}__negative-fix.csv", csv_bytes(fixed))
    outs = {o.name: o.status for o in ingest.ingest_source(settings, "customs", DAY)}
    assert outs[f"customs__{DAY}__negative-fix.csv"] == "accepted"
    assert _keys(fixed) <= _keys(ingest.silver(settings, "customs"))
    # GX's Data Docs index lists every validated file (by its run name: file name and sha256 prefix).
    index = ingest.build_data_docs(settings).read_text()
    man = ingest.manifest(settings)
    validated = man[man.data_docs != ""]
    assert len(validated) >= 10
    assert all(f"{r.file_name}__{r.sha256[:12]}" in index for r in validated.itertuples())


def test_latin1_declared_in_the_name_is_read_as_latin1(tmp_path):
    settings = _settings(tmp_path)
    land(settings, f"customs__{DAY}__latin1.csv", csv_bytes(LATIN1_ROWS).decode().encode("latin-1"))
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "accepted", o.detail
    assert set(ingest.silver(settings, "customs").permit_no) == {"PERMISO AÑO-ÉXITO"}
    assert ingest.manifest(settings).encoding.tolist() == ["latin-1"]


def test_parquet_is_accepted_and_typed_like_csv(tmp_path):
    settings = _settings(tmp_path)
    g = good_frame(6, seq0=10)
    typed = g.assign(item_no=g.item_no.astype(int), declaration_date=pd.to_datetime(g.declaration_date),
                     **{c: g[c].astype(float) for c in ("quantity", "net_weight_kg", "fob_invoice", "fob_usd",
                                                        "freight_usd", "insurance_usd", "cif_usd", "duty_rate")})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(typed, preserve_index=False), buf)
    land(settings, f"customs__{DAY}__a.parquet", buf.getvalue())
    land(settings, f"customs__{DAY}__b.parquet", buf.getvalue()[:-100])  # cut off: no footer
    outs = {o.name: o for o in ingest.ingest_source(settings, "customs", DAY)}
    assert outs[f"customs__{DAY}__a.parquet"].status == "accepted", outs[f"customs__{DAY}__a.parquet"].detail
    assert outs[f"customs__{DAY}__b.parquet"].status == "rejected"
    assert "not a readable Parquet file" in Path(outs[f"customs__{DAY}__b.parquet"].report).read_text()
    s = ingest.silver(settings, "customs")
    land(settings, f"customs__{DAY}__c.csv", csv_bytes(g))  # the same rows as CSV: identical silver values
    ingest.ingest_source(settings, "customs", DAY)
    s2 = ingest.silver(settings, "customs")
    pd.testing.assert_frame_equal(s.drop(columns="_batch_sha256"), s2.drop(columns="_batch_sha256"))
    assert str(s.item_no.dtype) == "Int64" and str(s.declaration_date.dtype) == "datetime64[us]"


def test_a_file_still_being_written_is_left_for_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SUNAT_INGEST__DONE_MARKERS", "customs,tax")  # the settings read it (comma-separated)
    settings = _settings(tmp_path)
    assert settings.ingest.done_markers == ["customs", "tax"]
    full = csv_bytes(good_frame(9, seq0=20))
    p = land(settings, f"customs__{DAY}.csv", full[: len(full) // 2])  # half copied, no marker yet
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "pending" and "marker" in o.detail
    assert ingest.manifest(settings).empty and not (settings.quarantine / "customs").exists()
    assert ingest.reconcile(settings, DAY) == {"landed": 0, "pending": 1}
    # The producer finishes, then drops the marker with the checksum of the complete file.
    import hashlib

    marker = p.with_name(p.name + ".done")
    marker.write_text(hashlib.sha256(full).hexdigest() + "\n")
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "pending" and "still being written" in o.detail  # bytes do not match the marker yet
    p.write_bytes(full)
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "accepted" and o.rows == 9
    assert ingest.reconcile(settings, DAY) == {"landed": 1, "bronze": 1}


def test_without_markers_a_half_copied_file_is_quarantined_and_the_complete_one_ingested(tmp_path):
    """A producer that breaks the atomic-rename contract loses nothing: the partial copy is rejected
    (truncated), the complete file has other bytes and is ingested on the next run."""
    settings = _settings(tmp_path)
    full = csv_bytes(good_frame(9, seq0=30))
    p = land(settings, f"customs__{DAY}.csv", full[: len(full) // 2 + 7])
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "rejected" and "truncated" in o.detail
    p.write_bytes(full)
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "accepted" and len(ingest.silver(settings, "customs")) == 9


def test_a_rectification_supersedes_and_the_history_is_kept(tmp_path):
    settings = _settings(tmp_path)
    first = good_frame(6, seq0=40)
    land(settings, f"customs__{DAY}.csv", csv_bytes(first))
    ingest.ingest_source(settings, "customs", DAY)
    # Next day: item 1 corrected, item 2 re-sent unchanged (no history for an identical version).
    fix = first.head(2).copy()
    fix.loc[fix.index[0], ["fob_usd", "fob_invoice", "cif_usd"]] = ["90.0", "90.0", "150.0"]
    land(settings, f"customs__{NEXT}__fix.csv", csv_bytes(fix))
    [o_fix] = [o for o in ingest.ingest_source(settings, "customs", NEXT) if o.status != "duplicate"]
    s = ingest.silver(settings, "customs")
    assert len(s) == 6
    row = s[(s.declaration_id == fix.declaration_id.iloc[0]) & (s.item_no == 1)]
    assert row.fob_usd.tolist() == [90.0] and row._batch_sha256.tolist() == [o_fix.sha256]
    h = ingest.history(settings, "customs")
    assert len(h) == 1 and h.fob_usd.tolist() == [100.0]
    assert h._superseded_by.tolist() == [o_fix.sha256]
    assert h._superseded_by_file.tolist() == [f"customs__{NEXT}__fix.csv"]
    assert h._batch_file.tolist() == [f"customs__{DAY}.csv"]
    # An older extract landing late (available DAY) does not overwrite the correction; it goes to history.
    late = first.head(1).assign(fob_usd="95.0", fob_invoice="95.0")
    land(settings, f"customs__{DAY}__resend.csv", csv_bytes(late))
    ingest.ingest_source(settings, "customs", NEXT)
    s = ingest.silver(settings, "customs")
    assert s[(s.declaration_id == fix.declaration_id.iloc[0]) & (s.item_no == 1)].fob_usd.tolist() == [90.0]
    h = ingest.history(settings, "customs")
    assert sorted(h.fob_usd.tolist()) == [95.0, 100.0]
    assert set(h._superseded_by_file) == {f"customs__{NEXT}__fix.csv"}


class Killed(BaseException):
    """A task killed mid-write (not an error the code could handle)."""


def _digest(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def crash_lakes(tmp_path_factory):
    """A reference lake (two files ingested without a crash) and a start lake (the first file only)."""
    base = tmp_path_factory.mktemp("crash")
    two_days = pd.concat([good_frame(6, day=DAY - timedelta(days=1), seq0=60), good_frame(6, seq0=70)])
    ref, start = _settings(base / "ref"), _settings(base / "start")
    for s in (ref, start):
        land(s, f"customs__{DAY}.csv", csv_bytes(good_frame(6, seq0=70)))
        # A bulk extract over two days that also corrects the first file's rows: two partitions, history.
        land(s, f"customs__{NEXT}__history.csv", csv_bytes(two_days.assign(
            fob_usd=lambda x: x.fob_usd.astype(float).add(1).astype(str))))
    ingest.ingest_source(ref, "customs", NEXT)
    ingest.ingest_source(start, "customs", DAY)
    return ref, start


@pytest.mark.parametrize("where", ["after_bronze", "mid_silver", "before_manifest"])
def test_a_task_killed_mid_write_and_retried_leaves_correct_output(tmp_path, monkeypatch, crash_lakes, where):
    import shutil

    ref, start = crash_lakes
    settings = _settings(tmp_path)
    shutil.copytree(start.lake, settings.lake)
    real_replace = silver_tables.replace_partition
    calls = {"n": 0}

    def crash(*a, **k):
        raise Killed

    def crash_second_partition(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        return real_replace(*a, **k)

    target = {"after_bronze": (run, "merge_silver", crash),
              "mid_silver": (silver_tables, "replace_partition", crash_second_partition),
              "before_manifest": (landing, "write_manifest", crash)}[where]
    with monkeypatch.context() as m:
        m.setattr(*target)
        with pytest.raises(Killed):
            ingest.ingest_source(settings, "customs", NEXT)
    assert len(ingest.manifest(settings)) == 1  # the crashed file is not recorded: it will be retried
    (settings.bronze / "_staging" / "customs" / ".0123456789ab.1.tmp").write_bytes(b"half")  # as a kill leaves

    outs = ingest.ingest_source(settings, "customs", NEXT)
    assert [o.status for o in outs] == ["duplicate", "accepted"]
    assert _digest(settings.silver) == _digest(ref.silver)  # silver and its history, byte for byte
    h = ingest.history(settings, "customs")
    assert len(h) == 6 and not h.duplicated(["declaration_id", "item_no"]).any()
    assert ingest.reconcile(settings, NEXT) == {"landed": 2, "bronze": 2}
    assert not list(settings.lake.rglob(".*.tmp")), "a temporary file was left behind"
    assert len(list((settings.bronze / "customs").rglob("*.csv"))) == 2


def test_a_large_file_is_streamed_in_bounded_chunks(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    big = good_frame(12000, seq0=1000)
    p = land(settings, f"customs__{DAY}.csv", csv_bytes(big))
    chunk = 2 * MAX_LINE_BYTES  # the smallest block: one allowed line always fits
    sizes = [len(c) for c in ingest.iter_typed_chunks(p, SOURCES["customs"], chunk_bytes=chunk)]
    assert len(sizes) > 10 and max(sizes) < 1100 and sum(sizes) == 12000  # one block of text at a time
    one = ingest.read_batch(p, SOURCES["customs"], chunk_bytes=64 << 20)
    many = ingest.read_batch(p, SOURCES["customs"], chunk_bytes=chunk)
    assert one.chunks == 1 and many.chunks == len(sizes)
    pd.testing.assert_frame_equal(one.frame, many.frame)
    assert many.frame.index[0] == 1 and many.frame.index[-1] == 12000  # row numbers survive chunking
    monkeypatch.setattr(reading, "CHUNK_BYTES", chunk)
    [o] = ingest.ingest_source(settings, "customs", DAY)
    assert o.status == "accepted" and o.rows == 12000
    assert ingest.manifest(settings).chunks.tolist() == [len(sizes)]
    assert len(ingest.silver(settings, "customs")) == 12000


def test_reconcile_notices_a_lost_bronze_copy(tmp_path):
    settings = _settings(tmp_path)
    land(settings, f"customs__{DAY}.csv", csv_bytes(good_frame(3, seq0=80)))
    [o] = ingest.ingest_source(settings, "customs", DAY)
    stored = settings.lake / ingest.manifest(settings).stored_path.iloc[0]
    stored.unlink()
    with pytest.raises(RuntimeError, match="missing or altered"):
        ingest.reconcile(settings, DAY)


def test_suites_carry_the_iso_code_lists_and_a_severity_everywhere():
    from sunat_pipeline.settings import PROJECT_ROOT

    for source in SOURCES:
        spec = json.loads((PROJECT_ROOT / "expectations" / f"{source}.json").read_text())
        assert all(e["severity"] in ("critical", "warning") for e in spec["expectations"]), source
        for e in spec["expectations"]:
            col = e["kwargs"].get("column", "")
            if e["type"] == "expect_column_values_to_be_in_set" and col.endswith("country"):
                assert e["kwargs"]["value_set"] == ISO_COUNTRIES, (source, col)
            if e["type"] == "expect_column_values_to_be_in_set" and "currency" in col:
                assert e["kwargs"]["value_set"] == ISO_CURRENCIES, (source, col)
