"""Reconciliation, after every source of the day is ingested: each complete landed file due is in bronze or
quarantine with its stored copy intact (the run fails otherwise); then the cross-source check
(``crosscheck``), which needs every source of the day in silver."""

from __future__ import annotations

import logging
from datetime import date

from sunat_pipeline.ingest.crosscheck import check_enforcement
from sunat_pipeline.ingest.datadocs import data_docs_index
from sunat_pipeline.ingest.landing import manifest, scan_landing
from sunat_pipeline.ingest.sources import SOURCES, readiness
from sunat_pipeline.lake.store import sha256_file
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def reconcile(settings: Settings, upto: date, sources: tuple[str, ...] = tuple(SOURCES)) -> dict:
    """Prove every complete landed file of ``sources`` due by ``upto`` is in bronze or quarantine (its copy
    present and of the landed size); raise if one is not. Files still waiting for their marker are listed, not
    required. Then hold (or release) enforcement rows that contradict customs (``crosscheck``)."""
    man = manifest(settings)
    known = {(r["source"], r["sha256"]): r for r in man.to_dict("records")} if len(man) else {}
    missing, pending = [], []
    total = 0
    for source in sources:
        files, pend = scan_landing(settings, source, upto)
        pending += [f"{source}/{p.name} ({why})" for p, why in pend]
        for lf in files:
            total += 1
            sha = sha256_file(lf.path)
            rec = known.get((source, sha))
            if rec is None:
                why = readiness(lf.path, sha, settings.ingest.marker_required(source))
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
    log.info("reconciliation up to %s: %d landed files, all accounted for (%s); Data Docs: %s", upto, total,
             counts, data_docs_index(settings))
    out = {"landed": total, **{str(k): int(v) for k, v in counts.items()}}
    if pending:
        out["pending"] = len(pending)
    held = check_enforcement(settings, upto)
    if held["held_rows"] or held["released_rows"]:
        out.update(held)
    return out
