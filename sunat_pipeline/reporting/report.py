"""Summaries for people: the per-day table the demo prints, and each day's KPI report (HTML with plots).

``publish(settings, day)`` is the DAG's ``kpi_report`` task: the day's KPI tables (``kpi.compute``, written
under ``gold/kpi/``), the drift check (``monitor.check``) and a static HTML report with its plots embedded
(matplotlib, Agg, PNG as base64) at ``gold/reports/report_D.html``. The report is a function of the lake as
it stood after day D's feedback, so re-running a day rewrites the same bytes.
"""

from __future__ import annotations

import html
import logging
import math
from datetime import date

import numpy as np
import pandas as pd

from sunat_pipeline.feedback import offences as feedback
from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.reporting import kpi, kpi_exploration, kpi_tax, plots
from sunat_pipeline.reporting.kpi_tables import ALL
from sunat_pipeline.selection.output import manifests, read_scored
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def day_table(settings: Settings) -> pd.DataFrame:
    """Per scored day: items, channels (declarations), and what the inspections that came back found."""
    off = feedback.offences(settings)
    if len(off):
        off = off[off.selection_reason != "legacy"].assign(day=pd.to_datetime(off.inspection_date).dt.date)
    rows = []
    for r in manifests(settings):
        d = pd.Timestamp(r["declaration_date"]).date()
        o = off[off.day == d] if len(off) else off
        rows.append({
            "date": r["declaration_date"], "items": r["items"], "declarations": r["declarations"],
            "RED": r["channels"]["RED"], "YELLOW": r["channels"]["YELLOW"], "GREEN": r["channels"]["GREEN"],
            "outcomes_back": len(o), "frauds_found": int((o.result == "FRAUD").sum()) if len(o) else 0,
            "revenue_recovered_usd": round(float(o.revenue_recovered_usd.sum()), 2) if len(o) else 0.0,
            "model_version": r["model_version"], "rule_weights": r["rule_weights_version"],
        })
    return pd.DataFrame(rows)


def registry_summary(settings: Settings) -> dict:
    from sunat_pipeline.modeling import registry

    client = registry.client(settings)
    try:
        versions = client.search_model_versions(f"name = '{settings.registered_model}'")
        champ = client.get_model_version_by_alias(settings.registered_model, "champion").version
    except Exception:
        return {"versions": [], "champion": None}
    return {"versions": sorted(int(v.version) for v in versions), "champion": champ}


def report_path(settings: Settings, day: date):
    return settings.gold / "reports" / f"report_{day.isoformat()}.html"


def last_report(settings: Settings):
    d = settings.gold / "reports"
    reports = sorted(d.glob("report_????-??-??.html")) if d.exists() else []
    return reports[-1] if reports else None


# --- the daily KPI report --------------------------------------------------------------------------------

def _clean(v):
    """A value for JSON (XCom): finite floats rounded, numpy scalars as Python, dates as ISO text."""
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float | np.floating):
        return None if not math.isfinite(float(v)) else round(float(v), 6)
    if isinstance(v, np.integer | np.bool_):
        return v.item()
    return v


def publish(settings: Settings, day: date) -> dict:
    """The ``kpi_report`` task: KPI tables, drift check, HTML report. Returns a small summary (XCom)."""
    from sunat_pipeline.reporting import monitor

    tables = kpi.compute(settings, day)
    drift = monitor.check(settings, day)
    s = tables["summary"]
    s["drift_checked"] = drift["checked"]
    s["drift_max_psi"] = drift["max_psi"] if drift["max_psi"] is not None else np.nan
    s["drift_worst"] = drift["worst"]
    s["drift_major"] = "; ".join(drift["major"])
    s["retrain_requested"] = bool(drift["retrain_requested"])
    path = report_path(settings, day)
    s["report_path"] = str(path)
    kpi.write(settings, day, tables)
    page = render(settings, day, tables, drift["table"])
    if not path.exists() or path.read_bytes() != page:
        atomic_write_bytes(path, page)
    row = {k: _clean(v) for k, v in s.iloc[0].to_dict().items()}
    log.info("KPI report %s: efficiency index %s (targeted hit rate %s vs random %s), hit rate RED %s / YELLOW %s, "
             "undetected frauds in today's GREEN ~%s; drift max PSI %s (%s)%s", day, _fmt(row["efficiency_index"], 2),
             _pct(row["hit_rate_targeted"]), _pct(row["hit_rate_random"]), _pct(row["hit_rate_red"]),
             _pct(row["hit_rate_yellow"]), _fmt(row["undetected_frauds_est_today"], 1),
             _fmt(row["drift_max_psi"], 3), row["drift_worst"], " -> retraining requested" if
             row["retrain_requested"] else "")
    window = settings.monitoring.exploration_window_days
    log.info("%s", kpi_exploration.log_line(tables["exploration"], day, window))
    log.info("KPI report %s: %s", day, path.resolve().as_uri())
    keep = ("report_date", "report_path", "efficiency_index", "efficiency_index_7d", "hit_rate_red",
            "hit_rate_yellow", "hit_rate_targeted", "hit_rate_random", "frauds_found", "revenue_recovered_usd",
            "discoveries", "undetected_frauds_est_today", "green_fraud_rate_est", "drift_max_psi", "drift_worst",
            "retrain_requested")
    return {**{k: row.get(k) for k in keep},
            "exploration": {"window_days": window, **kpi_exploration.as_json(tables["exploration"], _clean)}}


# --- rendering -------------------------------------------------------------------------------------------

def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:,.{digits}f}"


def _pct(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%"


def _format(df: pd.DataFrame) -> pd.DataFrame:
    """Readable cells: rates as percentages, money without decimals, indices with two."""
    out = df.copy()
    for c in out.columns:
        s = out[c]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out[c] = s.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
            continue
        lc = c.lower()
        if any(k in lc for k in ("rate", "precision", "share", "selection_rate", "complete", "ci90", "observed",
                                 "predicted", "fraud_probability")):
            out[c] = s.map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}%")
        elif "usd" in lc:
            out[c] = s.map(lambda v: "" if pd.isna(v) else f"{v:,.0f}")
        elif any(k in lc for k in ("index", "lift", "psi", "weight", "mean", "uncertainty", "score", "est")):
            out[c] = s.map(lambda v: "" if pd.isna(v) else f"{v:,.3f}")
        else:
            out[c] = s.map(lambda v: "" if pd.isna(v) else (f"{int(v):,}" if float(v).is_integer() else f"{v:,.3f}"))
    return out


def _table(df: pd.DataFrame, cols: list[str] | None = None, rename: dict | None = None, max_rows: int = 60,
           classes: str = "kpi") -> str:
    if df is None or df.empty:
        return "<p class='empty'>Nothing yet.</p>"
    d = df[[c for c in (cols or df.columns) if c in df.columns]].head(max_rows)
    d = _format(d).rename(columns=rename or {})
    more = f"<p class='note'>{len(df) - max_rows} more rows in the Parquet table.</p>" if len(df) > max_rows else ""
    return d.to_html(index=False, border=0, classes=classes, na_rep="") + more


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table.kpi{border-collapse:collapse;font-size:12px;margin:8px 0}
table.kpi th,table.kpi td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
table.kpi th{background:#f5f5f5}table.nowrap td{white-space:nowrap}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;
min-width:150px}.card b{display:block;font-size:1.3em}.note,.empty{color:#666;font-size:12px}
img{max-width:100%}
"""


def _with_interval(v, lo, hi, fmt) -> str:
    """'v [lo, hi]'; a ratio whose reference found nothing has no value but still an interval."""
    if pd.isna(lo) and (v is None or pd.isna(v)):
        return ""
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def _exploration_view(x: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """The exploration table for people: each rate or ratio with its 95% interval in one cell."""
    if x.empty:
        return x

    def cell(col: str, fmt) -> list[str]:
        return [_with_interval(v, lo, hi, fmt) for v, lo, hi in
                zip(x[col], x[f"{col}_low"], x[f"{col}_high"], strict=True)]

    return pd.DataFrame({
        "outcomes reported": x.window.map(lambda w: "on the day" if w == "day" else f"last {window_days} days"),
        "selection reason": x.selection_reason, "selected, outcome back": x.inspected, "hits": x.hits,
        "hit rate [95%]": cell("hit_rate", _pct),
        "vs random [95%]": cell("ratio_vs_random", _fmt),
        "vs exploitation [95%]": cell("ratio_vs_exploitation", _fmt),
        "new offender": x.new_offender, "new importer": x.new_importer, "new HS x origin": x.new_pattern,
        "unexpected": x.unexpected, "revenue recovered (USD)": x.revenue_recovered_usd.map(lambda v: _fmt(v, 0)),
    })


def _tax_audits(t: pd.DataFrame | None) -> str:
    """The monthly tax audit section (reporting/kpi_tax.py): the latest published run's audits, or a notice."""
    if t is None or t.empty:
        return f"<p class='empty'>{html.escape(kpi_tax.NO_DATA)}</p>"
    o = kpi_tax.overview(t)
    total = pd.concat([kpi_tax.view(t, "all", _pct, _fmt, p).assign(all=label) for p, label in  # (first column)
                       (("all", "every audit known"), (o["month"], f"closed in {o['month']}"))], ignore_index=True)
    return "".join([
        f"<p class='note'>The monthly tax run of {o['month']} (published {o['published_date']}): {o['audits']} closed "
        f"audits known, {o['closed_in_month']} closed in the month. Hit rate: share with tax assessed (Jeffreys 95%); "
        "yield: assessed tax + penalty per closed audit (bootstrap 95%); lift: hit rate over the RANDOM program's "
        "in the same sector or office (Katz 95%). <i>List risk picks</i>: audits of taxpayers the list had picked "
        "by risk the month before (the audits were chosen by the administration). Definitions in docs/kpi.md.</p>",
        _table(total, classes="kpi nowrap"), "<h3>By sector (every audit known)</h3>",
        _table(kpi_tax.view(t, "sector", _pct, _fmt), classes="kpi nowrap"),
        "<h3>By tax office (every audit known)</h3>",
        _table(kpi_tax.view(t, "tax_office", _pct, _fmt), classes="kpi nowrap")])


def render(settings: Settings, day: date, t: dict[str, pd.DataFrame], drift: pd.DataFrame) -> bytes:
    """The HTML page of day ``day``'s report (self-contained; plots embedded)."""
    s = {k: _clean(v) for k, v in t["summary"].iloc[0].to_dict().items()}
    e = t["efficiency"]
    window = settings.monitoring.exploration_window_days
    cards = [
        ("Efficiency index (all days, 95% interval)", f"{_fmt(s['efficiency_index'], 2)} "
         f"[{_fmt(s['efficiency_index_low'], 2)}, {_fmt(s['efficiency_index_high'], 2)}]"),
        ("Efficiency index RED / YELLOW", f"{_fmt(s['efficiency_index_red'], 2)} / "
         f"{_fmt(s['efficiency_index_yellow'], 2)}"),
        ("Detection over selection rate (seed index)", _fmt(s["efficiency_index_seed"], 2)),
        ("Efficiency index (7 days)", _fmt(s["efficiency_index_7d"], 2)),
        ("Hit rate RED / YELLOW", f"{_pct(s['hit_rate_red'])} / {_pct(s['hit_rate_yellow'])}"),
        ("Hit rate targeted / random", f"{_pct(s['hit_rate_targeted'])} / {_pct(s['hit_rate_random'])}"),
        ("Selection rate today", _pct(s["selection_rate"])),
        ("Frauds found / revenue (all days)", f"{s['frauds_found']} / {_fmt(s['revenue_recovered_usd'], 0)} USD"),
        ("Reported today", f"{s['frauds_reported_today']} offences, {_fmt(s['revenue_reported_today_usd'], 0)} USD"),
        ("Discoveries (missed by exploitation)", f"{s['discoveries']} ({_fmt(s['discovery_revenue_usd'], 0)} USD)"),
        (f"Exploration hit rate ({window} days, 95%)", _with_interval(
            s["exploration_hit_rate_window"], s["exploration_hit_rate_window_low"],
            s["exploration_hit_rate_window_high"], _pct) or "n/a"),
        (f"Exploration hit rate over random / exploitation ({window} days)",
         " / ".join("n/a" if v is None else f"x{v:.2f}" for v in (s["exploration_ratio_vs_random_window"],
                                                                    s["exploration_ratio_vs_exploitation_window"]))),
        ("Frauds back today (all reasons): new offender / importer / HS x origin / unexpected",
         f"{s['new_offender_today']} / {s['new_importer_today']} / {s['new_pattern_today']} / "
         f"{s['unexpected_today']}"),
        ("Undetected fraud in today's GREEN", f"~{_fmt(s['undetected_frauds_est_today'], 1)} declarations "
                                              f"(90%: up to {_fmt(s['undetected_frauds_high_today'], 1)})"),
        ("Drift (max PSI)", f"{_fmt(s.get('drift_max_psi'), 3)} {s.get('drift_worst') or ''}"),
    ]
    day_all = e[(e.period_type == "day") & (e.customs_office == ALL)]
    offices = e[(e.period_type == "all")]
    ch = t["channels"]
    by_channel = ch[(ch.period_type == "day") & (ch.customs_office == ALL) & (ch.selection_reason == ALL)
                    & (ch.channel != ALL)]
    by_reason = ch[(ch.period_type == "all") & (ch.customs_office == ALL) & (ch.channel == ALL)]
    areas = t["risk_areas"]
    w = t["weights"]
    wpivot = pd.DataFrame()
    if len(w):
        last = sorted(w.version.unique())[-8:]
        wpivot = w[w.version.isin(last)].pivot(index="rule_id", columns="date", values="weight").reset_index()
        wpivot.columns = [str(c) for c in wpivot.columns]
    today = read_scored(settings, upto=day, since=day, columns=["declaration_id", "fraud_probability", "channel"])
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Risk targeting KPIs {day}</title><style>{_CSS}</style></head><body>",
        f"<h1>Risk targeting KPIs: {day}</h1>",
        f"<p class='note'>As of the end of {day} (after its feedback). Model v{esc(str(s['model_version']))}; "
        f"weights used {esc(str(s['weights_used']))}, produced {esc(str(s['weights_produced']))}; "
        f"{s['days_scored']} decision days. Hit rates count inspected declarations with an offence among those whose "
        "outcome came back; definitions in docs/kpi.md. Tables: gold/kpi/&lt;table&gt;/report_date=" + f"{day}/.</p>",
        "<div class='cards'>" + "".join(f"<div class='card'>{esc(k)}<b>{esc(v)}</b></div>" for k, v in cards)
        + "</div>",
        f"<p class='note'>GREEN estimate: {_pct(s['green_fraud_rate_est'])} of GREEN declarations "
        f"(90% interval {_pct(s['green_fraud_rate_low'])} to {_pct(s['green_fraud_rate_high'])}), from "
        f"{esc(str(s['green_estimate_basis']))}; about {_fmt(s['undetected_revenue_est_today_usd'], 0)} USD at "
        f"stake today; share of fraud missed over all days ~{_pct(s['missed_share_est'])}.</p>",
        "<h2>1. Channels and hit rates</h2>", plots.hit_rates(e), plots.efficiency(e),
        _table(day_all, ["period", "declarations", "selected", "selection_rate", "red", "yellow", "green",
                         "outcomes_complete", "hit_rate_red", "hit_rate_yellow", "hit_rate_targeted",
                         "hit_rate_random", "efficiency_index", "frauds", "revenue_recovered_usd",
                         "undetected_frauds_est"], {"period": "decision day"}),
        "<h3>By channel and day</h3>",
        _table(by_channel, ["period", "channel", "declarations", "inspected", "frauds", "hit_rate", "item_hit_rate",
                            "revenue_recovered_usd"], {"period": "decision day"}),
        "<h3>By selection reason (all days)</h3>",
        _table(by_reason, ["selection_reason", "declarations", "inspected", "frauds", "hit_rate",
                           "revenue_recovered_usd", "expected_revenue_usd"]),
        "<h3>By office (all days)</h3>",
        _table(offices, ["customs_office", "declarations", "selection_rate", "hit_rate_red", "hit_rate_yellow",
                         "hit_rate_targeted", "hit_rate_random", "efficiency_index", "frauds", "revenue_recovered_usd",
                         "discoveries", "green", "undetected_frauds_est"]),
        "<h2>2. Rule hits and precision</h2>", plots.rules(t["rules"]),
        _table(t["rules"], ["rule_id", "risk_area", "items_hit_today", "selected_items_hit_today", "inspected",
                            "frauds", "precision", "precision_pipeline", "revenue_recovered_usd", "initial_weight",
                            "weight_used", "weight_next", "ci90_low", "ci90_high"]),
        "<h3>By risk area</h3>",
        _table(areas[areas.period.isin([day.isoformat(), "all"])],
               ["period", "risk_area", "inspected", "frauds", "precision", "revenue_recovered_usd",
                "inspected_pipeline", "frauds_pipeline"], {"period": "reported"}),
        "<h2>3. Exploration and discoveries</h2>",
        "<p class='note'>Declarations selected per reason whose outcome was reported on the day, or over the last "
        f"{window} days, as known at the end of {day}. Hit rate: Jeffreys 95% interval; <i>vs random</i> and <i>vs "
        "exploitation</i>: the reason's hit rate over theirs (Katz 95% interval). Finds (FRAUD hits): <i>new "
        "offender</i>, no FRAUD finding of the importer reported before the declaration's date; <i>new "
        f"importer</i>, its first declaration at most {settings.monitoring.new_importer_days} days before; "
        "<i>new HS x origin</i>, no FRAUD finding of the pair reported before; <i>unexpected</i>, no rule hit "
        "and a fraud probability below the office-day's lowest exploitation pick. The last two stand in for new "
        "fraud schemes, which the product cannot see.</p>",
        _table(_exploration_view(t["exploration"], window), classes="kpi nowrap"),
        "<h3>Frauds found by random and exploration selections</h3>",
        "<p class='note'><i>missed_by_exploitation</i>: both exploitation rankings placed the declaration past the "
        "office's selections of the day, so exploitation alone would have left it GREEN. <i>no prior fraud</i> "
        "(column new_importer): no FRAUD of the importer on record by the declaration's date.</p>",
        _table(t["discoveries"].sort_values(["missed_by_exploitation", "revenue_recovered_usd"],
                                            ascending=[False, False]) if len(t["discoveries"]) else t["discoveries"],
               ["declaration_date", "declaration_id", "customs_office", "selection_reason", "channel", "hs2",
                "origin_country", "rank_revenue", "rank_probability", "cut", "missed_by_exploitation",
                "offence_codes", "revenue_recovered_usd", "new_importer"], {"new_importer": "no prior fraud"},
               max_rows=30),
        "<h2>4. Offence database growth</h2>", plots.growth(t["offence_growth"]),
        _table(t["offence_growth"].iloc[::-1], ["version", "records_folded", "frauds_folded", "revenue_folded_usd",
                                                "pipeline_folded", "legacy_folded", "corrections", "late_records",
                                                "current_total", "frauds_total", "revenue_total_usd"], max_rows=20),
        "<h2>5. Risk scores and weight evolution</h2>", plots.scores(today, day),
        plots.calibration(t["calibration"]), plots.weights(w),
        _table(t["scores"][t["scores"].declaration_date == day.isoformat()],
               ["channel", "declarations", "fraud_probability_mean", "fraud_probability_p50", "fraud_probability_p90",
                "expected_revenue_mean_usd", "uncertainty_mean", "rule_score_mean"]),
        "<h3>Weights of the last versions</h3>", _table(wpivot),
        "<h2>6. Drift against the training data</h2>", plots.drift(drift, settings),
        _table(drift, ["variable", "kind", "psi", "status", "n_reference", "n_current", "mean_reference",
                       "mean_current"]),
        f"<h2>7. {kpi_tax.TITLE}</h2>", _tax_audits(t.get("tax_audits")),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p).encode("utf-8")
