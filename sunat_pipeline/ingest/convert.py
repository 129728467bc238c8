"""One read block (an Arrow record batch) to a typed frame by the contract's column types.

The reader's checks become report outcomes with the offending values and row numbers, like the suites':
values that do not parse as their type (critical), Parquet columns of a type the contract does not allow
(critical: an integer ``hs_code`` has lost its leading zeros), line breaks inside values and control or
invisible format characters in text (critical), and timestamps with a time of day where the contract has a
calendar day (warning: the day is kept, in the timestamp's own time zone; never a silent shift to UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sunat_pipeline.ingest.report import SAMPLE, ExpectationOutcome
from sunat_pipeline.ingest.sources import DATE, INTEGER, NUMERIC, SourceSpec

# C0/C1 controls but the line breaks (reported on their own), format characters (byte-order mark, zero-width
# space, bidi marks) and the Unicode line/paragraph separators.
CONTROL_RE = r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\p{Cf}\x{2028}\x{2029}]"


@dataclass(frozen=True)
class Kind:
    expectation: str
    severity: str
    check: str
    notes: str


KINDS = {
    "number": Kind("values_parse_as_number", "critical", "types", "non-numeric text in a numeric column (or NaN/inf)"),
    "integer": Kind("values_parse_as_integer", "critical", "types", "not a whole number"),
    "date": Kind("values_parse_as_date", "critical", "types", "not a calendar date in YYYY-MM-DD"),
    "column_type": Kind("column_type_matches_contract", "critical", "types", ""),  # notes per column
    "line_break": Kind("values_have_no_line_breaks", "critical", "text",
                       "a line break inside a value: the contract is one record per line (a quoted value "
                       "spanning lines is not accepted)"),
    "control": Kind("values_have_no_control_characters", "critical", "text",
                    "control or invisible characters (tab, byte-order mark, zero-width space...) inside a value"),
    "time_of_day": Kind("dates_have_no_time_of_day", "warning", "dates",
                        "a timestamp with a time of day where the contract has a calendar day: the day (in the "
                        "timestamp's own time zone) is kept, the time dropped"),
}


class Issues:
    """The reader's findings per (kind, column): counts, sample values and row numbers."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], dict] = {}

    def add(self, kind: str, col: str, raw, rows: np.ndarray, notes: str = "") -> None:
        e = self.found.setdefault((kind, col), {"count": 0, "values": [], "rows": [], "notes": notes})
        e["count"] += len(rows)
        room = SAMPLE - len(e["rows"])
        if room > 0:
            e["values"] += [str(v) for v in list(raw[:room])]
            e["rows"] += [int(r) for r in rows[:room]]

    def outcomes(self, rows: int) -> list[ExpectationOutcome]:
        out = []
        for (kind, col), e in self.found.items():
            k = KINDS[kind]
            out.append(ExpectationOutcome(
                expectation=k.expectation, column=col, severity=k.severity, success=False,
                unexpected_count=e["count"], sample=e["values"], unexpected_percent=100.0 * e["count"] / max(rows, 1),
                notes=e["notes"] or k.notes, check=k.check, rows=e["rows"],
                sample_rows=[{col: v} for v in e["values"]], origin="reader"))
        return out


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _mask(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


def _flag(issues: Issues, kind: str, col: str, mask: np.ndarray, values: pa.Array, index: pd.RangeIndex,
          notes: str = "") -> None:
    if mask.any():
        shown = pc.filter(values, pa.array(mask)).slice(0, SAMPLE).to_pylist()
        issues.add(kind, col, shown, np.asarray(index)[mask], notes)


def _breaks(arr: pa.Array) -> np.ndarray:
    """Per value: holds a line break. A look at the column's character buffer first (one pass over its bytes,
    several times faster than a search per value): almost always none is there."""
    if not pa.types.is_string_view(arr.type) and arr.buffers()[2] is not None:
        data = np.frombuffer(arr.buffers()[2], np.uint8)
        if not ((data == 10).any() or (data == 13).any()):
            return np.zeros(len(arr), bool)
    return _mask(pc.or_(pc.match_substring(arr, "\n"), pc.match_substring(arr, "\r")))


def _wrong_type(arr: pa.Array, typ: str, col: str, index: pd.RangeIndex, issues: Issues) -> pd.Series:
    """A Parquet column whose type the contract does not allow: every value is reported, none is loaded."""
    want = {NUMERIC: "a number", INTEGER: "an integer", DATE: "a date"}.get(typ, "a string")
    why = (" codes and ids keep their leading zeros only as text (an hs_code 0101210000 stored as an integer "
           "reads 101210000);" if typ not in (NUMERIC, INTEGER, DATE) else "")
    _flag(issues, "column_type", col, pc.is_valid(arr).to_numpy(zero_copy_only=False), arr, index,
          notes=f"the Parquet column is {arr.type}; the contract says {want}:{why} write it as {want} column")
    if typ == NUMERIC:
        return pd.Series(np.nan, index=index)
    if typ == INTEGER:
        return pd.Series(pd.NA, index=index, dtype="Int64")
    if typ == DATE:
        return pd.Series(pd.NaT, index=index, dtype="datetime64[us]")
    return pd.Series("", index=index, dtype="str")


def _series(arr: pa.Array, index: pd.RangeIndex) -> pd.Series:
    s = arr.to_pandas()
    s.index = index
    return s


def _text(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.utf8_trim_whitespace(pc.cast(arr, pa.string())), "")


def _dates(arr: pa.Array, col: str, index: pd.RangeIndex, issues: Issues) -> pd.Series:
    """A typed date or timestamp column: the calendar day, in the timestamp's own zone when it has one."""
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is not None:  # the wall clock where it was recorded: a Shanghai midnight stays that day
            arr = pc.local_timestamp(arr)
        day = pc.floor_temporal(arr, unit="day")
        _flag(issues, "time_of_day", col, _mask(pc.not_equal(arr, day)), arr, index)
        arr = day
    return _series(pc.cast(arr, pa.timestamp("us")), index).astype("datetime64[us]")


def _parse_dates(t: pa.Array, present: np.ndarray, col: str, index: pd.RangeIndex, issues: Issues) -> pd.Series:
    ts = pc.strptime(t, format="%Y-%m-%d", unit="us", error_is_null=True)
    # strptime rolls 2026-02-30 over to March and accepts 2026-1-5: the round trip must be exact.
    good = _mask(pc.equal(pc.strftime(ts, format="%Y-%m-%d"), t))
    bad = present & ~good
    if bad.any():
        issues.add("date", col, np.asarray(t.to_pandas(), dtype=object)[bad], np.asarray(index)[bad])
        ts = pc.if_else(pa.array(good), ts, pa.scalar(None, pa.timestamp("us")))
    return _series(ts, index).astype("datetime64[us]")


def _parse_numbers(t: pa.Array, present: np.ndarray, typ: str, col: str, index: pd.RangeIndex,
                   issues: Issues) -> pd.Series:
    try:
        vals = pc.cast(t, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        vals = pd.to_numeric(pd.Series(np.asarray(t.to_pandas(), dtype=object)), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan)
    vals = np.asarray(vals, dtype="float64") + 0.0  # a copy; and -0.0 becomes 0.0
    bad = present & ~np.isfinite(vals)
    if typ == INTEGER:
        with np.errstate(invalid="ignore"):
            bad |= present & np.isfinite(vals) & ((vals != np.round(vals)) | (np.abs(vals) > 2**53))
    if bad.any():
        raw = np.asarray(pc.cast(t, pa.string()).to_pandas(), dtype=object)
        issues.add("integer" if typ == INTEGER else "number", col, raw[bad], np.asarray(index)[bad])
        vals[bad] = np.nan
    s = pd.Series(vals, index=index)
    return s.astype("Int64") if typ == INTEGER else s


def convert(arr: pa.Array, typ: str, col: str, index: pd.RangeIndex, issues: Issues, *, breaks: bool = True,
            controls: bool = True) -> pd.Series:
    """One column of one block to its contract type. Empty -> null; unparseable -> null and an issue.
    ``breaks``/``controls``: look for line breaks / control characters (False when a byte scan of the whole
    file proved there are none)."""
    if pa.types.is_dictionary(arr.type):  # pandas categoricals written to Parquet
        arr = arr.dictionary_decode()
    is_text = _is_text(arr.type)
    empty = pa.types.is_null(arr.type)
    number = pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type)
    if typ == DATE and (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type)):
        return _dates(arr, col, index, issues)
    if not (is_text or empty or (number and typ in (NUMERIC, INTEGER))):
        return _wrong_type(arr, typ, col, index, issues)
    line_breaks = _breaks(arr) if breaks and is_text else None
    if line_breaks is not None:
        _flag(issues, "line_break", col, line_breaks, arr, index)
    if typ not in (NUMERIC, INTEGER, DATE):
        t = _text(arr)
        if controls and is_text:  # on the trimmed value: the contract trims surrounding whitespace, tabs included
            found = _mask(pc.match_substring_regex(t, CONTROL_RE))
            _flag(issues, "control", col, found if line_breaks is None else found & ~line_breaks, arr, index)
        return _series(t, index)
    if number:
        return _parse_numbers(arr, pc.is_valid(arr).to_numpy(zero_copy_only=False), typ, col, index, issues)
    t = _text(arr)
    present = _mask(pc.not_equal(t, ""))
    t = pc.if_else(pc.equal(t, ""), pa.scalar(None, pa.string()), t)
    if typ == DATE:
        return _parse_dates(t, present, col, index, issues)
    return _parse_numbers(t, present, typ, col, index, issues)


def typed_chunk(batch: pa.RecordBatch, spec: SourceSpec, row0: int, issues: Issues, *, breaks: bool = True,
                controls: bool = True) -> pd.DataFrame:
    index = pd.RangeIndex(row0 + 1, row0 + 1 + batch.num_rows)
    cols = {c: convert(batch.column(batch.schema.get_field_index(c)), t, c, index, issues, breaks=breaks,
                       controls=controls) for c, t in spec.columns.items()}
    return pd.DataFrame(cols, index=index)
