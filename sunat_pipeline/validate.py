"""Great Expectations validation of one batch against the committed suite of its source.

Suites live as JSON in ``expectations/`` and are reviewed like code. Each expectation carries a GX
``severity``: ``critical`` failures reject the batch (quarantine), ``warning`` failures accept it and flag it.
An ephemeral GX context per call avoids concurrent writes to a shared ``gx/`` folder on workers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    sample: list


@dataclass
class ValidationReport:
    source: str
    suite: str
    rows: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity != "critical"]

    @property
    def status(self) -> str:
        if self.critical_failures:
            return "rejected"
        return "accepted_with_warnings" if self.warnings else "accepted"

    def to_dict(self) -> dict:
        return {"source": self.source, "suite": self.suite, "rows": self.rows, "status": self.status,
                "outcomes": [asdict(o) for o in self.outcomes]}

    def to_text(self) -> str:
        lines = [f"Validation of a {self.source} batch ({self.rows} rows) with suite '{self.suite}': "
                 f"{self.status.upper()}"]
        for title, items in (("Critical failures", self.critical_failures), ("Warnings", self.warnings)):
            if items:
                lines.append(f"{title}:")
                for o in items:
                    where = f" on column '{o.column}'" if o.column else ""
                    n = f", {o.unexpected_count} rows" if o.unexpected_count is not None else ""
                    lines.append(f"  - {o.expectation}{where}{n}; sample: {o.sample[:5]}")
        return "\n".join(lines)


def load_suite(path: Path):
    import great_expectations as gx

    spec = json.loads(Path(path).read_text())
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=spec.get("meta"))
    # GX logs and drops an invalid expectation; a suite that silently shrank must not pass.
    if len(suite.expectations) != len(spec["expectations"]):
        raise ValueError(f"suite {path} has invalid expectations: loaded {len(suite.expectations)} "
                         f"of {len(spec['expectations'])}")
    return suite


def validate_frame(df: pd.DataFrame, source: str, expectations_dir: Path) -> ValidationReport:
    import great_expectations as gx

    suite = load_suite(Path(expectations_dir) / f"{source}.json")
    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas(name=f"{source}_src").add_dataframe_asset(name=source)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format="SUMMARY")
    report = ValidationReport(source=source, suite=suite.name, rows=len(df))
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        sample = res.get("partial_unexpected_list") or []
        report.outcomes.append(ExpectationOutcome(
            expectation=cfg.type,
            column=cfg.kwargs.get("column") or (",".join(cfg.kwargs.get("column_list", [])) or None),
            severity=str(getattr(cfg.severity, "value", cfg.severity) or "critical"),
            success=bool(r.success),
            unexpected_count=res.get("unexpected_count"),
            sample=[str(x) for x in sample[:10]],
        ))
    log.info("validated %s: %d rows, %d expectations, %s", source, len(df), len(report.outcomes), report.status)
    return report
