"""What validation found, in plain language: one outcome per check (Great Expectations' or the reader's)
and the report of a batch, as text (``.report.txt``), JSON and a status (accepted, with warnings, rejected)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

SAMPLE = 5  # offending values and rows kept per failed check


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    sample: list
    unexpected_percent: float | None = None
    observed: str | None = None
    notes: str = ""
    check: str = ""  # schema, types, not_null, unique, format, allowed_set, ranges, cross_field, dates, text...
    kwargs: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)  # data row numbers (1-based) of a sample of offending rows
    sample_rows: list = field(default_factory=list)  # those rows, as {column: value}
    origin: str = "gx"  # gx | reader (the typed reader's structural, type and text checks)

    def describe(self) -> str:
        """One plain-language line."""
        where = f" on column '{self.column}'" if self.column else ""
        args = {k: v for k, v in self.kwargs.items() if k not in ("column", "column_list", "value_set", "regex",
                                                                 "type_list", "column_set", "condition_parser")}
        if "value_set" in self.kwargs:
            args["allowed"] = f"{len(self.kwargs['value_set'])} values"
        if "regex" in self.kwargs:
            args["format"] = self.kwargs["regex"]
        arg = f" ({', '.join(f'{k}={_short(v)}' for k, v in args.items())})" if args else ""
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent is not None else ""
            n = f": {self.unexpected_count} rows{pct}"
        elif self.observed is not None:
            n = f": observed {self.observed}"
        else:
            n = ""
        why = f" [{self.notes}]" if self.notes else ""
        return f"{self.expectation}{where}{arg}{n}{why}"


def _day(v: pd.Timestamp | datetime | date) -> str:
    return pd.Timestamp(v).isoformat()[:10]  # (a Timestamp beyond Python's dates has no .date())


def _short(v: Any) -> str:
    return _day(v) if isinstance(v, pd.Timestamp | datetime | date) else str(v)


def plain(v: Any) -> Any:
    """A JSON-friendly value for reports."""
    if v is None:
        return None
    if isinstance(v, pd.Timestamp | datetime | date):
        return _day(v) if not pd.isna(v) else None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, tuple | list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if hasattr(v, "item"):
        try:
            return plain(v.item())
        except (ValueError, TypeError):
            pass
    if pd.api.types.is_scalar(v) and pd.isna(v):
        return None
    return v if isinstance(v, str | int | float | bool) else str(v)


@dataclass
class ValidationReport:
    source: str
    suite: str
    rows: int
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    file: str = ""
    parameters: dict = field(default_factory=dict)
    gx_result: Any = field(default=None, repr=False)  # GX's (last) ExpectationSuiteValidationResult
    gx_results: list = field(default_factory=list)  # [{key: in GX's validation results store, page: Data Docs}]

    @property
    def data_docs(self) -> str:
        """The Data Docs page of the most detailed result (rendered once the run's pages are built)."""
        return self.gx_results[-1]["page"] if self.gx_results else ""

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
        out = {"source": self.source, "file": self.file, "suite": self.suite, "rows": self.rows,
               "status": self.status, "parameters": plain(self.parameters),
               "expectations": len(self.outcomes), "critical_failures": len(self.critical_failures),
               "warnings": len(self.warnings), "outcomes": [plain(asdict(o)) for o in self.outcomes],
               "gx_results": self.gx_results}  # the full results are in GX's store, under these keys
        return out

    def to_text(self) -> str:
        what = f"{self.source} file '{self.file}'" if self.file else f"a {self.source} batch"
        lines = [f"Validation of {what} ({self.rows} rows) with suite '{self.suite}': {self.status.upper()} "
                 f"({len(self.outcomes)} checks, {len(self.critical_failures)} critical failures, "
                 f"{len(self.warnings)} warnings)"]
        if self.parameters:
            lines.append("Batch parameters: " + ", ".join(f"{k}={_short(v)}" for k, v in self.parameters.items()))
        for title, items in (("Critical failures (the batch is rejected for these)", self.critical_failures),
                             ("Warnings (accepted, flagged)", self.warnings)):
            if items:
                lines.append(f"{title}:")
                for i, o in enumerate(items, 1):
                    lines.append(f"  {i}. {o.describe()}")
                    if o.sample:
                        lines.append(f"     offending values: {o.sample[:SAMPLE]}")
                    for n, r in zip(o.rows[:SAMPLE], o.sample_rows[:SAMPLE], strict=False):
                        lines.append(f"     row {n}: " + ", ".join(f"{k}={v}" for k, v in r.items()))
        if self.data_docs:
            lines.append(f"Great Expectations Data Docs page of this validation: {self.data_docs}")
        return "\n".join(lines)
