"""Landing -> bronze (byte-for-byte, with a manifest) -> validation -> silver (typed, deduplicated).

Every landed file ends either in bronze (accepted) or in quarantine (rejected, with a report). The
manifest is a folder of one JSON record per file, keyed by the file's sha256, so the same file landing
twice is a no-op and concurrent tasks never rewrite a shared manifest file.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.lake import atomic_write_bytes, partition, replace_partition, sha256_file
from sunat_pipeline.settings import Settings
from sunat_pipeline.sources import DATE, INTEGER, NUMERIC, SOURCES, LandedFile, SourceSpec, parse_landing_name
from sunat_pipeline.validate import validate_frame

log = logging.getLogger(__name__)


class BadFileError(ValueError):
    """The file cannot be read as its source's contract says (missing columns, not CSV...)."""


def read_typed(path: Path, spec: SourceSpec) -> pd.DataFrame:
    """Read a landed CSV with the contract's types. Unparseable values become null (GX then rejects)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError as e:
        raise BadFileError("file is empty (no header line)") from e
    except UnicodeDecodeError as e:
        raise BadFileError(f"file is not valid UTF-8: {e}") from e
    missing = [c for c in spec.columns if c not in raw.columns]
    if missing:
        raise BadFileError(f"missing columns {missing}; found {list(raw.columns)}")
    out = {}
    for col, typ in spec.columns.items():
        s = raw[col].str.strip()
        if typ == NUMERIC:
            out[col] = pd.to_numeric(s.replace("", None), errors="coerce").astype("float64")
        elif typ == INTEGER:
            out[col] = pd.to_numeric(s.replace("", None), errors="coerce").astype("Int64")
        elif typ == DATE:
            out[col] = pd.to_datetime(s.replace("", None), format="%Y-%m-%d", errors="coerce")
        else:
            out[col] = s.astype("str")
    return pd.DataFrame(out)


@dataclass
class FileOutcome:
    source: str
    name: str
    sha256: str
    rows: int
    status: str  # accepted | accepted_with_warnings | rejected | duplicate
    detail: str = ""


def _manifest_dir(settings: Settings) -> Path:
    return settings.bronze / "_manifest"


def manifest(settings: Settings) -> pd.DataFrame:
    recs = [json.loads(p.read_text()) for p in sorted(_manifest_dir(settings).glob("*/*.json"))]
    return pd.DataFrame(recs)


def _known(settings: Settings, lf: LandedFile, sha: str) -> bool:
    """The same bytes were already ingested. A copy rejected only for its name does not count for a
    well-named file: re-landing a misnamed file under its right name must ingest it."""
    rec = _manifest_dir(settings) / lf.source / f"{sha}.json"
    if not rec.exists():
        return False
    rejected_for_name = json.loads(rec.read_text()).get("available_date") is None
    return not rejected_for_name or lf.tag == "__badname__"


def due_files(settings: Settings, source: str, upto: date) -> list[LandedFile]:
    folder = settings.landing / source
    files = []
    for p in sorted(folder.glob("*")) if folder.exists() else []:
        if p.name.startswith("."):  # hidden: a copy still in progress
            continue
        lf = parse_landing_name(p)
        if lf is None or lf.source != source:
            files.append(LandedFile(p, source, date.min, "__badname__"))
        elif lf.available <= upto:
            files.append(lf)
    return sorted(files, key=lambda f: (f.available, f.path.name))


def _quarantine(settings: Settings, lf: LandedFile, sha: str, text: str, report: dict) -> None:
    qdir = settings.quarantine / lf.source
    qdir.mkdir(parents=True, exist_ok=True)
    dest = qdir / f"{sha[:12]}__{lf.path.name}"
    if not dest.exists():
        shutil.copyfile(lf.path, dest)
    atomic_write_bytes(dest.with_name(dest.name + ".report.txt"), text.encode())
    atomic_write_bytes(dest.with_name(dest.name + ".report.json"), json.dumps(report, indent=2).encode())


def _write_manifest(settings: Settings, lf: LandedFile, sha: str, rows: int, status: str, where: str,
                    received: datetime, report: dict | None) -> None:
    rec = {
        "source": lf.source, "file_name": lf.path.name, "sha256": sha, "size_bytes": lf.path.stat().st_size,
        "rows": rows, "available_date": lf.available.isoformat() if lf.available != date.min else None,
        "received_at": received.isoformat(), "ingested_at": datetime.now(UTC).isoformat(),
        "validation": status, "stored_at": where,
        "critical_failures": len((report or {}).get("critical", [])),
    }
    atomic_write_bytes(_manifest_dir(settings) / lf.source / f"{sha}.json", json.dumps(rec, indent=2).encode())


def _merge_silver(settings: Settings, spec: SourceSpec, df: pd.DataFrame) -> int:
    """Upsert rows into silver partitions: later batches supersede earlier rows with the same key."""
    base = settings.silver / spec.name
    written = 0
    for value, part in df.groupby(spec.partition_by, sort=True):
        d = pd.Timestamp(value).date()
        pdir = partition(base, spec.partition_by, d)
        existing = [pd.read_parquet(f) for f in sorted(pdir.glob("*.parquet"))]
        merged = pd.concat([*existing, part], ignore_index=True)
        merged = merged.drop_duplicates(list(spec.key), keep="last")
        merged = merged.sort_values(list(spec.key), kind="stable").reset_index(drop=True)
        replace_partition(merged, pdir)
        written += len(part)
    return written


def ingest_file(settings: Settings, lf: LandedFile) -> FileOutcome:
    received = datetime.fromtimestamp(lf.path.stat().st_mtime, UTC)
    sha = sha256_file(lf.path)
    if _known(settings, lf, sha):
        return FileOutcome(lf.source, lf.path.name, sha, 0, "duplicate", "same bytes already ingested")
    if lf.tag == "__badname__":
        text = (f"File name '{lf.path.name}' does not follow the landing contract "
                "<source>__<YYYY-MM-DD>[__tag].csv (see docs/landing.md).")
        _quarantine(settings, lf, sha, text, {"error": text})
        _write_manifest(settings, lf, sha, 0, "rejected", "quarantine", received, {"critical": [text]})
        return FileOutcome(lf.source, lf.path.name, sha, 0, "rejected", text)
    spec = SOURCES[lf.source]
    try:
        df = read_typed(lf.path, spec)
    except BadFileError as e:
        text = f"{lf.source} file '{lf.path.name}' could not be read: {e}"
        _quarantine(settings, lf, sha, text, {"error": str(e)})
        _write_manifest(settings, lf, sha, 0, "rejected", "quarantine", received, {"critical": [str(e)]})
        return FileOutcome(lf.source, lf.path.name, sha, 0, "rejected", str(e))
    report = validate_frame(df, lf.source, settings.expectations_dir)
    rep = report.to_dict()
    rep["critical"] = [o.expectation for o in report.critical_failures]
    if report.status == "rejected":
        _quarantine(settings, lf, sha, report.to_text(), rep)
        _write_manifest(settings, lf, sha, len(df), "rejected", "quarantine", received, rep)
        return FileOutcome(lf.source, lf.path.name, sha, len(df), "rejected", report.to_text())
    # Bronze: the file unchanged, then silver. The manifest is written last: a crash before it means
    # the file is simply ingested again (silver upserts are idempotent).
    bdir = settings.bronze / lf.source / f"available_date={lf.available.isoformat()}"
    bdir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(bdir / f"{sha[:12]}__{lf.path.name}", lf.path.read_bytes())
    atomic_write_bytes(bdir / f"{sha[:12]}__{lf.path.name}.validation.json", json.dumps(rep, indent=2).encode())
    df["_batch_sha256"] = sha
    if spec.partition_by not in df.columns:
        df[spec.partition_by] = pd.Timestamp(lf.available)
    _merge_silver(settings, spec, df)
    _write_manifest(settings, lf, sha, len(df), report.status, "bronze", received, rep)
    detail = report.to_text() if report.warnings else ""
    return FileOutcome(lf.source, lf.path.name, sha, len(df), report.status, detail)


def ingest_source(settings: Settings, source: str, upto: date) -> list[FileOutcome]:
    outcomes = []
    for lf in due_files(settings, source, upto):
        o = ingest_file(settings, lf)
        if o.status != "duplicate":
            level = logging.WARNING if o.status == "rejected" else logging.INFO
            log.log(level, "ingest %s/%s: %s, %d rows %s", source, o.name, o.status, o.rows,
                    ("\n" + o.detail) if o.detail else "")
        outcomes.append(o)
    new = [o for o in outcomes if o.status != "duplicate"]
    log.info("ingest %s up to %s: %d files seen, %d new, %d rejected, %d rows accepted", source, upto,
             len(outcomes), len(new), sum(o.status == "rejected" for o in new),
             sum(o.rows for o in new if o.status != "rejected"))
    return outcomes


def reconcile(settings: Settings, upto: date) -> dict:
    """Prove every landed file due by ``upto`` is in bronze or quarantine; raise if one is not."""
    man = manifest(settings)
    known = set(zip(man.get("source", []), man.get("sha256", []), strict=True)) if len(man) else set()
    missing = []
    total = 0
    for source in SOURCES:
        for lf in due_files(settings, source, upto):
            total += 1
            if (source, sha256_file(lf.path)) not in known:
                missing.append(str(lf.path))
    counts = man.groupby("stored_at").size().to_dict() if len(man) else {}
    if missing:
        raise RuntimeError(f"reconciliation failed: {len(missing)} landed files in neither bronze nor "
                           f"quarantine: {missing[:10]}")
    log.info("reconciliation up to %s: %d landed files, all accounted for (%s)", upto, total, counts)
    return {"landed": total, **{str(k): int(v) for k, v in counts.items()}}


def silver(settings: Settings, source: str, upto: date | None = None, since: date | None = None) -> pd.DataFrame:
    """Read a silver table (optionally bounded by its partition date) with the partition as a date."""
    spec = SOURCES[source]
    base = settings.silver / source
    frames = []
    for p in sorted(base.glob(f"{spec.partition_by}=*")) if base.exists() else []:
        d = date.fromisoformat(p.name.split("=", 1)[1])
        if (upto is not None and d > upto) or (since is not None and d < since):
            continue
        for f in sorted(p.glob("*.parquet")):
            frames.append(pd.read_parquet(f))
    if not frames:
        cols = {c: pd.Series(dtype="object") for c in spec.columns}
        return pd.DataFrame(cols)
    out = pd.concat(frames, ignore_index=True)
    return out


__all__ = ["ingest_source", "reconcile", "silver", "manifest", "read_typed", "BadFileError", "np"]
