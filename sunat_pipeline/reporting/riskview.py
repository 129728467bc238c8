"""The figures of the Airflow UI's risk pages (plugins/risk_targeting.py), as plain functions of the lake.

Every function reads what the daily DAG wrote (scored declarations, run manifests, KPI tables, the ingest
manifest, the override events, the rule-weight versions, the MLflow registry) and never writes, except
``record_override``, which goes through the same code as ``sunat-pipeline override``. The statistics are
the KPI code's own (``kpi`` and ``kpi_tables``): a page and the daily report never disagree on a definition.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.feedback import weights as rule_weights
from sunat_pipeline.ingest import landing
from sunat_pipeline.reporting import kpi, report
from sunat_pipeline.reporting.kpi_tables import ALL, beta_interval, efficiency, green_estimate
from sunat_pipeline.selection import overrides
from sunat_pipeline.selection.output import manifest_path, manifests, read_scored
from sunat_pipeline.selection.rules import load_rules
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

DAILY_DAG = "sunat_daily"  # the DAG whose runs have a day's report (dags/sunat_daily.py)
WINDOW_DAYS = 30  # the hit-rate and lift window of the targeting page
SELECTED = ("RED", "YELLOW")
CHANNELS = ("RED", "YELLOW", "GREEN")
CHANNEL_LIST_COLUMNS = ["declaration_id", "customs_office", "channel", "model_channel", "selection_reason",
                        "fraud_probability", "expected_revenue_usd", "items", "importer_id", "reasons",
                        "override_officer", "override_why", "override_recorded_at"]
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


# --- days ------------------------------------------------------------------------------------------------

def scored_days(settings: Settings) -> list[date]:
    """Every day the pipeline scored, oldest first (from the run manifests)."""
    return [date.fromisoformat(r["declaration_date"]) for r in manifests(settings)]


def latest_day(settings: Settings) -> date | None:
    days = scored_days(settings)
    return days[-1] if days else None


def run_day(settings: Settings, conf: dict | None, logical_date=None, data_interval_end=None, run_after=None,
            run_id: str = "") -> date | None:
    """The day a daily-DAG run processed: its ``date`` param; else the day its schedule gives it
    (``orchestration.schedule.processing_day``, where that module exists); else its logical date; else a date
    in its run id."""
    if conf and conf.get("date"):
        return date.fromisoformat(str(conf["date"])[:10])
    try:
        from sunat_pipeline.orchestration.schedule import processing_day
    except ImportError:
        processing_day = None
    if processing_day is not None and (data_interval_end is not None or run_after is not None):
        ctx = {"params": conf or {}, "data_interval_end": data_interval_end,
               "dag_run": type("Run", (), {"run_after": run_after})()}
        return processing_day(ctx, settings.operations.timezone)
    if logical_date is not None:
        return pd.Timestamp(logical_date).date()
    m = _DATE.search(run_id or "")
    return date.fromisoformat(m.group(1)) if m else None


def report_file(settings: Settings, day: date | None) -> Path | None:
    """The day's HTML KPI report (reporting/report.py), if the run got that far."""
    if day is None:
        return None
    p = report.report_path(settings, day)
    return p if p.exists() else None


# --- the targeting page ----------------------------------------------------------------------------------

def _declarations(settings: Settings, day: date) -> pd.DataFrame:
    """One row per declaration of the day: office, channel, reason, items, workload (manifest order)."""
    cols = ["declaration_id", "customs_office", "channel", "selection_reason"]
    it = read_scored(settings, upto=day, since=day)
    if it.empty:
        return pd.DataFrame(columns=[*cols, "items", "workload_units"])
    wl = it.workload_units if "workload_units" in it else pd.Series(0.0, index=it.index)
    g = it.assign(_wl=wl.fillna(0.0)).groupby("declaration_id", sort=True)
    d = g[cols[1:]].first().assign(items=g.size(), workload_units=g._wl.max())
    return d.reset_index()


def office_channels(settings: Settings, day: date) -> pd.DataFrame:
    """Per office: the day's RED / YELLOW / GREEN declarations against its RED / YELLOW capacity (the one the
    scoring run recorded, else the settings'); a total row ``ALL``."""
    d = _declarations(settings, day)
    if d.empty:
        return pd.DataFrame()
    counts = pd.crosstab(d.customs_office, d.channel).reindex(columns=list(CHANNELS), fill_value=0)
    run = json.loads(manifest_path(settings, day).read_text()) if manifest_path(settings, day).exists() else {}
    recorded = run.get("capacity") or {}
    rows = []
    for office, c in counts.iterrows():
        cap = recorded.get(office) or settings.selection.capacity_for(office).model_dump()
        unit = cap.get("unit", "declarations")
        wl = d[(d.customs_office == office)]
        used = {ch: float(wl[wl.channel == ch].workload_units.sum()) if unit == "workload" else int(c[ch])
                for ch in SELECTED}
        rows.append({"customs_office": office, "declarations": int(c.sum()), "red": int(c.RED),
                     "yellow": int(c.YELLOW), "green": int(c.GREEN), "unit": unit,
                     "red_used": used["RED"], "red_capacity": cap["red"], "yellow_used": used["YELLOW"],
                     "yellow_capacity": cap["yellow"], "capacity_source": cap.get("source", "settings")})
    out = pd.DataFrame(rows)
    total = {"customs_office": ALL, **{k: int(out[k].sum()) for k in ("declarations", "red", "yellow", "green")}}
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def hit_rates(settings: Settings, day: date, window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """Per office (and ``ALL``), over the decisions of the ``window_days`` days up to ``day`` with the outcomes
    known after ``day``'s feedback: targeted and random hit rates with 90% Jeffreys intervals, and the lift of
    targeting over random (the KPI efficiency index) with its 95% interval (docs/kpi.md)."""
    items = kpi.scored_items(settings, day)
    items = items[items.declaration_date.dt.date > day - timedelta(days=window_days)]
    off = feedback.offences(settings, asof=day)
    decl = kpi.declarations(kpi.item_outcomes(items, off))
    if decl.empty:
        return pd.DataFrame()
    e = efficiency(decl, green_estimate(decl, settings.monitoring.min_green_sample))
    e = e[e.period_type == "all"].reset_index(drop=True)
    out = e[["customs_office", "declarations", "selected", "targeted_inspected", "targeted_frauds",
             "hit_rate_targeted", "random_inspected", "random_frauds", "hit_rate_random", "efficiency_index",
             "efficiency_index_low", "efficiency_index_high"]].rename(
        columns={"efficiency_index": "lift", "efficiency_index_low": "lift_low",
                 "efficiency_index_high": "lift_high"})
    for k in ("targeted", "random"):
        iv = [beta_interval(f, n) for f, n in zip(out[f"{k}_frauds"], out[f"{k}_inspected"], strict=True)]
        out[f"hit_rate_{k}_low"] = [lo for lo, _ in iv]
        out[f"hit_rate_{k}_high"] = [hi for _, hi in iv]
    first = decl.declaration_date.min().date()
    return out.assign(window_from=first, window_to=day)


def top_reasons(settings: Settings, day: date, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Why the day's declarations were selected: (declarations per selection reason and channel, the rules
    hit by most selected declarations with their names)."""
    it = read_scored(settings, upto=day, since=day, columns=["declaration_id", "channel", "selection_reason",
                                                             "rule_hits"])
    sel = it[it.channel.isin(SELECTED)]
    if sel.empty:
        return pd.DataFrame(), pd.DataFrame()
    d = sel.drop_duplicates("declaration_id")
    by_reason = pd.crosstab(d.selection_reason, d.channel).reindex(columns=list(SELECTED), fill_value=0)
    by_reason = by_reason.assign(declarations=by_reason.sum(axis=1)).sort_values("declarations", ascending=False)
    hits = sel[["declaration_id", "rule_hits"]].explode("rule_hits").dropna().drop_duplicates()
    names = {r.id: r.name for r in load_rules(settings.rules_path).rules}
    rules = hits.groupby("rule_hits").size().sort_values(ascending=False, kind="stable").head(n)
    rules = pd.DataFrame({"rule_id": rules.index, "rule": [names.get(r, "") for r in rules.index],
                          "selected_declarations": rules.to_numpy()})
    return by_reason.reset_index(), rules


def quarantined(settings: Settings, day: date) -> pd.DataFrame:
    """Files due on ``day`` (or misnamed) that ingestion quarantined, with what failed and their report."""
    m = landing.manifest(settings)
    cols = ["source", "file_name", "sha256", "rows", "critical_failures", "failed_checks", "report"]
    if m.empty or "validation" not in m:
        return pd.DataFrame(columns=cols)
    q = m[(m.validation == "rejected") & (m.available_date.isna() | (m.available_date == day.isoformat()))]
    q = q.reindex(columns=cols).sort_values(["source", "file_name"])
    return q.assign(failed_checks=q.failed_checks.map(lambda v: "; ".join(map(str, v)) if isinstance(v, list)
                                                      else "")).reset_index(drop=True)


def quarantine_report(settings: Settings, sha256: str) -> str | None:
    """The text report of a quarantined file, found by its sha256 in the ingest manifest (never by a path
    from the request)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        return None
    for rec in landing.manifest_dir(settings).glob(f"*/{sha256}.json"):
        rel = json.loads(rec.read_text()).get("report")
        p = (settings.lake / rel).resolve() if rel else None
        if p is not None and p.is_relative_to(settings.lake) and p.exists():
            return p.read_text(errors="replace")
    return None


def drift(settings: Settings, day: date) -> dict:
    """The day's drift check as the KPI report recorded it (``kpi.summary`` with the drift fields)."""
    s = kpi.read(settings, "summary", day)
    if s.empty or "drift_checked" not in s:
        return {"checked": False}
    r = s.iloc[0]
    return {"checked": bool(r.drift_checked), "max_psi": None if pd.isna(r.drift_max_psi) else float(r.drift_max_psi),
            "worst": r.drift_worst or "", "major": r.drift_major or "", "retrain_requested":
            bool(r.retrain_requested), "threshold": settings.monitoring.psi_threshold}


def champion(settings: Settings) -> dict | None:
    """The champion model version and a link to its MLflow run; None when no model is registered yet."""
    from sunat_pipeline.modeling import registry

    mv, _ = registry.champion(settings, load=False)
    if mv is None:
        return None
    run = registry.client(settings).get_run(mv.run_id) if mv.run_id else None
    exp = run.info.experiment_id if run is not None else None
    ui = settings.mlflow_ui_url.rstrip("/")
    return {"name": settings.registered_model, "version": str(mv.version), "run_id": mv.run_id or "",
            "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
            "training_date": (mv.tags or {}).get("training_date") or (run.data.tags.get("training_date", "")
                                                                      if run is not None else ""),
            "run_url": f"{ui}/#/experiments/{exp}/runs/{mv.run_id}" if exp is not None else "",
            "model_url": f"{ui}/#/models/{settings.registered_model}/versions/{mv.version}"}


def weight_changes(settings: Settings, last: int = 3, min_change: float = 5e-4) -> pd.DataFrame:
    """Rule weights that changed in the last ``last`` weight versions: before, after, and the evidence. Changes
    under ``min_change`` (the evidence's daily decay moves every weight a little) are left out: the page shows
    three decimals, and a list of "-0.000" hides the changes that matter."""
    h = rule_weights.weights_history(settings)
    if h.empty:
        return h
    h = h.sort_values(["rule_id", "version"], kind="stable")
    h["previous_weight"] = h.groupby("rule_id").weight.shift()
    h["change"] = h.weight - h.previous_weight
    keep = sorted(h.version.unique())[-last:]
    h = h[h.version.isin(keep) & (h.change.abs() > min_change)]
    return h.sort_values(["version", "change"], ascending=[False, True], key=lambda s: s if s.name == "version"
                         else -s.abs())[["version", "date", "rule_id", "previous_weight", "weight", "change",
                                         "inspected_in_version", "frauds_in_version", "posterior_precision"]]


# --- the officers' channel list --------------------------------------------------------------------------

def _unique(lists) -> str:
    seen: list[str] = []
    for rs in lists:
        for r in list(rs) if rs is not None else []:
            if r and r not in seen:
                seen.append(str(r))
    return " | ".join(seen)


def channel_list(settings: Settings, day: date, office: str | None = None, channel: str | None = None,
                 reason: str | None = None) -> pd.DataFrame:
    """The day's selected declarations (RED or YELLOW by the model or by an officer's override in force), one
    row each: channel in force, the model's channel, selection reason, declaration fraud probability and
    expected revenue, plain-language reasons, the override; filtered by office, channel and reason."""
    it = read_scored(settings, upto=day, since=day)
    if it.empty:
        return empty_channel_list()
    # The declaration's fraud probability: noisy-OR of its items, as the KPIs count it (kpi.declarations).
    g = it.assign(_lq=np.log1p(-it.fraud_probability.astype(float).clip(0, 0.999999))).groupby(
        "declaration_id", sort=True)
    d = pd.DataFrame({"customs_office": g.customs_office.first(), "model_channel": g.channel.first(),
                      "selection_reason": g.selection_reason.first(), "importer_id": g.importer_id.first(),
                      "items": g.size(), "expected_revenue_usd": g.expected_revenue_usd.sum(),
                      "fraud_probability": 1 - np.exp(g._lq.sum()),
                      "reasons": g.reasons.agg(_unique)}).reset_index()
    ov = overrides.in_force(settings, day)
    ov = ov.set_index("declaration_id") if len(ov) else pd.DataFrame(columns=["channel", "officer_id", "why",
                                                                               "recorded_at"])
    d["channel"] = d.declaration_id.map(ov.channel).fillna(d.model_channel)
    d["override_officer"] = d.declaration_id.map(ov.officer_id).fillna("")
    d["override_why"] = d.declaration_id.map(ov.why).fillna("")
    d["override_recorded_at"] = d.declaration_id.map(ov.recorded_at).fillna("")
    d = d[d.channel.isin(SELECTED) | d.model_channel.isin(SELECTED)]
    if office:
        d = d[d.customs_office == office]
    if channel:
        d = d[d.channel == channel.upper()]
    if reason:
        d = d[d.selection_reason == reason]
    order = {c: i for i, c in enumerate(CHANNELS)}
    d = d.assign(_o=d.channel.map(order)).sort_values(["customs_office", "_o", "fraud_probability"],
                                                      ascending=[True, True, False], kind="stable")
    return d[CHANNEL_LIST_COLUMNS].reset_index(drop=True)


def empty_channel_list() -> pd.DataFrame:
    return pd.DataFrame(columns=CHANNEL_LIST_COLUMNS)


def channel_list_options(settings: Settings, day: date) -> dict[str, list[str]]:
    """The values the channel list's filters offer: offices and selection reasons of the day."""
    it = read_scored(settings, upto=day, since=day, columns=["customs_office", "selection_reason"])
    return {"office": sorted(it.customs_office.astype(str).unique()), "channel": list(CHANNELS),
            "reason": sorted(it.selection_reason.astype(str).unique())}


def override_audit(settings: Settings, day: date) -> pd.DataFrame:
    """Every override event of the day's declarations, newest first (the append-only override store)."""
    return overrides.load(settings, [day]).iloc[::-1].reset_index(drop=True)


def record_override(settings: Settings, day: date, declaration_id: str, channel: str, officer: str, why: str,
                    by_user: str) -> dict:
    """An officer's override, through ``selection.overrides.record`` (what ``sunat-pipeline override`` runs);
    ``by_user``: the Airflow user who submitted it, kept in the event (``recorded_by``)."""
    rec = overrides.record(settings, declaration_id, channel, officer, why, day=day, recorded_by=by_user)
    log.info("override %s of %s recorded from the Airflow UI by user %s", rec["override_id"], declaration_id,
             by_user)
    return rec


def jsonable(v):
    """``v`` (dicts, lists, numpy and pandas scalars, dates) as plain JSON values; NaN as null."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, date):
        return v.isoformat()
    return None if v is pd.NA or v is pd.NaT else v
