"""Reading a landed file: encoding and structure checks, then typed chunks streamed from CSV or Parquet.

A CSV file is first scanned byte by byte (one block at a time): its encoding against the declared one, NUL
bytes, the longest line, and whether it holds any double quote or any control / non-ASCII byte at all (when
not, the per-value text checks of ``convert`` are skipped: nothing could be found). Then pyarrow's streaming
reader parses it in blocks with quoted line breaks understood, so a record is the same whatever the block
size; ``convert`` rejects those line breaks. Parquet is read in row batches. Structural problems raise
``BadFileError`` (the file is rejected at once); value problems become report outcomes with row numbers.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sunat_pipeline.ingest.convert import Issues, typed_chunk
from sunat_pipeline.ingest.report import ExpectationOutcome
from sunat_pipeline.ingest.sources import MAX_LINE_BYTES, SourceSpec, parse_landing_name

CHUNK_BYTES = 16 << 20  # CSV block size read and typed at a time (bounded memory per step)
PARQUET_BATCH_ROWS = 100_000
_PLAIN = bytes(range(0x20, 0x7F)) + b"\n\r"  # bytes that cannot start a control or non-ASCII character


class BadFileError(ValueError):
    """The file cannot be read as its source's contract says (missing columns, not CSV...)."""


@dataclass
class TextScan:
    """What one pass over a CSV file's bytes found."""

    lines: int = 0
    quotes: int = 0  # double quotes: none, no quoted value could hold a line break; an odd count, one is open
    controls: bool = False  # a control or non-ASCII byte somewhere: a value could hold a control character


def check_encoding(path: Path, encoding: str, block: int = 4 << 20) -> TextScan:
    """Raise BadFileError when the bytes are not text in the declared encoding, or a line is longer than
    ``MAX_LINE_BYTES``. Streams the file.

    Declared UTF-8 (the default): every byte sequence must be valid UTF-8; Latin-1 text claimed as UTF-8 is
    detected and named. Declared Latin-1/cp1252: the file must not be valid UTF-8 with non-ASCII characters
    (that is UTF-8 mislabelled, which would turn 'é' into 'Ã©')."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PAR1"):
        raise BadFileError("this is a Parquet file, not CSV: land it with the .parquet extension")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise BadFileError("file is UTF-16 (byte-order mark FF FE): the contract accepts UTF-8 or a declared "
                           "Latin-1 (see docs/landing.md)")
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    scan = TextScan()
    non_ascii = False
    utf8 = True
    carry = 0  # bytes of the line still open at the end of the previous block
    with open(path, "rb") as f:
        while chunk := f.read(block):
            if b"\x00" in chunk:
                n = scan.lines + chunk[: chunk.index(b"\x00")].count(b"\n") + 1
                raise BadFileError(f"line {n} contains NUL bytes: this is not a text CSV file")
            if utf8:
                try:
                    dec.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
                    if encoding == "utf-8":
                        raise BadFileError(_not_utf8_message(chunk, scan.lines)) from None
            non_ascii = non_ascii or not chunk.isascii()
            scan.quotes += chunk.count(b'"')
            scan.controls = scan.controls or bool(chunk.translate(None, _PLAIN))
            carry = _check_lines(chunk, carry, scan.lines)
            scan.lines += chunk.count(b"\n")
    if utf8:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
            if encoding == "utf-8":
                raise BadFileError("the file ends inside a multi-byte UTF-8 character: it is cut off") from None
    if encoding != "utf-8" and utf8 and non_ascii:
        raise BadFileError(f"the file name declares {encoding} but the content is UTF-8 with non-ASCII characters "
                           "(reading it as declared would turn 'é' into 'Ã©'): remove the encoding tag")
    if scan.quotes % 2:
        raise BadFileError(f"a double quote opened on line {_open_quote_line(path)} is never closed (the file has "
                           "an odd number of double quotes): the rest of the file would read as one value")
    return scan


def _open_quote_line(path: Path) -> int:
    """The line where the quote left open at the end of the file was opened."""
    odd, start = False, 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.count(b'"') % 2:
                odd = not odd
                start = n if odd else start
    return start


def _check_lines(chunk: bytes, carry: int, lines_before: int) -> int:
    """Raise for a line over the limit; return the length of the line left open at the end of ``chunk``."""
    buf = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero((buf == 10) | (buf == 13))  # \n, \r\n and a lone \r all end a line
    if not len(ends):
        longest, at, carry = carry + len(chunk), 0, carry + len(chunk)
    else:
        lengths = np.diff(ends, prepend=-1) - 1
        lengths[0] += carry
        at = int(np.argmax(lengths))
        longest, carry = int(lengths[at]), len(chunk) - int(ends[-1]) - 1
    if longest > MAX_LINE_BYTES:
        raise BadFileError(f"line {lines_before + at + 1} is longer than {MAX_LINE_BYTES} bytes (the contract's "
                           "limit; a customs line is about 250): a runaway value, an unclosed quote or not a CSV "
                           "extract")
    return carry


def _not_utf8_message(chunk: bytes, lines_before: int) -> str:
    for i, line in enumerate(chunk.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = line[e.start: e.start + 1]
            text = line.decode("cp1252", errors="replace").strip()
            snippet = text[max(0, e.start - 30): e.start + 30]
            return (f"file is not valid UTF-8: line {lines_before + i + 1}, byte 0x{bad.hex().upper()} at column "
                    f"{e.start + 1}; read as Latin-1 it says ...{snippet}... This looks like Latin-1 "
                    "(ISO-8859-1/Windows-1252) text claimed as UTF-8: re-export it as UTF-8, or declare the encoding "
                    "with a '__latin1' tag (e.g. customs__2026-07-05__latin1.csv); see docs/landing.md")
    return f"file is not valid UTF-8 (around line {lines_before + 1})"


def _read_header(path: Path, encoding: str) -> tuple[list[str], str]:
    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    if not raw.strip():
        raise BadFileError("file is empty (no header line)")
    text = raw.decode(encoding, errors="replace").lstrip("\ufeff")
    first = text.splitlines()[0] if text.splitlines() else ""
    if not first.strip():
        raise BadFileError("the first line is blank: the header must be the first line")
    names = [c.strip() for c in next(csv.reader([first]))]
    return names, first


def _check_columns(names: list[str], spec: SourceSpec, first_line: str = "") -> list[str]:
    """Raise BadFileError for missing or duplicate columns; return the extra (ignored) columns."""
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        raise BadFileError(f"duplicate column names {dups} in the header")
    missing = [c for c in spec.columns if c not in names]
    if missing:
        hint = ""
        if len(names) == 1:
            seps = [d for d in (";", "\t", "|") if d in first_line]
            hint = (" -- wrong delimiter? The header is one single column; the contract is comma-separated"
                    + (f" and the header looks {seps[0]!r}-separated" if seps else "") + ".")
        elif not set(names) & set(spec.columns):
            hint = " -- is the header line missing? None of the contract's columns is named."
        raise BadFileError(f"missing columns {missing}; found {names}{hint}")
    return [c for c in names if c not in spec.columns]


@dataclass
class ReadResult:
    frame: pd.DataFrame  # typed, index = data row number (1-based)
    issues: list[ExpectationOutcome]  # the reader's findings (parse failures, extra columns)
    encoding: str
    format: str
    chunks: int
    columns_found: list[str] = field(default_factory=list)


def _csv_batches(path: Path, names: list[str], spec: SourceSpec, encoding: str, chunk_bytes: int,
                 bad_rows: list) -> Iterator[pa.RecordBatch]:
    """``bad_rows`` gets [count, first, last] of the lines with the wrong number of fields (bounded memory)."""
    def on_bad_row(row) -> str:
        if not bad_rows:
            bad_rows.extend([0, row, row])
        bad_rows[0] += 1
        bad_rows[2] = row
        return "skip"

    # Every allowed line fits in a block; quoted line breaks are parsed as such, so where a block ends never
    # changes what a record is (convert then rejects the line break).
    ro = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=max(chunk_bytes, 2 * MAX_LINE_BYTES),
                           encoding="utf8" if encoding == "utf-8" else encoding)
    po = pacsv.ParseOptions(delimiter=",", newlines_in_values=True, invalid_row_handler=on_bad_row)
    co = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=list(spec.columns),
                              strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(path, read_options=ro, parse_options=po, convert_options=co)
        yield from reader
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        if "straddl" in str(e) or "out of sync" in str(e):
            raise BadFileError(f"a quoted value is never closed, or one record spans more than "
                               f"{2 * MAX_LINE_BYTES} bytes (pyarrow: {str(e)[:120]})") from e
        raise BadFileError(f"not a readable CSV file: {e}") from e


def _parquet_batches(path: Path, spec: SourceSpec, rows: int) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - any failure to open is the same verdict
        raise BadFileError(f"not a readable Parquet file ({e}): cut off, or not Parquet") from e
    names = list(pf.schema_arrow.names)

    def gen() -> Iterator[pa.RecordBatch]:
        try:
            yield from pf.iter_batches(batch_size=rows, columns=list(spec.columns))
        except (pa.ArrowException, OSError) as e:
            raise BadFileError(f"the Parquet file is damaged: {e}") from e

    return names, gen()


def _tail_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
        tail = f.read()
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return lines[-1] if lines else b""


def iter_typed_chunks(path: Path, spec: SourceSpec, *, encoding: str = "utf-8", fmt: str | None = None,
                      chunk_bytes: int | None = None, issues: Issues | None = None,
                      info: dict | None = None) -> Iterator[pd.DataFrame]:
    """Stream a landed file as typed chunks (bounded memory: one CSV block or Parquet row batch at a time).
    Raises BadFileError for a file that breaks the contract's structure."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.name.endswith(".parquet") else "csv")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    issues = issues if issues is not None else Issues()
    info = info if info is not None else {}
    if path.stat().st_size == 0:
        raise BadFileError("file is empty (no header line)")
    bad_rows: list = []
    scan = TextScan(quotes=1, controls=True)  # Parquet values are not scanned: check them all
    if fmt == "csv":
        scan = check_encoding(path, encoding)
        names, first = _read_header(path, encoding)
        info["extra"] = _check_columns(names, spec, first)
        batches = _csv_batches(path, names, spec, encoding, chunk_bytes, bad_rows)
    else:
        names, batches = _parquet_batches(path, spec, max(1000, min(PARQUET_BATCH_ROWS, chunk_bytes // 200)))
        info["extra"] = _check_columns(names, spec)
    info["columns"] = names
    row0 = 0
    info["chunks"] = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        try:
            yield typed_chunk(b, spec, row0, issues, breaks=scan.quotes > 0, controls=scan.controls)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:  # e.g. a timestamp beyond the year 294247
            raise BadFileError(f"rows {row0 + 1}-{row0 + b.num_rows}: a value cannot be converted to its "
                               f"contract type ({e})") from e
        row0 += b.num_rows
        info["chunks"] += 1
    if bad_rows:
        count, first_bad, last_bad = bad_rows
        expected = first_bad.expected_columns
        last = _tail_line(path).decode(encoding, errors="replace").rstrip("\r\n")
        msg = (f"{count} line(s) do not have the header's {expected} fields (no row of this file was "
               f"loaded); first: {first_bad.actual_columns} fields in {first_bad.text[:160]!r}")
        if last_bad.text.rstrip("\r\n") == last:
            msg = (f"the last line is truncated ({last_bad.actual_columns} of {expected} fields: "
                   f"{last[:160]!r}): the file was cut off; land the complete file again. " + msg)
        elif len(names) == 1:
            msg += " -- wrong delimiter?"
        raise BadFileError(msg)


def read_batch(path: Path, spec: SourceSpec, *, encoding: str = "utf-8", fmt: str | None = None,
               chunk_bytes: int | None = None) -> ReadResult:
    """Read a landed file into one typed frame, chunk by chunk; parse failures become report outcomes."""
    issues = Issues()
    info: dict = {}
    frames = list(iter_typed_chunks(path, spec, encoding=encoding, fmt=fmt, chunk_bytes=chunk_bytes,
                                    issues=issues, info=info))
    if frames:
        df = pd.concat(frames) if len(frames) > 1 else frames[0]
    else:
        empty = pa.RecordBatch.from_pydict({c: pa.array([], pa.string()) for c in spec.columns})
        df = typed_chunk(empty, spec, 0, issues)
    del frames
    outcomes = issues.outcomes(len(df))
    if info.get("extra"):
        outcomes.append(ExpectationOutcome(
            expectation="columns_in_contract", column=",".join(info["extra"]), severity="warning", success=False,
            unexpected_count=None, sample=[], observed=f"extra columns {info['extra']} ignored (kept in bronze)",
            notes="columns not in the landing contract are not loaded", check="schema", origin="reader"))
    fmt = fmt or ("parquet" if Path(path).name.endswith(".parquet") else "csv")
    return ReadResult(df, outcomes, encoding if fmt == "csv" else "utf-8", fmt, info.get("chunks", 0),
                      info.get("columns", []))


def read_typed(path: Path, spec: SourceSpec) -> pd.DataFrame:
    """Read a landed file with the contract's types. Unparseable values become null (GX then rejects)."""
    lf = parse_landing_name(Path(path))
    return read_batch(path, spec, encoding=lf.encoding if lf else "utf-8").frame.reset_index(drop=True)
