"""The append-only audit trail of scoring decisions (docs/output.md, "Audit trail").

Every decision (one per declaration) of a scoring run goes to ``gold/audit/declaration_date=D/run-<run_id>.parquet``
(the date in the path only, like the scored output) with the model and weights versions, the configuration
checksum, the checksums of the input batches and the run id. A run id is recorded once: a re-run with the
same run id leaves the trail untouched; a run with another id (new configuration, new inputs) adds its own
file beside the earlier ones.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from sunat_pipeline.lake.store import partition, read_partitioned, write_partition
from sunat_pipeline.selection.output import KEY
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

AUDIT_COLUMNS = [
    "decision_id", "run_id", "declaration_id", "declaration_date", "customs_office", "importer_id",
    "declarant_id", "n_items", "channel", "selection_reason", "selection_basis", "fraud_probability",
    "expected_revenue_usd", "revenue_if_fraud_usd", "uncertainty", "rule_score", "rule_hits", "mandatory",
    "workload_units", "selection_probability", "reasons", "model_name", "model_version", "rule_weights_version",
    "rules_sha256", "config_sha256", "input_batches", "inputs_sha256", "schema_version", "scored_at", "recorded_at",
]


def audit_dir(settings: Settings) -> Path:
    return settings.gold / "audit"


def read_audit(settings: Settings, day: date | None = None) -> pd.DataFrame:
    """The audit trail: every decision of every scoring run (of ``day``, or all days), oldest run first."""
    a = read_partitioned(audit_dir(settings), KEY, upto=day, since=day, empty=AUDIT_COLUMNS)[AUDIT_COLUMNS]
    if len(a):
        a = a.sort_values([KEY, "recorded_at", "run_id", "declaration_id"], kind="stable")
    return a.reset_index(drop=True)


def write_audit(settings: Settings, day: date, decisions: pd.DataFrame) -> tuple[Path, bool]:
    """Append the decisions of one run (all with the same ``run_id``) to the trail; a no-op when that run is
    already recorded. Returns (path, written)."""
    run_ids = decisions.run_id.unique()
    if len(run_ids) != 1:
        raise ValueError(f"one run per audit append, got {list(run_ids)}")
    name = f"run-{run_ids[0]}.parquet"
    path = partition(audit_dir(settings), KEY, day) / name
    if path.exists():
        log.info("audit of run %s for %s already recorded: left as is", run_ids[0], day)
        return path, False
    recorded_at = pd.Timestamp(datetime.now(UTC).replace(microsecond=0))
    write_partition(decisions.assign(recorded_at=recorded_at)[AUDIT_COLUMNS], audit_dir(settings), KEY, day, name)
    log.info("audit of run %s for %s: %d decisions recorded", run_ids[0], day, len(decisions))
    return path, True


def audit_frame(scored: pd.DataFrame, decl: pd.DataFrame, run: dict, inputs_sha: dict) -> pd.DataFrame:
    """One row per declaration of a scoring run: its decision, the versions and checksums behind it."""
    g = scored.groupby("declaration_id", sort=True)
    first = g.first()
    hits = g.rule_hits.agg(lambda s: sorted({h for hl in s for h in hl}))
    reasons = g.reasons.agg(lambda s: list(dict.fromkeys(r for rl in s for r in rl)))
    d = decl.set_index("declaration_id")
    out = pd.DataFrame({
        "run_id": run["run_id"], "declaration_id": d.index, "declaration_date": first.declaration_date,
        "customs_office": d.customs_office, "importer_id": d.importer_id, "declarant_id": first.declarant_id,
        "n_items": d.n_items.astype("int64"), "channel": d.channel, "selection_reason": d.selection_reason,
        "selection_basis": d.selection_basis, "fraud_probability": d.fraud_probability.round(6),
        "expected_revenue_usd": d.expected_revenue_usd.round(2), "revenue_if_fraud_usd": d.revenue_if_fraud_usd,
        "uncertainty": d.uncertainty, "rule_score": d.rule_score, "rule_hits": hits, "mandatory": d.mandatory,
        "workload_units": d.workload_units, "selection_probability": d.selection_probability, "reasons": reasons,
        "model_name": run["model_name"],
        "model_version": run["model_version"], "rule_weights_version": run["rule_weights_version"],
        "rules_sha256": run["rules_sha256"], "config_sha256": run["config_sha256"],
        "input_batches": [run["input_batches"]] * len(d), "inputs_sha256": json.dumps(inputs_sha, sort_keys=True),
        "schema_version": run["schema_version"], "scored_at": pd.Timestamp(run["scored_at"]),
    })
    out.insert(0, "decision_id", out.run_id + ":" + out.declaration_id)
    return out.reset_index(drop=True)
