"""Landing edge cases an adversarial producer sends: each has a deliberate outcome (docs/landing.md, "Edge
cases"), checked here. One lake receives every case in a single ingest run; tests that need silver values or
several block sizes have their own."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_ingest_bad_input import DAY, _settings, csv_bytes, good_frame, land

from sunat_pipeline import ingest
from sunat_pipeline.ingest.sources import MAX_LINE_BYTES, SOURCES, TEXT
from sunat_pipeline.settings import PROJECT_ROOT

SPEC = SOURCES["customs"]
SHANGHAI_MIDNIGHT = pd.Timestamp(f"{DAY} 00:00", tz="Asia/Shanghai")


def parquet_bytes(df: pd.DataFrame | pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The text frame of ``good_frame`` with Parquet types: integers, floats, timestamps."""
    nums = {c: df[c].astype(float) for c, t in SPEC.columns.items() if t == "float"}
    return df.assign(item_no=df.item_no.astype("int64"), declaration_date=pd.to_datetime(df.declaration_date), **nums)


def _with_line(df: pd.DataFrame, row: int, text: str) -> bytes:
    """The CSV of ``df`` with one data line replaced by ``text`` (a raw line, as a producer wrote it)."""
    lines = csv_bytes(df).decode().split("\n")
    lines[row + 1] = text
    return "\n".join(lines).encode()


def _cases() -> dict[str, tuple[bytes, str, list[str]]]:
    d = DAY.isoformat()
    g = good_frame(4, seq0=2000)
    t = typed(g)
    multiline = csv_bytes(good_frame(4, seq0=2100)).decode().replace("B0004", '"B0\nOO4"', 1).encode()
    timed = t.assign(declaration_date=pd.to_datetime([f"{d} 10:30", f"{d} 00:00", f"{d} 23:59", f"{d} 00:00"]))
    dup_header = csv_bytes(good_frame(3, seq0=2200)).replace(b"permit_no\n", b"permit_no,hs_code\n", 1)
    dup_header = b"\n".join(line + (b",x" if i else b"") for i, line in enumerate(dup_header.split(b"\n")[:-1]))
    nan_inf = pa.Table.from_pandas(typed(good_frame(3, seq0=2300)), preserve_index=False)
    nan_inf = nan_inf.set_column(nan_inf.schema.get_field_index("freight_usd"), "freight_usd",  # NaN, not null
                                 pa.array([np.nan, np.inf, 50.0], from_pandas=False))
    return {
        f"customs__{d}__shanghai.parquet": (parquet_bytes(typed(good_frame(4, seq0=2400)).assign(
            declaration_date=SHANGHAI_MIDNIGHT)), "accepted", []),
        f"customs__{d}__timeofday.parquet": (parquet_bytes(timed), "accepted_with_warnings", [
            "dates_have_no_time_of_day on column 'declaration_date': 2 rows", "row 1", "row 3"]),
        f"customs__{d}__multiline.csv": (multiline, "rejected", [
            "values_have_no_line_breaks on column 'declarant_id': 1 rows", "row 1", "one record per line"]),
        f"customs__{d}__unclosedquote.csv": (_with_line(good_frame(4, seq0=2500), 2, csv_bytes(good_frame(
            4, seq0=2500)).decode().split("\n")[3].replace("B0004", '"B0004', 1)), "rejected", [
            "a double quote opened on line 4 is never closed"]),
        f"customs__{d}__inths.parquet": (parquet_bytes(t.assign(hs_code=[101210000, 7208510000, 101210000, 1])),
                                        "rejected", ["column_type_matches_contract on column 'hs_code'",
                                                     "leading zeros", "int64", "'101210000'"]),
        f"customs__{d}__intid.parquet": (parquet_bytes(t.assign(importer_id=20512390771)), "rejected",
                                        ["column_type_matches_contract on column 'importer_id'"]),
        f"customs__{d}__boolnumber.parquet": (parquet_bytes(t.assign(quantity=True)), "rejected",
                                             ["column_type_matches_contract on column 'quantity'", "bool"]),
        f"customs__{d}__alltext.parquet": (parquet_bytes(good_frame(4, seq0=3600)), "accepted", []),
        f"customs__{d}__longfield.parquet": (parquet_bytes(t.assign(permit_no=["P" * 10_000_000, "", "", ""])),
                                            "rejected", ["expect_column_value_lengths_to_be_between on column "
                                                         "'permit_no' (max_value=64): 1 rows"]),
        f"customs__{d}__longid.csv": (csv_bytes(good_frame(3, seq0=2600).assign(declarant_id="B" * 100)),
                                     "rejected", ["expect_column_value_lengths_to_be_between on column "
                                                  "'declarant_id' (min_value=1, max_value=40): 3 rows"]),
        f"customs__{d}__longline.csv": (csv_bytes(good_frame(3, seq0=2700).assign(permit_no=["", "X" * 100_000, ""])),
                                       "rejected", [f"line 3 is longer than {MAX_LINE_BYTES} bytes"]),
        f"customs__{d}__dupheader.csv": (dup_header, "rejected", ["duplicate column names ['hs_code']"]),
        f"customs__{d}__dupheader.parquet": (parquet_bytes(pa.Table.from_pandas(t, preserve_index=False).append_column(
            "hs_code", pa.array(["1"] * 4))), "rejected", ["duplicate column names ['hs_code']"]),
        f"customs__{d}__bominvalues.parquet": (
            parquet_bytes(t.assign(supplier_id=["\ufeffS1", "S1", "S\u200b1", "S1"])), "rejected",
            ["values_have_no_control_characters on column 'supplier_id': 2 rows", "row 1", "row 3"]),
        f"customs__{d}__tabinvalue.csv": (csv_bytes(good_frame(3, seq0=2800).assign(declarant_id=["B0\t04", "B1",
                                                                                                  "\tB2\t"])),
                                         "rejected", ["values_have_no_control_characters on column 'declarant_id': "
                                                      "1 rows", "row 1"]),
        f"customs__{d}__naninf.parquet": (parquet_bytes(nan_inf), "rejected", [
            "values_parse_as_number on column 'freight_usd': 2 rows", "'nan'", "'inf'"]),
        f"customs__{d}__hugeexponent.csv": (csv_bytes(good_frame(3, seq0=2900).assign(freight_usd=["1e400", "50",
                                                                                                   "50"])),
                                           "rejected", ["values_parse_as_number on column 'freight_usd': 1 rows"]),
        f"customs__{d}__blankkey.csv": (csv_bytes(good_frame(3, seq0=3000).assign(declaration_id=["   ", "x", "y"])),
                                       "rejected", ["on column 'declaration_id'", "row 1"]),
        f"customs__{d}__feb30.parquet": (parquet_bytes(t.assign(declaration_date=["2026-02-30", d, d, d])),
                                        "rejected", ["values_parse_as_date on column 'declaration_date': 1 rows",
                                                     "'2026-02-30'"]),
        f"customs__{d}__year9999.csv": (csv_bytes(good_frame(3, seq0=3100).assign(declaration_date=["9999-12-31", d,
                                                                                                    d])),
                                       "rejected", ["expect_column_values_to_be_between on column "
                                                    "'declaration_date'", "'9999-12-31'"]),
        f"customs__{d}__binarytext.parquet": (parquet_bytes(pa.Table.from_pandas(t, preserve_index=False).set_column(
            t.columns.get_loc("permit_no"), "permit_no", pa.array([b"\xff\x00", b"", b"", b""], pa.binary()))),
            "rejected", ["column_type_matches_contract on column 'permit_no'", "binary"]),
        f"customs__{d}__mixedendings.csv": (b"".join(
            line + end for line, end in zip(csv_bytes(good_frame(5, seq0=3200)).split(b"\n")[:-1],
                                            [b"\r\n", b"\n", b"\r", b"\r\n", b"\n", b"\r"], strict=True)),
            "accepted", []),
        f"customs__{d}__negativezero.csv": (csv_bytes(good_frame(3, seq0=3300).assign(freight_usd="-0.0",
                                                                                     cif_usd=lambda x: x.fob_usd)),
                                           "accepted", []),
        "customs__1999-12-31.csv": (csv_bytes(good_frame(2, seq0=3700)), "rejected", [
            "'1999-12-31' is before 2000-01-01: not a plausible available date"]),
        f"customs__{d}__bomheader.csv": (b"\xef\xbb\xbf" + csv_bytes(good_frame(3, seq0=3400)), "accepted", []),
        f"customs__{d}__categorical.parquet": (parquet_bytes(typed(good_frame(4, seq0=3500)).assign(
            customs_office=lambda x: pd.Categorical(x.customs_office))), "accepted", []),
    }


CASES = _cases()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("edge_cases"))
    for name, (data, _, _) in CASES.items():
        land(settings, name, data)
    return settings, {o.name: o for o in ingest.ingest_source(settings, "customs", DAY)}


@pytest.mark.parametrize("name", list(CASES), ids=[n.split("__", 2)[-1] for n in CASES])
def test_each_edge_case_has_its_deliberate_outcome(lake, name):
    settings, outs = lake
    data, status, phrases = CASES[name]
    o = outs[name]
    assert o.status == status, (name, o.detail)
    text = Path(o.report).read_text() if status == "rejected" else o.detail
    for p in phrases:
        assert p in text, (name, p, text)
    if status == "rejected":  # kept unchanged in quarantine; none of its rows in silver
        [q] = [p for p in (settings.quarantine / "customs").glob(f"{o.sha256[:12]}__*") if p.suffix in (".csv",
                                                                                                        ".parquet")]
        assert q.read_bytes() == data


def test_no_row_of_a_rejected_edge_case_reached_silver_and_every_accepted_row_did(lake):
    settings, outs = lake
    s = ingest.silver(settings, "customs")
    assert len(s) == sum(o.rows for o in outs.values() if o.status != "rejected")
    assert ingest.reconcile(settings, DAY)["landed"] == len(CASES)


def test_a_time_zone_keeps_the_local_calendar_day_and_a_time_of_day_is_dropped_not_shifted(lake):
    settings, outs = lake
    s = ingest.silver(settings, "customs")
    for tag in ("shanghai", "timeofday"):
        rows = s[s._batch_sha256 == outs[f"customs__{DAY}__{tag}.parquet"].sha256]
        assert len(rows) == 4 and (rows.declaration_date == pd.Timestamp(DAY)).all(), tag  # never the day before
    assert len(list((settings.silver / "customs").glob("declaration_date=*"))) == 1  # one partition, one day


def test_a_utc_timestamp_means_its_utc_day_with_a_warning(tmp_path):
    """The same instant as a Shanghai midnight, written in UTC, is 16:00 the day before: that day, flagged."""
    p = tmp_path / "c.parquet"
    p.write_bytes(parquet_bytes(typed(good_frame(2)).assign(declaration_date=SHANGHAI_MIDNIGHT.tz_convert("UTC"))))
    rr = ingest.read_batch(p, SPEC)
    assert (rr.frame.declaration_date == pd.Timestamp(DAY - timedelta(days=1))).all()
    [w] = rr.issues
    assert w.severity == "warning" and w.rows == [1, 2] and w.sample[0].endswith("16:00:00")


def test_negative_zero_is_stored_as_zero(lake):
    settings, outs = lake
    s = ingest.silver(settings, "customs")
    rows = s[s._batch_sha256 == outs[f"customs__{DAY}__negativezero.csv"].sha256]
    assert (rows.freight_usd == 0).all() and not np.signbit(rows.freight_usd).any()


def test_mixed_line_endings_read_like_plain_newlines(lake):
    settings, outs = lake
    s = ingest.silver(settings, "customs").drop(columns="_batch_sha256")
    rows = s[s.declaration_id.str.contains("-00032")].reset_index(drop=True)
    assert len(rows) == 5 and rows.declarant_id.tolist() == ["B0004"] * 5  # no stray \r


@pytest.mark.parametrize("where", [0, 700, 1399, 2099])
def test_a_line_break_inside_a_value_gets_the_same_outcome_whatever_the_block_size(tmp_path, where):
    """With 2,100 rows (about 290 kB) the value lies in the first, a middle or the last of several blocks."""
    df = good_frame(2100, seq0=0)
    df.loc[where, "permit_no"] = "PERMIT\r\n2026"
    p = tmp_path / "c.csv"
    p.write_bytes(csv_bytes(df))
    seen = []
    for block in (1, 2 * MAX_LINE_BYTES, 2 * MAX_LINE_BYTES + 4099, 200_000, 16 << 20):
        rr = ingest.read_batch(p, SPEC, chunk_bytes=block)
        [issue] = rr.issues
        seen.append((issue.expectation, issue.severity, issue.rows, len(rr.frame), block > 300_000 or rr.chunks > 1))
    assert seen == [("values_have_no_line_breaks", "critical", [where + 1], 2100, True)] * len(seen)


def test_every_text_column_of_every_source_has_a_critical_length_bound():
    """An anchored pattern, a set of values or a maximum length, all critical: no unbounded text reaches silver."""
    for source, spec in SOURCES.items():
        suite = json.loads((PROJECT_ROOT / "expectations" / f"{source}.json").read_text())["expectations"]
        bounded = {e["kwargs"]["column"] for e in suite if e["severity"] == "critical" and (
            e["type"] == "expect_column_values_to_be_in_set"
            or (e["type"] == "expect_column_values_to_match_regex" and e["kwargs"]["regex"].startswith("^")
                and e["kwargs"]["regex"].endswith("$"))
            or (e["type"] == "expect_column_value_lengths_to_be_between" and "max_value" in e["kwargs"]
                and "row_condition" not in e["kwargs"]))}
        text = {c for c, t in spec.columns.items() if t == TEXT}
        assert text <= bounded, (source, text - bounded)
