"""Ingestion, one module per step a newcomer looks for:

``sources`` (the landing contract: sources, columns, types, names, completeness), ``landing`` (scanning the
landing zone, staging, bronze/quarantine placement, the manifest), ``reading`` (encoding and structure
checks, streaming CSV/Parquet reads) and ``convert`` (typing a read block, the reader's value checks),
``validation`` (the Great Expectations project and its Checkpoints) and ``report`` (what a validation found),
``silver_tables`` (upserts, history, reads), ``run`` (one file, one source: what the DAG's ingest tasks run),
``datadocs`` (GX Data Docs), ``reconciliation`` and ``crosscheck`` (after every source of a day is in);
``mapping`` maps an external extract to the canonical schema.

The names below are the package's interface for the other stages (``from sunat_pipeline import ingest``).
"""

from sunat_pipeline.ingest.crosscheck import held
from sunat_pipeline.ingest.datadocs import build_data_docs, data_docs_index
from sunat_pipeline.ingest.landing import manifest, scan_landing
from sunat_pipeline.ingest.reading import BadFileError, iter_typed_chunks, read_batch, read_typed
from sunat_pipeline.ingest.reconciliation import reconcile
from sunat_pipeline.ingest.run import FileOutcome, ingest_file, ingest_source
from sunat_pipeline.ingest.silver_tables import history, silver

__all__ = ["BadFileError", "FileOutcome", "build_data_docs", "data_docs_index", "held", "history", "ingest_file",
           "ingest_source", "iter_typed_chunks", "manifest", "read_batch", "read_typed", "reconcile",
           "scan_landing", "silver"]
