"""Landing -> bronze (byte-for-byte, with a manifest) -> validation -> silver (typed, deduplicated, with history).

Every landed file that is complete (docs/landing.md) ends either in bronze (accepted) or in quarantine
(rejected, with a plain-language report), never both and never neither; ``reconcile`` proves it. The manifest
is a folder of one JSON record per file, keyed by the file's sha256, so the same file landing twice is a no-op
and concurrent tasks never rewrite a shared manifest file.

A file is copied once into a staging folder (hashing while copying, so what is validated is exactly what was
hashed), read from that copy in bounded chunks (pyarrow's streaming CSV reader or Parquet row batches),
typed by the contract in ``sources.py``, validated with its GX suite, then moved atomically into bronze or
quarantine. Accepted rows upsert silver partitions: a later version of a business key (a rectification)
supersedes the earlier one, which is kept in ``silver/_superseded/<source>/`` with the batch that replaced
it. The manifest record is written last, so a task killed anywhere is simply re-run: every step before it is
idempotent (atomic replaces of identical content).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import fcntl
import hashlib
import html
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sunat_pipeline.ingest.sources import (
    BADNAME,
    DATE,
    INTEGER,
    NUMERIC,
    SOURCES,
    LandedFile,
    SourceSpec,
    is_ignored,
    marker_path,
    marker_required,
    name_problem,
    parse_landing_name,
    readiness,
)
from sunat_pipeline.ingest.validate import (
    SAMPLE,
    ExpectationOutcome,
    ValidationReport,
    default_parameters,
    render_html,
    validate_frame,
)
from sunat_pipeline.lake.store import (
    atomic_write_bytes,
    partition,
    read_files,
    replace_partition,
    sha256_file,
    write_parquet_atomic,
)
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20  # CSV block size read and typed at a time (bounded memory per step)
PARQUET_BATCH_ROWS = 100_000
HISTORY_DIR = "_superseded"  # silver/_superseded/<source>/<partition>=<date>/batch-<sha12>.parquet


class BadFileError(ValueError):
    """The file cannot be read as its source's contract says (missing columns, not CSV...)."""


class _ChangedWhileReading(RuntimeError):
    """The landed file's bytes changed between hashing and copying: still being written."""


# ----------------------------------------------------------------------------------------------------------
# Reading: encoding and header checks, streaming typed chunks, parse issues as report outcomes.
# ----------------------------------------------------------------------------------------------------------

def check_encoding(path: Path, encoding: str, block: int = 4 << 20) -> None:
    """Raise BadFileError when the bytes are not text in the declared encoding. Streams the file.

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
    lines = 0
    non_ascii = False
    utf8 = True
    with open(path, "rb") as f:
        while chunk := f.read(block):
            if b"\x00" in chunk:
                n = lines + chunk[: chunk.index(b"\x00")].count(b"\n") + 1
                raise BadFileError(f"line {n} contains NUL bytes: this is not a text CSV file")
            if utf8:
                try:
                    dec.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
                    if encoding == "utf-8":
                        raise BadFileError(_not_utf8_message(chunk, lines)) from None
            non_ascii = non_ascii or not chunk.isascii()
            lines += chunk.count(b"\n")
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


class _Issues:
    """Values that do not parse as their contract type, per column: counts, sample values and rows."""

    KINDS = {NUMERIC: "number", INTEGER: "integer", DATE: "date"}
    NOTES = {"number": "non-numeric text in a numeric column (or NaN/inf)",
             "integer": "not a whole number", "date": "not a calendar date in YYYY-MM-DD"}

    def __init__(self) -> None:
        self.found: dict[str, dict] = {}

    def add(self, col: str, typ: str, raw: np.ndarray, rows: np.ndarray) -> None:
        e = self.found.setdefault(col, {"kind": self.KINDS[typ], "count": 0, "values": [], "rows": []})
        e["count"] += len(rows)
        room = SAMPLE - len(e["rows"])
        if room > 0:
            e["values"] += [str(v) for v in raw[:room]]
            e["rows"] += [int(r) for r in rows[:room]]

    def outcomes(self, rows: int) -> list[ExpectationOutcome]:
        out = []
        for col, e in self.found.items():
            out.append(ExpectationOutcome(
                expectation=f"values_parse_as_{e['kind']}", column=col, severity="critical", success=False,
                unexpected_count=e["count"], sample=e["values"],
                unexpected_percent=100.0 * e["count"] / max(rows, 1), notes=self.NOTES[e["kind"]],
                check="types", rows=e["rows"], sample_rows=[{col: v} for v in e["values"]], origin="reader"))
        return out


def _text(arr: pa.Array) -> pa.Array:
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(arr), "")


def _series(arr: pa.Array, index: pd.RangeIndex) -> pd.Series:
    s = arr.to_pandas()
    s.index = index
    return s


def _convert(arr: pa.Array, typ: str, col: str, index: pd.RangeIndex, issues: _Issues) -> pd.Series:
    """One column of one chunk to its contract type. Empty -> null; unparseable -> null and an issue."""
    if typ not in (NUMERIC, INTEGER, DATE):
        return _series(_text(arr), index)
    is_text = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    if typ == DATE and (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type)):
        return _series(pc.cast(arr, pa.timestamp("us")), index).astype("datetime64[us]")
    if is_text or pa.types.is_null(arr.type):
        t = _text(arr)
        present = pc.not_equal(t, "").to_numpy(zero_copy_only=False)
        t = pc.if_else(pc.equal(t, ""), pa.scalar(None, pa.string()), t)
    else:  # a typed Parquet column
        t = arr
        present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    if typ == DATE:
        if is_text:
            ts = pc.strptime(t, format="%Y-%m-%d", unit="us", error_is_null=True)
            # strptime rolls 2026-02-30 over to March and accepts 2026-1-5: the round trip must be exact.
            good = pc.fill_null(pc.equal(pc.strftime(ts, format="%Y-%m-%d"), t), False).to_numpy(
                zero_copy_only=False)
        else:
            ts, good = pa.nulls(len(arr), pa.timestamp("us")), np.zeros(len(arr), bool)
        bad = present & ~good
        if bad.any():
            issues.add(col, typ, np.asarray(t.to_pandas(), dtype=object)[bad], np.asarray(index)[bad])
            ts = pc.if_else(pa.array(good), ts, pa.scalar(None, pa.timestamp("us")))
        return _series(ts, index).astype("datetime64[us]")
    try:
        vals = pc.cast(t, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        vals = pd.to_numeric(pd.Series(np.asarray(t.to_pandas(), dtype=object)), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan)
    vals = np.asarray(vals, dtype="float64").copy()
    bad = present & ~np.isfinite(vals)
    if typ == INTEGER:
        with np.errstate(invalid="ignore"):
            bad |= present & np.isfinite(vals) & ((vals != np.round(vals)) | (np.abs(vals) > 2**53))
    if bad.any():
        raw = np.asarray(pc.cast(t, pa.string()).to_pandas(), dtype=object)
        issues.add(col, typ, raw[bad], np.asarray(index)[bad])
        vals[bad] = np.nan
    s = pd.Series(vals, index=index)
    return s.astype("Int64") if typ == INTEGER else s


def _typed_chunk(batch: pa.RecordBatch, spec: SourceSpec, row0: int, issues: _Issues) -> pd.DataFrame:
    index = pd.RangeIndex(row0 + 1, row0 + 1 + batch.num_rows)
    cols = {c: _convert(batch.column(batch.schema.get_field_index(c)), t, c, index, issues)
            for c, t in spec.columns.items()}
    return pd.DataFrame(cols, index=index)


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
    def on_bad_row(row) -> str:
        bad_rows.append(row)
        return "skip"

    ro = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=chunk_bytes,
                           encoding="utf8" if encoding == "utf-8" else encoding)
    po = pacsv.ParseOptions(delimiter=",", invalid_row_handler=on_bad_row)
    co = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=list(spec.columns),
                              strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(path, read_options=ro, parse_options=po, convert_options=co)
        yield from reader
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
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
                      chunk_bytes: int | None = None, issues: _Issues | None = None,
                      info: dict | None = None) -> Iterator[pd.DataFrame]:
    """Stream a landed file as typed chunks (bounded memory: one CSV block or Parquet row batch at a time).
    Raises BadFileError for a file that breaks the contract's structure."""
    path = Path(path)
    fmt = fmt or ("parquet" if path.name.endswith(".parquet") else "csv")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    issues = issues if issues is not None else _Issues()
    info = info if info is not None else {}
    if path.stat().st_size == 0:
        raise BadFileError("file is empty (no header line)")
    bad_rows: list = []
    if fmt == "csv":
        check_encoding(path, encoding)
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
        yield _typed_chunk(b, spec, row0, issues)
        row0 += b.num_rows
        info["chunks"] += 1
    if bad_rows:
        first_bad = bad_rows[0]
        expected = first_bad.expected_columns
        last = _tail_line(path).decode(encoding, errors="replace").rstrip("\r\n")
        msg = (f"{len(bad_rows)} line(s) do not have the header's {expected} fields (no row of this file was "
               f"loaded); first: {first_bad.actual_columns} fields in {first_bad.text[:160]!r}")
        if bad_rows[-1].text.rstrip("\r\n") == last:
            msg = (f"the last line is truncated ({bad_rows[-1].actual_columns} of {expected} fields: "
                   f"{last[:160]!r}): the file was cut off; land the complete file again. " + msg)
        elif len(names) == 1:
            msg += " -- wrong delimiter?"
        raise BadFileError(msg)


def read_batch(path: Path, spec: SourceSpec, *, encoding: str = "utf-8", fmt: str | None = None,
               chunk_bytes: int | None = None) -> ReadResult:
    """Read a landed file into one typed frame, chunk by chunk; parse failures become report outcomes."""
    issues = _Issues()
    info: dict = {}
    frames = list(iter_typed_chunks(path, spec, encoding=encoding, fmt=fmt, chunk_bytes=chunk_bytes,
                                    issues=issues, info=info))
    if frames:
        df = pd.concat(frames) if len(frames) > 1 else frames[0]
    else:
        empty = pa.RecordBatch.from_pydict({c: pa.array([], pa.string()) for c in spec.columns})
        df = _typed_chunk(empty, spec, 0, issues)
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


# ----------------------------------------------------------------------------------------------------------
# Outcomes, manifest, landing scan.
# ----------------------------------------------------------------------------------------------------------

@dataclass
class FileOutcome:
    source: str
    name: str
    sha256: str
    rows: int
    status: str  # accepted | accepted_with_warnings | rejected | duplicate | pending
    detail: str = ""
    report: str = ""  # rejected: the quarantine report (.report.txt); accepted: the validation result (.json)
    data_docs: str = ""  # the batch's static HTML validation page


def _manifest_dir(settings: Settings) -> Path:
    return settings.bronze / "_manifest"


def manifest(settings: Settings) -> pd.DataFrame:
    recs = [json.loads(p.read_text()) for p in sorted(_manifest_dir(settings).glob("*/*.json"))]
    return pd.DataFrame(recs)


def _records(settings: Settings, source: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((_manifest_dir(settings) / source).glob("*.json"))]


def _known(settings: Settings, lf: LandedFile, sha: str) -> bool:
    """The same bytes were already ingested. A copy rejected only for its name does not count for a
    well-named file: re-landing a misnamed file under its right name must ingest it."""
    rec = _manifest_dir(settings) / lf.source / f"{sha}.json"
    if not rec.exists():
        return False
    rejected_for_name = json.loads(rec.read_text()).get("available_date") is None
    return not rejected_for_name or lf.tag == BADNAME


def scan_landing(settings: Settings, source: str, upto: date) -> tuple[list[LandedFile], list[tuple[Path, str]]]:
    """The source's landed files due by ``upto``: (complete ones, [(pending file, why)]). Hidden files,
    in-progress names (.tmp, .part...) and markers are not files of the landing zone and are skipped."""
    folder = settings.landing / source
    files: list[LandedFile] = []
    pending: list[tuple[Path, str]] = []
    for p in sorted(folder.iterdir()) if folder.exists() else []:
        if is_ignored(p.name) or not p.is_file():
            continue
        if p.is_symlink():  # could point anywhere on the host: never followed
            log.warning("landing/%s/%s is a symbolic link: not read (land the file itself)", source, p.name)
            continue
        lf = parse_landing_name(p)
        if lf is None or lf.source != source:
            lf = LandedFile(p, source, date.min, BADNAME)
        elif lf.available > upto:
            continue
        if marker_required(source) and not marker_path(p).exists():
            pending.append((p, f"waiting for its completion marker {marker_path(p).name}"))
            continue
        files.append(lf)
    return sorted(files, key=lambda f: (f.available, f.path.name)), pending


def due_files(settings: Settings, source: str, upto: date) -> list[LandedFile]:
    return scan_landing(settings, source, upto)[0]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).replace("..", "_")


def _rel(settings: Settings, p: Path) -> str:
    try:
        return str(p.relative_to(settings.lake))
    except ValueError:
        return str(p)


def _write_manifest(settings: Settings, lf: LandedFile, sha: str, size: int, rows: int, status: str, where: str,
                    stored: Path, received: datetime, report: dict | None, extra: dict | None = None) -> None:
    rep = report or {}
    rec = {
        "source": lf.source, "file_name": lf.path.name, "sha256": sha, "size_bytes": size,
        "rows": rows, "available_date": lf.available.isoformat() if lf.available != date.min else None,
        "received_at": received.isoformat(), "ingested_at": datetime.now(UTC).isoformat(),
        "validation": status, "stored_at": where, "stored_path": _rel(settings, stored),
        "critical_failures": len(rep.get("critical", [])), "warnings": len(rep.get("warning", [])),
        "failed_checks": rep.get("critical", []) + rep.get("warning", []),
        **(extra or {}),
    }
    atomic_write_bytes(_manifest_dir(settings) / lf.source / f"{sha}.json", json.dumps(rec, indent=2).encode())


@contextlib.contextmanager
def _source_lock(settings: Settings, source: str):
    """One ingest of a source at a time (two backfill runs must not interleave their silver upserts)."""
    p = settings.bronze / "_locks" / f"{source}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _staging(settings: Settings, source: str) -> Path:
    return settings.bronze / "_staging" / source


def _stage(settings: Settings, lf: LandedFile, sha: str) -> Path:
    """Copy the landed file into staging, hashing while copying: what is validated is what was hashed."""
    sdir = _staging(settings, lf.source)
    sdir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=sdir, prefix=f".{sha[:12]}.", suffix=".tmp")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open(lf.path, "rb") as src:
            while b := src.read(1 << 20):
                h.update(b)
                out.write(b)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if h.hexdigest() != sha:
        Path(tmp).unlink(missing_ok=True)
        raise _ChangedWhileReading(f"{lf.path.name} changed while it was being read: still being written")
    return Path(tmp)


def _place(staged: Path, dest: Path) -> None:
    """Move the staged copy into place atomically (a same-filesystem rename; else copy then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, dest)
    except OSError:
        atomic_write_bytes(dest, staged.read_bytes())


# ----------------------------------------------------------------------------------------------------------
# Silver: upsert by partition; later versions of a business key supersede earlier ones, which are kept.
# ----------------------------------------------------------------------------------------------------------

@dataclass
class _BatchOrder:
    """Accepted batches of a source in version order: (available date, file name). A rectification landed
    later supersedes; an older extract landed late does not overwrite a newer version."""

    rank: dict[str, int]
    files: dict[str, str]

    @classmethod
    def build(cls, settings: Settings, source: str, current: tuple[str, date, str]) -> _BatchOrder:
        recs = [(r["sha256"], r.get("available_date") or "", r["file_name"]) for r in _records(settings, source)
                if r.get("stored_at") == "bronze"]
        recs = [r for r in recs if r[0] != current[0]] + [(current[0], current[1].isoformat(), current[2])]
        recs.sort(key=lambda r: (r[1], r[2], r[0]))
        return cls({r[0]: i for i, r in enumerate(recs)}, {r[0]: r[2] for r in recs})


def _changed(old: pd.DataFrame, new: pd.DataFrame, key: list[str], cols: list[str]) -> tuple[pd.DataFrame, list]:
    """Rows of ``old`` whose values differ from the row of ``new`` with the same key, and that row's batch."""
    m = old.reset_index(drop=True).merge(new[key + cols + ["_batch_sha256"]], on=key, how="left",
                                         suffixes=("", "__new"))
    diff = np.zeros(len(m), bool)
    for c in cols:
        a, b = m[c], m[f"{c}__new"]
        same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy(dtype=bool)
        diff |= ~same
    return old.reset_index(drop=True)[diff], m.loc[diff, "_batch_sha256__new"].tolist()


def _merge_silver(settings: Settings, spec: SourceSpec, df: pd.DataFrame, order: _BatchOrder | None = None,
                  batch_sha: str | None = None) -> dict:
    """Upsert rows into silver partitions. Returns counts (rows written, superseded versions kept)."""
    base = settings.silver / spec.name
    key = list(spec.key)
    cols = [c for c in spec.columns if c not in key]
    batch_sha = batch_sha or (str(df["_batch_sha256"].iloc[0]) if len(df) else "")
    order = order or _BatchOrder({batch_sha: 0}, {})
    mine = order.rank.get(batch_sha, 0)
    stats = {"silver_rows": 0, "superseded_rows": 0, "partitions": 0}
    for value, part in df.groupby(spec.partition_by, sort=True):
        d = pd.Timestamp(value).date()
        pdir = partition(base, spec.partition_by, d)
        part = part.reset_index(drop=True)
        files = sorted(pdir.glob("*.parquet"))
        history = []
        if files:
            existing = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            ex_rank = existing["_batch_sha256"].map(order.rank).fillna(-1).to_numpy()
            kx = pd.MultiIndex.from_frame(existing[key])
            kp = pd.MultiIndex.from_frame(part[key])
            overlap = kx.isin(kp)
            newer = overlap & (ex_rank > mine)  # a later version is already in silver: it stays
            replaced = overlap & ~newer
            loses = kp.isin(kx[newer])
            if replaced.any():
                old, by = _changed(existing[replaced], part, key, cols)
                history.append(old.assign(_superseded_by=by))
            if loses.any():
                old, by = _changed(part[loses], existing[newer], key, cols)
                history.append(old.assign(_superseded_by=by))
            merged = pd.concat([existing[~replaced], part[~loses]], ignore_index=True)
        else:
            merged = part
        merged = merged.drop_duplicates(key, keep="last").sort_values(key, kind="stable").reset_index(drop=True)
        hist = pd.concat(history, ignore_index=True) if history else None
        if hist is not None and len(hist):
            hist["_batch_file"] = hist["_batch_sha256"].map(order.files).fillna("")
            hist["_superseded_by_file"] = hist["_superseded_by"].map(order.files).fillna("")
            hdir = partition(settings.silver / HISTORY_DIR / spec.name, spec.partition_by, d)
            # Keyed by the batch being ingested: a retried ingest rewrites the same file, never adds one.
            write_parquet_atomic(hist.sort_values(key, kind="stable").reset_index(drop=True),
                                 hdir / f"batch-{batch_sha[:12]}.parquet")
            stats["superseded_rows"] += len(hist)
        replace_partition(merged, pdir)
        stats["silver_rows"] += len(part)
        stats["partitions"] += 1
    return stats


# ----------------------------------------------------------------------------------------------------------
# One file, one source, reconciliation.
# ----------------------------------------------------------------------------------------------------------

def batch_parameters(spec: SourceSpec, lf: LandedFile) -> dict:
    return default_parameters(lf.available, spec.window_days, spec.freshness_days, bulk=lf.is_bulk)


def _report_dict(report: ValidationReport | None, error: str | None) -> dict:
    rep = report.to_dict() if report is not None else {"status": "rejected", "error": error, "outcomes": []}
    rep["critical"] = [o.describe() for o in report.critical_failures] if report is not None else [error]
    rep["warning"] = [o.describe() for o in report.warnings] if report is not None else []
    return rep


def _reject(settings: Settings, lf: LandedFile, sha: str, staged: Path, size: int, received: datetime,
            rows: int, report: ValidationReport | None = None, error: str | None = None,
            fmt: str = "", encoding: str = "") -> FileOutcome:
    qdir = settings.quarantine / lf.source
    dest = qdir / f"{sha[:12]}__{_safe_name(lf.path.name)}"
    _place(staged, dest)
    body = report.to_text() if report is not None else f"Reason: {error}"
    text = "\n".join([
        f"REJECTED: {lf.source} file {lf.path.name!r} was quarantined; none of its rows reached silver.",
        f"  landed as    {lf.path}",
        f"  sha256       {sha}  ({size} bytes, received {received.isoformat()})",
        f"  kept as      {dest} (unchanged)",
        "",
        body,
        "",
        "Next step: fix the extract at its source and land the corrected file (a new name or tag, e.g. "
        "__fix); it is picked up on the next run. The same bytes landed again are recognised and ignored.",
    ])
    rep = _report_dict(report, error)
    rep.update({"file": lf.path.name, "sha256": sha, "landing_path": str(lf.path), "quarantine_path": str(dest)})
    atomic_write_bytes(dest.with_name(dest.name + ".report.txt"), text.encode())
    atomic_write_bytes(dest.with_name(dest.name + ".report.json"), json.dumps(rep, indent=2).encode())
    page = dest.with_name(dest.name + ".report.html")
    atomic_write_bytes(page, render_html(report, f"{lf.source} / {lf.path.name}", text, "rejected").encode())
    _write_manifest(settings, lf, sha, size, rows, "rejected", "quarantine", dest, received, rep,
                    {"format": fmt, "encoding": encoding, "report": _rel(settings, dest) + ".report.txt",
                     "data_docs": _rel(settings, page)})
    return FileOutcome(lf.source, lf.path.name, sha, rows, "rejected", text,
                       report=str(dest.with_name(dest.name + ".report.txt")), data_docs=str(page))


def ingest_file(settings: Settings, lf: LandedFile) -> FileOutcome:
    st = lf.path.stat()
    received = datetime.fromtimestamp(st.st_mtime, UTC)
    sha = sha256_file(lf.path)
    if _known(settings, lf, sha):
        return FileOutcome(lf.source, lf.path.name, sha, 0, "duplicate", "same bytes already ingested")
    why = readiness(lf.path, lf.source, sha)
    if why:
        return FileOutcome(lf.source, lf.path.name, sha, 0, "pending", why)
    t0 = time.monotonic()
    try:
        staged = _stage(settings, lf, sha)
    except _ChangedWhileReading as e:
        return FileOutcome(lf.source, lf.path.name, sha, 0, "pending", str(e))
    size = staged.stat().st_size
    try:
        if lf.tag == BADNAME:
            text = name_problem(lf.path.name, lf.source) or (
                f"File name {lf.path.name!r} does not follow the landing contract (see docs/landing.md).")
            return _reject(settings, lf, sha, staged, size, received, 0, error=text)
        spec = SOURCES[lf.source]
        try:
            rr = read_batch(staged, spec, encoding=lf.encoding, fmt=lf.format)
        except BadFileError as e:
            text = f"{lf.source} file '{lf.path.name}' could not be read: {e}"
            return _reject(settings, lf, sha, staged, size, received, 0, error=text, fmt=lf.format,
                           encoding=lf.encoding)
        report = validate_frame(rr.frame, lf.source, settings.expectations_dir,
                                parameters=batch_parameters(spec, lf), extra_outcomes=rr.issues, key=spec.key,
                                file=lf.path.name)
        if report.status == "rejected":
            return _reject(settings, lf, sha, staged, size, received, len(rr.frame), report=report,
                           fmt=rr.format, encoding=rr.encoding)
        return _accept(settings, lf, spec, sha, staged, size, received, rr, report, t0)
    finally:
        staged.unlink(missing_ok=True)


def _accept(settings: Settings, lf: LandedFile, spec: SourceSpec, sha: str, staged: Path, size: int,
            received: datetime, rr: ReadResult, report: ValidationReport, t0: float) -> FileOutcome:
    # Bronze (the file unchanged) and its validation result, then silver; the manifest last: a crash before
    # it means the file is simply ingested again (each step replaces identical content atomically).
    bdir = settings.bronze / lf.source / f"available_date={lf.available.isoformat()}"
    dest = bdir / f"{sha[:12]}__{lf.path.name}"
    _place(staged, dest)
    rep = _report_dict(report, None)
    rep.update({"file": lf.path.name, "sha256": sha, "landing_path": str(lf.path), "bronze_path": str(dest)})
    vjson = dest.with_name(dest.name + ".validation.json")
    atomic_write_bytes(vjson, json.dumps(rep, indent=2).encode())
    page = dest.with_name(dest.name + ".validation.html")
    text = report.to_text()
    atomic_write_bytes(page, render_html(report, f"{lf.source} / {lf.path.name}", text, report.status).encode())
    df = rr.frame.reset_index(drop=True)
    rr.frame = df  # one frame alive, not two
    df["_batch_sha256"] = sha
    if spec.partition_by not in df.columns:
        df[spec.partition_by] = pd.Timestamp(lf.available)
    order = _BatchOrder.build(settings, lf.source, (sha, lf.available, lf.path.name))
    stats = _merge_silver(settings, spec, df, order, sha)
    _write_manifest(settings, lf, sha, size, len(df), report.status, "bronze", dest, received, rep,
                    {"format": rr.format, "encoding": rr.encoding, "chunks": rr.chunks,
                     "report": _rel(settings, vjson), "data_docs": _rel(settings, page), **stats,
                     "duration_s": round(time.monotonic() - t0, 3)})
    detail = text if report.warnings else ""
    return FileOutcome(lf.source, lf.path.name, sha, len(df), report.status, detail, report=str(vjson),
                       data_docs=str(page))


def ingest_source(settings: Settings, source: str, upto: date) -> list[FileOutcome]:
    """Ingest every complete file of ``source`` landed up to ``upto`` that is not known yet."""
    outcomes: list[tuple[tuple, FileOutcome]] = []
    with _source_lock(settings, source):
        sdir = _staging(settings, source)
        for stale in sdir.glob(".*.tmp") if sdir.exists() else []:  # left by a killed run
            stale.unlink(missing_ok=True)
        files, pending = scan_landing(settings, source, upto)
        for p, why in pending:
            lf = parse_landing_name(p)
            outcomes.append(((lf.available if lf else date.min, p.name),
                             FileOutcome(source, p.name, "", 0, "pending", why)))
        for lf in files:
            outcomes.append(((lf.available, lf.path.name), ingest_file(settings, lf)))
    outcomes.sort(key=lambda x: x[0])
    result = [o for _, o in outcomes]
    for o in result:
        if o.status == "rejected":
            log.warning("ingest %s/%s: REJECTED, %d rows quarantined; report: %s\n%s", source, o.name, o.rows,
                        o.report, o.detail)
        elif o.status == "pending":
            log.info("ingest %s/%s: left for the next run (%s)", source, o.name, o.detail)
        elif o.status != "duplicate":
            log.info("ingest %s/%s: %s, %d rows; validation: %s%s", source, o.name, o.status, o.rows,
                     o.data_docs, ("\n" + o.detail) if o.detail else "")
    new = [o for o in result if o.status not in ("duplicate", "pending")]
    docs = build_data_docs(settings) if new else data_docs_index(settings)
    log.info("ingest %s up to %s: %d files seen, %d new, %d rejected, %d pending, %d rows accepted; "
             "validation reports: %s", source, upto, len(result), len(new),
             sum(o.status == "rejected" for o in new), sum(o.status == "pending" for o in result),
             sum(o.rows for o in new if o.status != "rejected"), docs)
    return result


def reconcile(settings: Settings, upto: date) -> dict:
    """Prove every complete landed file due by ``upto`` is in bronze or quarantine (its copy present and of
    the landed size); raise if one is not. Files still waiting for their marker are listed, not required."""
    man = manifest(settings)
    known = {(r["source"], r["sha256"]): r for r in man.to_dict("records")} if len(man) else {}
    missing, pending = [], []
    total = 0
    for source in SOURCES:
        files, pend = scan_landing(settings, source, upto)
        pending += [f"{source}/{p.name} ({why})" for p, why in pend]
        for lf in files:
            total += 1
            sha = sha256_file(lf.path)
            rec = known.get((source, sha))
            if rec is None:
                why = readiness(lf.path, source, sha)
                if why:
                    pending.append(f"{source}/{lf.path.name} ({why})")
                else:
                    missing.append(f"{lf.path} (never ingested)")
                continue
            stored = settings.lake / rec["stored_path"] if rec.get("stored_path") else None
            if stored is not None and (not stored.exists() or stored.stat().st_size != rec["size_bytes"]):
                missing.append(f"{lf.path} (its {rec['stored_at']} copy {stored} is missing or altered)")
    counts = man.groupby("stored_at").size().to_dict() if len(man) else {}
    if missing:
        raise RuntimeError(f"reconciliation failed: {len(missing)} landed files in neither bronze nor "
                           f"quarantine: {missing[:10]}")
    if pending:
        log.warning("reconciliation up to %s: %d files left for the next run: %s", upto, len(pending), pending)
    docs = build_data_docs(settings)
    log.info("reconciliation up to %s: %d landed files, all accounted for (%s); validation reports: %s", upto,
             total, counts, docs)
    out = {"landed": total, **{str(k): int(v) for k, v in counts.items()}}
    if pending:
        out["pending"] = len(pending)
    return out


def data_docs_index(settings: Settings) -> Path:
    return settings.lake / "data_docs" / "index.html"


def build_data_docs(settings: Settings) -> Path:
    """A static site indexing every batch's validation page (newest first); returns its index.html."""
    index = data_docs_index(settings)
    man = manifest(settings)
    rows = []
    if len(man):
        man = man.sort_values(["ingested_at", "source", "file_name"], ascending=[False, True, True])
        for r in man.to_dict("records"):
            page = r.get("data_docs")
            link = (f'<a href="../{html.escape(str(page))}">{html.escape(r["file_name"])}</a>'
                    if isinstance(page, str) and page else html.escape(r["file_name"]))
            status = str(r.get("validation", ""))
            checks = "; ".join(r.get("failed_checks") or []) if isinstance(r.get("failed_checks"), list) else ""
            rows.append(f'<tr class="{html.escape(status)}"><td>{html.escape(str(r.get("ingested_at", ""))[:19])}'
                        f'</td><td>{html.escape(r["source"])}</td><td>{link}</td><td>{html.escape(status)}</td>'
                        f'<td>{r.get("rows", "")}</td><td>{html.escape(checks[:400])}</td></tr>')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>SUNAT pipeline: validation results</title>"
            "<style>body{font-family:sans-serif;margin:2em} td,th{padding:.3em .6em;border-bottom:1px solid #ddd;"
            "text-align:left;vertical-align:top} .rejected{background:#fdd} .accepted_with_warnings{background:#ffe}"
            "</style></head><body><h1>Validation results (Great Expectations)</h1>"
            f"<p>{len(rows)} landed files; rejected files are in quarantine/ with a .report.txt.</p>"
            "<table><tr><th>ingested (UTC)</th><th>source</th><th>file</th><th>result</th><th>rows</th>"
            "<th>failed checks</th></tr>" + "".join(rows) + "</table></body></html>")
    atomic_write_bytes(index, page.encode())
    return index


def silver(settings: Settings, source: str, upto: date | None = None, since: date | None = None) -> pd.DataFrame:
    """Read a silver table (optionally bounded by its partition date) with the partition as a date."""
    spec = SOURCES[source]
    base = settings.silver / source
    files = []
    for p in sorted(base.glob(f"{spec.partition_by}=*")) if base.exists() else []:
        d = date.fromisoformat(p.name.split("=", 1)[1])
        if (upto is not None and d > upto) or (since is not None and d < since):
            continue
        files.extend(sorted(p.glob("*.parquet")))
    out = read_files(files)
    if out is None:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in spec.columns})
    return out


def history(settings: Settings, source: str) -> pd.DataFrame:
    """Superseded versions of silver rows: each with the batch that supplied it (``_batch_sha256``,
    ``_batch_file``) and the batch that replaced it (``_superseded_by``, ``_superseded_by_file``)."""
    base = settings.silver / HISTORY_DIR / source
    files = sorted(base.glob("*/*.parquet")) if base.exists() else []
    if not files:
        return pd.DataFrame(columns=[*SOURCES[source].columns, "_batch_sha256", "_superseded_by"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


__all__ = ["ingest_source", "ingest_file", "reconcile", "silver", "history", "manifest", "read_typed",
           "read_batch", "iter_typed_chunks", "BadFileError", "FileOutcome", "build_data_docs", "scan_landing"]
