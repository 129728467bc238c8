"""Ingesting a source: landing -> bronze (byte-for-byte, with a manifest) -> validation -> silver.

Every landed file that is complete (docs/landing.md) ends either in bronze (accepted) or in quarantine
(rejected, with a plain-language report), never both and never neither; ``reconcile`` proves it.

A file is copied once into a staging folder (hashing while copying, so what is validated is exactly what was
hashed), read from that copy in bounded chunks, typed by the contract in ``sources.py``, validated by its
source's GX Checkpoint, then moved atomically into bronze or quarantine. Accepted rows upsert silver. The
manifest record is written last, so a task killed anywhere is simply re-run: every step before it is
idempotent (atomic replaces of identical content).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from sunat_pipeline.ingest import landing
from sunat_pipeline.ingest.datadocs import build_data_docs
from sunat_pipeline.ingest.reading import BadFileError, ReadResult, read_batch
from sunat_pipeline.ingest.report import ValidationReport
from sunat_pipeline.ingest.silver_tables import BatchOrder, merge_silver
from sunat_pipeline.ingest.sources import BADNAME, SOURCES, LandedFile, SourceSpec, name_problem, parse_landing_name
from sunat_pipeline.ingest.sources import readiness as _readiness
from sunat_pipeline.ingest.validation import GxProject, default_parameters
from sunat_pipeline.lake.store import atomic_write_bytes, sha256_file
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class FileOutcome:
    source: str
    name: str
    sha256: str
    rows: int
    status: str  # accepted | accepted_with_warnings | rejected | duplicate | pending
    detail: str = ""
    report: str = ""  # rejected: the quarantine report (.report.txt); accepted: the validation result (.json)
    data_docs: str = ""  # the GX Data Docs page of the batch's validation (none for a file GX never saw)


def readiness(settings: Settings, lf: LandedFile, sha: str) -> str | None:
    return _readiness(lf.path, sha, settings.ingest.marker_required(lf.source))


def batch_parameters(spec: SourceSpec, lf: LandedFile) -> dict:
    return default_parameters(lf.available, spec.window_days, spec.freshness_days, bulk=lf.is_bulk)


def _report_dict(report: ValidationReport | None, error: str | None) -> dict:
    rep = report.to_dict() if report is not None else {"status": "rejected", "error": error, "outcomes": []}
    rep["critical"] = [o.describe() for o in report.critical_failures] if report is not None else [error]
    rep["warning"] = [o.describe() for o in report.warnings] if report is not None else []
    return rep


def _gx_fields(settings: Settings, report: ValidationReport | None) -> dict:
    """Manifest fields: the GX results stored for the file and their Data Docs pages (relative to the lake)."""
    if report is None or not report.gx_results:
        return {"data_docs": ""}
    results = [{"key": r["key"], "page": landing.rel(settings, Path(r["page"]))} for r in report.gx_results]
    return {"data_docs": results[-1]["page"], "gx_results": results}


def _reject(settings: Settings, lf: LandedFile, sha: str, staged: Path, size: int, received: datetime,
            rows: int, report: ValidationReport | None = None, error: str | None = None,
            fmt: str = "", encoding: str = "") -> FileOutcome:
    dest = settings.quarantine / lf.source / f"{sha[:12]}__{landing.safe_name(lf.path.name)}"
    landing.place(staged, dest)
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
    txt = dest.with_name(dest.name + ".report.txt")
    atomic_write_bytes(txt, text.encode())
    atomic_write_bytes(dest.with_name(dest.name + ".report.json"), json.dumps(rep, indent=2).encode())
    gx = _gx_fields(settings, report)
    landing.write_manifest(settings, lf, sha, size, rows, "rejected", "quarantine", dest, received, rep,
                           {"format": fmt, "encoding": encoding, "report": landing.rel(settings, txt), **gx})
    return FileOutcome(lf.source, lf.path.name, sha, rows, "rejected", text, report=str(txt),
                       data_docs=report.data_docs if report is not None else "")


def ingest_file(settings: Settings, lf: LandedFile, project: GxProject | None = None) -> FileOutcome:
    """One landed file to bronze + silver, or to quarantine; ``project``: the task's GX project (made on
    demand otherwise)."""
    st = lf.path.stat()
    received = datetime.fromtimestamp(st.st_mtime, UTC)
    sha = sha256_file(lf.path)
    if landing.known(settings, lf, sha):
        return FileOutcome(lf.source, lf.path.name, sha, 0, "duplicate", "same bytes already ingested")
    why = readiness(settings, lf, sha)
    if why:
        return FileOutcome(lf.source, lf.path.name, sha, 0, "pending", why)
    t0 = time.monotonic()
    try:
        staged = landing.stage(settings, lf, sha)
    except landing.ChangedWhileReading as e:
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
        project = project or GxProject(settings, (lf.source,))
        report = project.validate(rr.frame, lf.source, parameters=batch_parameters(spec, lf),
                                  extra_outcomes=rr.issues, file=lf.path.name,
                                  run_name=f"{lf.path.name}__{sha[:12]}")
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
    dest = settings.bronze / lf.source / f"available_date={lf.available.isoformat()}" / f"{sha[:12]}__{lf.path.name}"
    landing.place(staged, dest)
    rep = _report_dict(report, None)
    rep.update({"file": lf.path.name, "sha256": sha, "landing_path": str(lf.path), "bronze_path": str(dest)})
    vjson = dest.with_name(dest.name + ".validation.json")
    atomic_write_bytes(vjson, json.dumps(rep, indent=2).encode())
    df = rr.frame.reset_index(drop=True)
    rr.frame = df  # one frame alive, not two
    df["_batch_sha256"] = sha
    if spec.partition_by not in df.columns:
        df[spec.partition_by] = pd.Timestamp(lf.available)
    order = BatchOrder.build(settings, lf.source, (sha, lf.available, lf.path.name))
    stats = merge_silver(settings, spec, df, order, sha)
    landing.write_manifest(settings, lf, sha, size, len(df), report.status, "bronze", dest, received, rep,
                           {"format": rr.format, "encoding": rr.encoding, "chunks": rr.chunks,
                            "report": landing.rel(settings, vjson), **_gx_fields(settings, report), **stats,
                            "duration_s": round(time.monotonic() - t0, 3)})
    detail = report.to_text() if report.warnings else ""
    return FileOutcome(lf.source, lf.path.name, sha, len(df), report.status, detail, report=str(vjson),
                       data_docs=report.data_docs)


def ingest_source(settings: Settings, source: str, upto: date) -> list[FileOutcome]:
    """Ingest every complete file of ``source`` landed up to ``upto`` that is not known yet; then have GX
    build the Data Docs pages of the new validations."""
    outcomes: list[tuple[tuple, FileOutcome]] = []
    project = GxProject(settings, (source,))
    with landing.source_lock(settings, source):
        sdir = landing.staging(settings, source)
        for stale in sdir.glob(".*.tmp") if sdir.exists() else []:  # left by a killed run
            stale.unlink(missing_ok=True)
        files, pending = landing.scan_landing(settings, source, upto)
        for p, why in pending:
            lf = parse_landing_name(p)
            outcomes.append(((lf.available if lf else date.min, p.name),
                             FileOutcome(source, p.name, "", 0, "pending", why)))
        for lf in files:
            outcomes.append(((lf.available, lf.path.name), ingest_file(settings, lf, project)))
        new = [o for _, o in outcomes if o.status not in ("duplicate", "pending")]
        # Also renders pages a killed run left unbuilt; opens GX only when there is a page to render.
        docs = build_data_docs(settings, project, source) if settings.ingest.data_docs else "(not built: " \
            "ingest.data_docs is off)"
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
                     o.data_docs or o.report, ("\n" + o.detail) if o.detail else "")
    log.info("ingest %s up to %s: %d files seen, %d new, %d rejected, %d pending, %d rows accepted; "
             "Data Docs: %s", source, upto, len(result), len(new), sum(o.status == "rejected" for o in new),
             sum(o.status == "pending" for o in result), sum(o.rows for o in new if o.status != "rejected"), docs)
    return result
