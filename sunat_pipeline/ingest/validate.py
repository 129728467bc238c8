"""Great Expectations validation of one batch against the committed suite of its source.

Suites live as JSON in ``expectations/`` and are reviewed like code. Each expectation carries a GX
``severity``: ``critical`` failures reject the batch (quarantine), ``warning`` failures accept it and flag it.
Date bounds depend on the batch (``{"$PARAMETER": "available_date"}`` ...) and are passed per validation.
An ephemeral GX context per call avoids concurrent writes to a shared ``gx/`` folder on workers; the result
is rendered to a static HTML page with GX's own Data Docs renderer (``render_html``).

The frame's index is the data row number in the file (1-based), so every failure comes with the rows that
caused it.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)
SAMPLE = 5  # offending values and rows kept per failed expectation


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
    check: str = ""  # schema, types, not_null, unique, format, allowed_set, ranges, cross_field, dates, ...
    kwargs: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)  # data row numbers (1-based) of a sample of offending rows
    sample_rows: list = field(default_factory=list)  # those rows, as {column: value}
    origin: str = "gx"  # gx | reader (the typed reader's parse checks)

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


def _short(v: Any) -> str:
    if isinstance(v, pd.Timestamp | datetime | date):
        return pd.Timestamp(v).date().isoformat()
    return str(v)


def _plain(v: Any) -> Any:
    """A JSON-friendly value for reports."""
    if v is None:
        return None
    if isinstance(v, pd.Timestamp | datetime | date):
        return pd.Timestamp(v).date().isoformat() if not pd.isna(v) else None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if hasattr(v, "item"):
        try:
            return _plain(v.item())
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
    gx_result: Any = field(default=None, repr=False)

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
               "status": self.status, "parameters": _plain(self.parameters),
               "expectations": len(self.outcomes), "critical_failures": len(self.critical_failures),
               "warnings": len(self.warnings), "outcomes": [_plain(asdict(o)) for o in self.outcomes]}
        if self.gx_result is not None:
            out["gx_result"] = _plain(self.gx_result.to_json_dict())
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


def _sample_rows(df: pd.DataFrame, idx: list, cols: list[str]) -> list[dict]:
    out = []
    for i in idx[:SAMPLE]:
        if i not in df.index:
            continue
        row = df.loc[i]
        out.append({c: _plain(row[c]) for c in cols if c in df.columns})
    return out


def validate_frame(df: pd.DataFrame, source: str, expectations_dir: Path, *, parameters: dict | None = None,
                   extra_outcomes: list[ExpectationOutcome] | tuple = (), key: tuple[str, ...] = (),
                   file: str = "") -> ValidationReport:
    """Validate ``df`` (index: data row numbers) with the source's suite; ``extra_outcomes`` (the reader's
    parse checks) are reported alongside. ``key`` columns are shown in each sample row."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every in-memory frame under 1 GB (an md5 of hash_pandas_object, seconds per million rows,
    # on each validate call) only to label the batch; the file's sha256 is our batch identity.
    pandas_execution_engine.HASH_THRESHOLD = 0
    # GX compares numpy int/float and datetime64[ns] columns vectorised, but maps a Python function over other
    # dtypes (Int64, datetime64[us]): validate a view with those dtypes (values unchanged).
    fast = {c: df[c].astype("datetime64[ns]") for c in df.columns
            if pd.api.types.is_datetime64_dtype(df[c]) and df[c].dtype != "datetime64[ns]"}
    fast |= {c: df[c].astype("int64") for c in df.columns
             if isinstance(df[c].dtype, pd.Int64Dtype) and not df[c].isna().any()}
    df = df.assign(**fast) if fast else df
    path = Path(expectations_dir) / f"{source}.json"
    suite = load_suite(path)
    params = dict(parameters or default_parameters())
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(name=f"{source}_src").add_dataframe_asset(name=source)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
    # Two passes: pass/fail for every expectation (cheap), then counts and offending rows for the failed ones.
    detailed = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    result = batch.validate(suite, result_format="BOOLEAN_ONLY", expectation_parameters=params)
    configs = json.loads(path.read_text())["expectations"]
    failed = [i for i, r in enumerate(result.results) if not r.success]
    if failed:
        same_order = [r.expectation_config.type for r in result.results] == [c["type"] for c in configs]
        if same_order:
            sub = gx.ExpectationSuite(name=suite.name, expectations=[configs[i] for i in failed])
            again = batch.validate(sub, result_format=detailed, expectation_parameters=params)
            for i, r in zip(failed, again.results, strict=True):
                result.results[i] = r
        else:  # never expected; stay correct anyway
            result = batch.validate(suite, result_format=detailed, expectation_parameters=params)
    report = ValidationReport(source=source, suite=suite.name, rows=len(df), file=file, parameters=params,
                              gx_result=result)
    report.outcomes.extend(extra_outcomes)
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
        cols = [c for c in (kw.get("column"), kw.get("column_A"), kw.get("column_B")) if c]
        cols += list(kw.get("column_list") or [])
        sample = res.get("partial_unexpected_list") or []
        idx = list(res.get("partial_unexpected_index_list") or [])
        idx = [i for i in idx if not isinstance(i, dict)]
        show = list(dict.fromkeys([*key, *cols]))
        meta = cfg.meta or {}
        observed = res.get("observed_value")
        failed = not r.success
        if r.exception_info and r.exception_info.get("raised_exception"):
            observed = f"error: {r.exception_info.get('exception_message')}"
        report.outcomes.append(ExpectationOutcome(
            expectation=cfg.type,
            column=kw.get("column") or (",".join(kw.get("column_list", [])) or None) or (
                f"{kw['column_A']},{kw['column_B']}" if "column_A" in kw else None),
            severity=str(getattr(cfg.severity, "value", cfg.severity) or "critical"),
            success=bool(r.success),
            unexpected_count=res.get("unexpected_count"),
            sample=[str(_plain(x)) for x in sample[:SAMPLE]],
            unexpected_percent=res.get("unexpected_percent"),
            observed=None if observed is None else str(_plain(observed))[:300],
            notes=str(meta.get("notes", "")),
            check=str(meta.get("check", "")),
            kwargs={k: _plain(v) for k, v in kw.items()},
            rows=[int(i) for i in idx[:SAMPLE]] if failed else [],
            sample_rows=_sample_rows(df, idx, show) if failed else [],
        ))
    log.info("validated %s %s: %d rows, %d checks, %s", source, file, len(df), len(report.outcomes),
             report.status)
    return report


def default_parameters(available: date | None = None, window_days: int = 31, freshness_days: int = 7,
                       bulk: bool = False) -> dict:
    """The suites' per-batch parameters for a file available on ``available`` (default: today)."""
    from sunat_pipeline.ingest.sources import MIN_PLAUSIBLE_DATE

    avail = pd.Timestamp(available or date.today())
    lowest = pd.Timestamp(MIN_PLAUSIBLE_DATE)
    return {
        "available_date": avail,
        "min_plausible_date": lowest,
        "window_start": lowest if bulk else avail - pd.Timedelta(days=window_days),
        "fresh_since": avail - pd.Timedelta(days=freshness_days),
    }


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}
.rejected{{color:#b00}} .accepted{{color:#070}} .accepted_with_warnings{{color:#a60}}</style></head><body>
<h1>{title}</h1><p class="{status}">{status_text}</p><pre>{text}</pre>{extra}</body></html>"""


def render_html(report: ValidationReport | None, title: str, text: str, status: str) -> str:
    """A static HTML page for one batch: the plain-language report, then GX's Data Docs rendering of the
    validation result (when GX ran). Never raises: a rendering problem falls back to the plain page."""
    summary = _PAGE.format(title=html.escape(title), status=html.escape(status),
                           status_text=html.escape(status.upper()), text=html.escape(text), extra="")
    if report is None or report.gx_result is None:
        return summary
    try:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(report.gx_result))
    except Exception as e:  # rendering is a convenience; the JSON and text reports are the record
        log.warning("GX Data Docs rendering failed for %s: %s", title, e)
        return summary
    block = (f'<div style="margin:1em;padding:1em;border:2px solid #888"><h2>{html.escape(title)}: '
             f'{html.escape(status.upper())}</h2><pre style="white-space:pre-wrap">{html.escape(text)}</pre></div>')
    i = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    return page[:i] + block + page[i:]
