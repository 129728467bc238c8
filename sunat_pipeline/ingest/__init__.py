"""Ingestion: landing-zone contract, reading extracts, Great Expectations validation, bronze/quarantine,
silver upserts, reconciliation and Data Docs; ``mapping`` maps an external extract to the canonical schema."""
