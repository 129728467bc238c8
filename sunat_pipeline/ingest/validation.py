"""Great Expectations as it is meant to be used: a file-backed GX project in the lake runs the committed suites.

The suites live as JSON in ``expectations/`` and are reviewed like code; each expectation carries a GX
``severity``: ``critical`` failures reject the batch (quarantine), ``warning`` failures accept it and flag it.
The project (``<lake>/gx/``, created by code, never committed) holds one pandas data source with a
dataframe asset per source, the suites (re-synced whenever the committed JSON changes), and per source one
validation definition with two Checkpoints (``RESULT_FORMATS``). Each landed file's typed frame is validated by
running its source's Checkpoint with the batch's parameters (``{"$PARAMETER": "available_date"}`` ...); GX
stores every result in its validation results store, and ``datadocs`` has GX build its Data Docs site from it.

Concurrency: the daily DAG ingests its sources in parallel processes, each with its own context on the same
folder. GX's file stores write in place, so one lock file orders them: configuration changes (the YAML, the
suites) and Data Docs builds (which read every stored result) take it exclusively; Checkpoint runs, which
only add new result files under unique names, share it.

The frame's index is the data row number in the file (1-based), so every failure comes with its rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
from collections import OrderedDict
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from sunat_pipeline.ingest.report import SAMPLE, ExpectationOutcome, ValidationReport, plain
from sunat_pipeline.ingest.sources import MIN_PLAUSIBLE_DATE, SOURCES
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

DATASOURCE = "sunat_landing"  # one pandas data source; one dataframe asset per landing source
BATCH = "whole_file"  # the batch definition: one landed file's whole typed frame
SITE = "local_site"  # the Data Docs site, at <lake>/data_docs/ (DOCS_DIR, relative to the GX folder)
DOCS_DIR = "../data_docs/"
INDEX_LIMIT = 1000  # the Data Docs index lists the newest results only (it reads each one it lists)
# Two Checkpoints per source on the same validation definition: ``<source>`` says pass or fail per expectation
# (cheap: most files pass); when something fails, ``<source>_details`` reruns the suite for the counts,
# offending values and row numbers (pandas index = data row number) the report shows.
DETAILS = "_details"
RESULT_FORMATS = {"": "BOOLEAN_ONLY", DETAILS: {"result_format": "SUMMARY", "partial_unexpected_count": 20}}


def gx_dir(settings: Settings) -> Path:
    return settings.lake / "gx"


@contextlib.contextmanager
def gx_lock(settings: Settings, exclusive: bool):
    """Shared for Checkpoint runs, exclusive for configuration changes and Data Docs builds. Never nested:
    flock locks belong to the open file, so a second open in the same process would wait for itself."""
    p = gx_dir(settings) / ".sunat.lock"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# The lake's GX context, kept per process while the project's configuration file is unchanged: opening one reads
# the whole project (a fraction of a second per ingest task), and a process that ingests day after day (a
# backtest) would otherwise open it for every source every day. Keyed by the project folder; valid while
# ``great_expectations.yml`` is the same file with the same size and modification time (a project deleted and
# created again, or changed by another process, is opened afresh). The newest few projects are kept.
_CONTEXTS: OrderedDict[str, tuple[tuple, object]] = OrderedDict()
_CONTEXTS_KEPT = 2


def _config_identity(settings: Settings) -> tuple | None:
    try:
        st = (gx_dir(settings) / "great_expectations.yml").stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _remember_results(context, kept: int = INDEX_LIMIT + 100) -> None:
    """Have ``context.get_validation_result`` remember what it read. Data Docs' index reads every result it
    lists (the newest ``INDEX_LIMIT``) at every build; a stored result never changes (its key holds its run
    time and name), so a process building the index day after day reads each one once. Only lookups by a
    full key are remembered; the newest ``kept`` results are."""
    read = context.get_validation_result
    seen: OrderedDict[tuple, object] = OrderedDict()

    def get_validation_result(expectation_suite_name, run_id=None, batch_identifier=None,
                              validation_results_store_name=None, failed_only=False):
        if run_id is None or batch_identifier is None:
            return read(expectation_suite_name, run_id, batch_identifier, validation_results_store_name,
                        failed_only)
        key = (expectation_suite_name, str(run_id.to_tuple() if hasattr(run_id, "to_tuple") else run_id),
               str(batch_identifier), validation_results_store_name, failed_only)
        if key not in seen:
            result = read(expectation_suite_name, run_id, batch_identifier, validation_results_store_name,
                          failed_only)
            if isinstance(result, dict):  # not found (GX answers {}): ask again next time
                return result
            seen[key] = result
            while len(seen) > kept:
                seen.popitem(last=False)
        return seen[key]

    context.get_validation_result = get_validation_result


class GxProject:
    """The lake's GX project (created on first use), with the Checkpoints of ``sources`` in sync with the
    committed suites. The context is opened on first use (importing GX takes seconds, and a run with no new
    file never needs it), or reused from an earlier ``GxProject`` of this process on the same unchanged
    project (``_CONTEXTS``). ``validate`` runs a Checkpoint on a typed frame."""

    def __init__(self, settings: Settings, sources: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.sources = sources

    @functools.cached_property
    def context(self):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        key = str(gx_dir(self.settings).resolve())
        with gx_lock(self.settings, exclusive=True):
            known = _CONTEXTS.get(key)
            identity = _config_identity(self.settings)
            if known is not None and identity is not None and known[0] == identity:
                context = known[1]
            else:
                first = identity is None
                context = gx.get_context(mode="file", project_root_dir=self.settings.lake)
                if first:
                    context.variables.progress_bars = ProgressBarsConfig(globally=False)
                    context.variables.save()
                    context.update_data_docs_site(SITE, {
                        "class_name": "SiteBuilder", "show_how_to_buttons": False,
                        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": DOCS_DIR},
                        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                               "validation_results_limit": INDEX_LIMIT}})
                _remember_results(context)
            for source in self.sources:
                self._sync(context, source)
            _CONTEXTS[key] = (_config_identity(self.settings), context)  # after _sync, which may write it
            _CONTEXTS.move_to_end(key)
            while len(_CONTEXTS) > _CONTEXTS_KEPT:
                _CONTEXTS.popitem(last=False)
        return context

    def _sync(self, ctx, source: str) -> None:
        """Create what is missing and re-sync a suite whose committed JSON changed; write nothing otherwise."""
        import great_expectations as gx
        from great_expectations.exceptions import DataContextError

        try:
            ds = ctx.data_sources.get(DATASOURCE)
        except KeyError:
            ds = ctx.data_sources.add_pandas(DATASOURCE)
        try:
            asset = ds.get_asset(source)
        except LookupError:
            asset = ds.add_dataframe_asset(source)
        try:
            batch = asset.get_batch_definition(BATCH)
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe(BATCH)
        committed = _committed_suite(self.settings, source)
        try:
            suite = ctx.suites.get(committed.name)
            stale = suite.meta.get("committed_sha256") != committed.meta["committed_sha256"]
        except DataContextError:
            stale = True
        if stale:
            suite = ctx.suites.add_or_update(committed)
            log.info("GX suite %r synced from %s (%d expectations)", suite.name,
                     self.settings.expectations_dir / f"{source}.json", len(suite.expectations))
        try:
            vd = ctx.validation_definitions.get(source)
            for suffix in RESULT_FORMATS:
                ctx.checkpoints.get(source + suffix)
        except DataContextError:
            stale = True
        if stale:
            vd = ctx.validation_definitions.add_or_update(gx.ValidationDefinition(name=source, data=batch,
                                                                                  suite=suite))
            for suffix, fmt in RESULT_FORMATS.items():
                ctx.checkpoints.add_or_update(gx.Checkpoint(name=source + suffix, validation_definitions=[vd],
                                                            actions=[], result_format=fmt))

    def validate(self, df: pd.DataFrame, source: str, *, parameters: dict | None = None,
                 extra_outcomes: list[ExpectationOutcome] | tuple = (), file: str = "",
                 run_name: str = "") -> ValidationReport:
        """Run ``source``'s Checkpoints on ``df`` (index: data row numbers); ``extra_outcomes`` (the reader's
        checks) are reported alongside. GX stores each result; the report names their keys and pages."""
        import great_expectations as gx

        params = dict(parameters or default_parameters())
        view = _fast_view(df)
        stored = []
        for suffix in RESULT_FORMATS:
            run_id = gx.RunIdentifier(run_name=(run_name + suffix) or None, run_time=datetime.now(UTC))
            checkpoint = self.context.checkpoints.get(source + suffix)
            with gx_lock(self.settings, exclusive=False):
                out = checkpoint.run(batch_parameters={"dataframe": view}, expectation_parameters=params,
                                     run_id=run_id)
            [(result_id, result)] = out.run_results.items()
            stored.append({"key": list(result_id.to_tuple()), "page": str(self.page(result_id))})
            if result.success:
                break
        report = ValidationReport(source=source, suite=result.suite_name, rows=len(df), file=file,
                                  parameters=params, gx_result=result, gx_results=stored)
        report.outcomes.extend(extra_outcomes)
        key = SOURCES[source].key
        report.outcomes.extend(_outcome(r, df, key) for r in result.results)
        log.info("validated %s %s: %d rows, %d checks, %s", source, file, len(df), len(report.outcomes),
                 report.status)
        return report

    def page(self, result_id) -> Path:
        """Where the Data Docs site has (or will have, once built) the page of a stored result."""
        [site] = self.context.get_docs_sites_urls(resource_identifier=result_id, site_name=SITE,
                                                  only_if_exists=False)
        return Path(os.path.normpath(site["site_url"].removeprefix("file://")))


def _committed_suite(settings: Settings, source: str):
    import great_expectations as gx

    path = settings.expectations_dir / f"{source}.json"
    raw = path.read_bytes()
    spec = json.loads(raw)
    meta = {**(spec.get("meta") or {}), "committed_sha256": hashlib.sha256(raw).hexdigest()}
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=meta)
    # GX logs and drops an invalid expectation; a suite that silently shrank must not pass.
    if len(suite.expectations) != len(spec["expectations"]):
        raise ValueError(f"suite {path} has invalid expectations: loaded {len(suite.expectations)} "
                         f"of {len(spec['expectations'])}")
    return suite


def default_parameters(available: date | None = None, window_days: int = 31, freshness_days: int = 7,
                       bulk: bool = False) -> dict:
    """The suites' per-batch parameters for a file available on ``available`` (default: today)."""
    avail = pd.Timestamp(available or date.today())
    lowest = pd.Timestamp(MIN_PLAUSIBLE_DATE)
    return {
        "available_date": avail,
        "min_plausible_date": lowest,
        "window_start": lowest if bulk else avail - pd.Timedelta(days=window_days),
        "fresh_since": avail - pd.Timedelta(days=freshness_days),
    }


def _fast_view(df: pd.DataFrame) -> pd.DataFrame:
    """GX compares numpy int/float and datetime64[ns] columns vectorised, but maps a Python function over other
    dtypes (Int64, datetime64[us]): validate a view with those dtypes (values unchanged)."""
    fast = {}
    for c in df.columns:
        if pd.api.types.is_datetime64_dtype(df[c]) and df[c].dtype != "datetime64[ns]":
            # A date beyond 2262 has no nanosecond form: that column keeps the slow path (the suite rejects it).
            with contextlib.suppress(OverflowError, ValueError):
                fast[c] = df[c].astype("datetime64[ns]")
        elif isinstance(df[c].dtype, pd.Int64Dtype) and not df[c].isna().any():
            fast[c] = df[c].astype("int64")
    return df.assign(**fast) if fast else df


def _outcome(r, df: pd.DataFrame, key: tuple[str, ...]) -> ExpectationOutcome:
    cfg = r.expectation_config
    res = r.result or {}
    kw = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    cols = [c for c in (kw.get("column"), kw.get("column_A"), kw.get("column_B")) if c]
    cols += list(kw.get("column_list") or [])
    idx = [i for i in (res.get("partial_unexpected_index_list") or []) if not isinstance(i, dict)]
    observed = res.get("observed_value")
    if r.exception_info and r.exception_info.get("raised_exception"):
        observed = f"error: {r.exception_info.get('exception_message')}"
    failed = not r.success
    meta = cfg.meta or {}
    return ExpectationOutcome(
        expectation=cfg.type,
        column=kw.get("column") or (",".join(kw.get("column_list", [])) or None) or (
            f"{kw['column_A']},{kw['column_B']}" if "column_A" in kw else None),
        severity=str(getattr(cfg.severity, "value", cfg.severity) or "critical"),
        success=bool(r.success),
        unexpected_count=res.get("unexpected_count"),
        sample=[str(plain(x)) for x in (res.get("partial_unexpected_list") or [])[:SAMPLE]],
        unexpected_percent=res.get("unexpected_percent"),
        observed=None if observed is None else str(plain(observed))[:300],
        notes=str(meta.get("notes", "")),
        check=str(meta.get("check", "")),
        kwargs={k: plain(v) for k, v in kw.items()},
        rows=[int(i) for i in idx[:SAMPLE]] if failed else [],
        sample_rows=_sample_rows(df, idx, list(dict.fromkeys([*key, *cols]))) if failed else [],
    )


def _sample_rows(df: pd.DataFrame, idx: list, cols: list[str]) -> list[dict]:
    out = []
    for i in idx[:SAMPLE]:
        if i in df.index:
            row = df.loc[i]
            out.append({c: plain(row[c]) for c in cols if c in df.columns})
    return out
