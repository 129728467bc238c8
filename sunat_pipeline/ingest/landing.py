"""The landing zone and the manifest: which landed files are due and complete, staging a file for reading,
placing it in bronze or quarantine, and the manifest of every file handled.

The manifest is a folder of one JSON record per file (``bronze/_manifest/<source>/<sha256>.json``), keyed by
the file's sha256, so the same file landing twice is a no-op and concurrent tasks never rewrite a shared file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from sunat_pipeline.ingest.sources import (
    BADNAME,
    LandedFile,
    is_ignored,
    marker_path,
    parse_landing_name,
)
from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


class ChangedWhileReading(RuntimeError):
    """The landed file's bytes changed between hashing and copying: still being written."""


def manifest_dir(settings: Settings) -> Path:
    return settings.bronze / "_manifest"


def manifest(settings: Settings) -> pd.DataFrame:
    """Every landed file handled so far: one row per file (source, name, sha256, where it is stored...)."""
    recs = [json.loads(p.read_text()) for p in sorted(manifest_dir(settings).glob("*/*.json"))]
    return pd.DataFrame(recs)


def records(settings: Settings, source: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((manifest_dir(settings) / source).glob("*.json"))]


def known(settings: Settings, lf: LandedFile, sha: str) -> bool:
    """The same bytes were already ingested. A copy rejected only for its name does not count for a
    well-named file: re-landing a misnamed file under its right name must ingest it."""
    rec = manifest_dir(settings) / lf.source / f"{sha}.json"
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
        if settings.ingest.marker_required(source) and not marker_path(p).exists():
            pending.append((p, f"waiting for its completion marker {marker_path(p).name}"))
            continue
        files.append(lf)
    return sorted(files, key=lambda f: (f.available, f.path.name)), pending


def landed_through(settings: Settings, source: str) -> date | None:
    """The latest day the source's complete landed files cover (the newest file's date; a bulk history file
    covers every day up to its own), or None before any. A daily run waits on it: a source system that delivered
    a day has delivered every day before it."""
    files, _ = scan_landing(settings, source, date.max)
    days = [f.available for f in files if f.available != date.min]
    return max(days) if days else None


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).replace("..", "_")


def rel(settings: Settings, p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(settings.lake))
    except ValueError:
        return str(p)


def write_manifest(settings: Settings, lf: LandedFile, sha: str, size: int, rows: int, status: str, where: str,
                   stored: Path, received: datetime, report: dict | None, extra: dict | None = None) -> None:
    rep = report or {}
    rec = {
        "source": lf.source, "file_name": lf.path.name, "sha256": sha, "size_bytes": size,
        "rows": rows, "available_date": lf.available.isoformat() if lf.available != date.min else None,
        "received_at": received.isoformat(), "ingested_at": datetime.now(UTC).isoformat(),
        "validation": status, "stored_at": where, "stored_path": rel(settings, stored),
        "critical_failures": len(rep.get("critical", [])), "warnings": len(rep.get("warning", [])),
        "failed_checks": rep.get("critical", []) + rep.get("warning", []),
        **(extra or {}),
    }
    atomic_write_bytes(manifest_dir(settings) / lf.source / f"{sha}.json", json.dumps(rec, indent=2).encode())


@contextlib.contextmanager
def source_lock(settings: Settings, source: str):
    """One ingest of a source at a time (two backfill runs must not interleave their silver upserts)."""
    p = settings.bronze / "_locks" / f"{source}.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def staging(settings: Settings, source: str) -> Path:
    return settings.bronze / "_staging" / source


def stage(settings: Settings, lf: LandedFile, sha: str) -> Path:
    """Copy the landed file into staging, hashing while copying: what is validated is what was hashed."""
    sdir = staging(settings, lf.source)
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
        raise ChangedWhileReading(f"{lf.path.name} changed while it was being read: still being written")
    return Path(tmp)


def place(staged: Path, dest: Path) -> None:
    """Move the staged copy into place atomically (a same-filesystem rename; else copy then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, dest)
    except OSError:
        atomic_write_bytes(dest, staged.read_bytes())
