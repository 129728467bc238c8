"""Data Docs: Great Expectations builds its static site (``<lake>/data_docs/index.html``) from the validation
results its Checkpoints stored.

Built once per ingest task run, not per file: GX renders the page of each new result, then the index (which
reads every result it lists, so it lists the newest ``INDEX_LIMIT``). A result whose page is missing - a run
killed between validating and building - is found through the manifest and rendered by the next build.
Files rejected before validation (unreadable, misnamed) have no GX result: their record is the quarantine
report (``.report.txt``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sunat_pipeline.ingest.landing import manifest, records
from sunat_pipeline.ingest.validation import DOCS_DIR, SITE, GxProject, gx_dir, gx_lock
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def data_docs_index(settings: Settings) -> Path:
    return Path(os.path.normpath(gx_dir(settings) / DOCS_DIR / "index.html"))


def build_data_docs(settings: Settings, project: GxProject | None = None, source: str | None = None) -> Path:
    """Have GX render the pages of stored results that have none yet (of ``source``, or of every source),
    then the index. Returns the index."""
    recs = records(settings, source) if source else manifest(settings).to_dict("records")
    missing = [g["key"] for r in recs if isinstance(r.get("gx_results"), list) for g in r["gx_results"]
               if not (settings.lake / g["page"]).exists()]
    index = data_docs_index(settings)
    if not missing:  # (the index is rendered with every page, so it exists once any file was validated)
        return index
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    context = (project or GxProject(settings)).context  # opened before locking: it takes the lock itself
    with gx_lock(settings, exclusive=True):
        context.build_data_docs(
            site_names=[SITE], resource_identifiers=[ValidationResultIdentifier.from_tuple(tuple(k)) for k in missing])
    log.info("Data Docs: %d validation pages rendered by Great Expectations; index %s", len(missing), index)
    return index
