"""HTML of the Airflow UI's risk pages (plugins/risk_targeting.py): the targeting overview, the officers'
channel list with its override form, and the notices of the "Risk report" tab. Figures come from
``riskview``; every value from the lake or from a person (officer ids, reasons) is escaped here.
"""

from __future__ import annotations

import math
from datetime import date
from html import escape
from urllib.parse import urlencode

import pandas as pd

from sunat_pipeline.reporting.kpi_tables import ALL

PREFIX = "/risk"  # where the plugin mounts its app (plugins/risk_targeting.py)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:16px 24px;color:#1f2933;
background:#fff;font-size:14px}h1{font-size:1.45em;margin:0 0 4px}h2{font-size:1.1em;margin:26px 0 6px;
border-bottom:1px solid #d9dee3;padding-bottom:3px}.note{color:#52606d;font-size:12.5px;max-width:1000px}
nav.top{display:flex;gap:14px;align-items:center;margin-bottom:12px;flex-wrap:wrap}nav.top a{color:#1d4ed8}
table{border-collapse:collapse;margin:6px 0 4px}th,td{padding:4px 9px;border-bottom:1px solid #e5e7eb;
text-align:left;vertical-align:top}th{background:#f3f4f6;font-weight:600}td.n{text-align:right;
font-variant-numeric:tabular-nums}tr.total td{font-weight:600;background:#fafafa}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.RED{background:#fde2e1;color:#9b1c1c}.YELLOW{background:#fef3c7;color:#92400e}.GREEN{background:#dcfce7;
color:#166534}.over{color:#b91c1c;font-weight:600}.ok{color:#166534}.warn{color:#b45309;font-weight:600}
.box{border:1px solid #d9dee3;border-radius:8px;padding:12px 16px;margin:10px 0;max-width:900px}
.msg{background:#ecfdf5;border:1px solid #a7f3d0}.err{background:#fef2f2;border:1px solid #fecaca}
form.inline{display:flex;gap:8px;align-items:end;flex-wrap:wrap}label{font-size:12px;color:#52606d;
display:flex;flex-direction:column;gap:2px}input,select,button{font-size:13px;padding:4px 6px}
button{cursor:pointer}td:first-child{white-space:nowrap}td.reasons{max-width:520px;font-size:12.5px}pre{white-space:pre-wrap;font-size:12px}
"""


def pct(v, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.{digits}f}%"


def num(v, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:,.{digits}f}"


def chip(channel: str) -> str:
    return f"<span class='chip {escape(channel)}'>{escape(channel)}</span>" if channel in (
        "RED", "YELLOW", "GREEN") else escape(str(channel))


def page(title: str, body: list[str], days: list[date] | None = None, day: date | None = None,
         here: str = "") -> str:
    """A whole page: the links between the risk pages, a day picker, then ``body`` (already escaped HTML)."""
    links = [("targeting", "Risk targeting"), ("channels", "Channel list")]
    nav = "".join(f"<a href='{PREFIX}/{p}{_q(day=day)}'>{'<b>' + t + '</b>' if p == here else t}</a>"
                  for p, t in links)
    if day is not None:
        nav += f"<a href='{PREFIX}/day/{day.isoformat()}/report'>Full KPI report of {day}</a>"
    if days:
        opts = "".join(f"<option value='{d}'{' selected' if d == day else ''}>{d}</option>"
                       for d in reversed(days))
        nav += (f"<form class='inline' method='get' action='{PREFIX}/{escape(here)}'><label>Day"
                f"<select name='day' onchange='this.form.submit()'>{opts}</select></label>"
                "<noscript><button>Show</button></noscript></form>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<nav class='top'>{nav}</nav><h1>{escape(title)}</h1>" + "\n".join(body) + "</body></html>")


def _q(**kw) -> str:
    kw = {k: v for k, v in kw.items() if v not in (None, "")}
    return "?" + urlencode(kw) if kw else ""


def notice(title: str, lines: list[str], links: list[tuple[str, str]] = ()) -> str:
    """A page that says why there is nothing to show (plain text lines, escaped) and where to go instead."""
    body = ["<div class='box'>" + "".join(f"<p>{escape(x)}</p>" for x in lines)
            + "".join(f"<p><a href='{escape(h)}'>{escape(t)}</a></p>" for h, t in links) + "</div>"]
    return page(title, body)


def table(df: pd.DataFrame, cols: dict[str, str], fmt: dict | None = None, total_key: str | None = None,
          empty: str = "Nothing to show.") -> str:
    """An HTML table of ``df``'s ``cols`` (column -> header); ``fmt``: column -> function giving escaped HTML
    (default: the escaped value; numbers right-aligned)."""
    if df is None or df.empty:
        return f"<p class='note'>{escape(empty)}</p>"
    fmt = fmt or {}
    head = "".join(f"<th>{escape(h)}</th>" for h in cols.values())
    rows = []
    for r in df.to_dict("records"):
        cells = []
        for c in cols:
            v = r.get(c)
            if c in fmt:
                cells.append(f"<td class='n'>{fmt[c](v)}</td>" if getattr(fmt[c], "numeric", False)
                             else f"<td>{fmt[c](v)}</td>")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                cells.append(f"<td class='n'>{escape(num(v, 0) if float(v).is_integer() else num(v, 3))}</td>")
            else:
                cells.append(f"<td>{escape('' if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))}"
                             "</td>")
        total = total_key is not None and r.get(total_key) == ALL
        rows.append(f"<tr{' class=total' if total else ''}>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _raw(v) -> str:
    """A cell this module built itself (its values already escaped)."""
    return v or ""


def numeric(f):
    f.numeric = True
    return f


def _used(used, cap, unit) -> str:
    if cap is None or (isinstance(cap, float) and math.isnan(cap)):
        return ""
    over = used > cap
    u = "" if unit == "declarations" else f" {escape(str(unit))} units"
    return f"<span class='{'over' if over else 'ok'}'>{num(used, 0)} / {num(cap, 0)}{u}</span>"


def targeting_page(day: date, days: list[date], f: dict) -> str:
    """The "Risk targeting" page of ``day`` from ``f``: riskview's figures (see the plugin's ``figures``)."""
    oc = f["offices"]
    if len(oc):
        oc = oc.assign(red_vs=[_used(r.red_used, r.red_capacity, r.unit) for r in oc.itertuples()],
                       yellow_vs=[_used(r.yellow_used, r.yellow_capacity, r.unit) for r in oc.itertuples()])
    hr = f["hit_rates"]
    if len(hr):
        hr = hr.assign(
            targeted=[f"{pct(r.hit_rate_targeted)} <span class='note'>({r.targeted_frauds} of "
                      f"{r.targeted_inspected}; 90%: {pct(r.hit_rate_targeted_low)}&ndash;"
                      f"{pct(r.hit_rate_targeted_high)})</span>" for r in hr.itertuples()],
            random=[f"{pct(r.hit_rate_random)} <span class='note'>({r.random_frauds} of {r.random_inspected}; "
                    f"90%: {pct(r.hit_rate_random_low)}&ndash;{pct(r.hit_rate_random_high)})</span>"
                    for r in hr.itertuples()],
            lift_txt=[f"<b>{num(r.lift)}</b> <span class='note'>(95%: {num(r.lift_low)}&ndash;{num(r.lift_high)})"
                      + ("; no fraud found by random selection yet" if r.random_inspected and not r.random_frauds
                         else "") + "</span>" for r in hr.itertuples()])
    d = f["drift"]
    if not d.get("checked"):
        drift = "<p class='note'>No drift check recorded for this day (no KPI report, or no training reference).</p>"
    else:
        high = d["max_psi"] is not None and d["max_psi"] > d["threshold"]
        verdict = "Drift past the threshold" if high else "No major drift"
        drift = (f"<p><span class='{'warn' if high else 'ok'}'>{verdict}"
                 f"</span>: largest PSI {num(d['max_psi'], 3)} ({escape(d['worst'])}), threshold "
                 f"{num(d['threshold'], 2)}. {escape(d['major'] or '')}"
                 f"{' Retraining requested.' if d['retrain_requested'] else ''}</p>")
    c = f["champion"]
    champ = ("<p class='note'>No champion model registered yet: the day was scored by the rules alone or by a "
             "model outside the registry.</p>" if c is None else
             f"<p>Champion <b>{escape(c['name'])} version {escape(c['version'])}</b>, registered {escape(c['created'])}"
             + (f", trained on data up to {escape(c['training_date'])}" if c["training_date"] else "")
             + (f". <a href='{escape(c['run_url'])}' target='_blank' rel='noopener'>Its MLflow training run</a>"
                if c["run_url"] else "") + f" &middot; <a href='{escape(c['model_url'])}' target='_blank' "
             "rel='noopener'>registry page</a></p>")
    by_reason, rules = f["reasons"]
    q = f["quarantined"]
    if len(q):
        q = q.assign(link=[f"<a href='{PREFIX}/quarantine/{escape(s)}'>report</a>" for s in q.sha256])
    fr = numeric(lambda v: escape(num(v, 3)))
    body = [
        f"<p class='note'>Day {day}: what the daily run decided and what came back. Hit rates and lift over the "
        f"{f['window_days']} days up to {day} with the inspection outcomes known at the end of the day "
        "(definitions in docs/kpi.md).</p>",
        "<h2>Channels per office today, against capacity</h2>",
        table(oc, {"customs_office": "Office", "declarations": "Declarations", "red": "RED", "yellow": "YELLOW",
                   "green": "GREEN", "red_vs": "RED used / capacity", "yellow_vs": "YELLOW used / capacity"},
              {"red_vs": _raw, "yellow_vs": _raw}, total_key="customs_office",
              empty="Nothing scored on this day."),
        f"<h2>Hit rate and lift over random, last {f['window_days']} days</h2>",
        "<p class='note'>Hit rate: inspected declarations with an offence. Targeted: mandatory rules, model and "
        "exploration selections; random: the quality-control sample. Lift: targeted hit rate over random hit rate "
        "(above 1: targeting finds more than chance).</p>",
        table(hr, {"customs_office": "Office", "declarations": "Declarations", "selected": "Selected",
                   "targeted": "Targeted hit rate", "random": "Random hit rate", "lift_txt": "Lift over random"},
              {"targeted": _raw, "random": _raw, "lift_txt": _raw}, total_key="customs_office",
              empty="No decisions in the window."),
        "<h2>Top reasons for selection today</h2><div style='display:flex;gap:40px;flex-wrap:wrap'><div>",
        table(by_reason, {"selection_reason": "Selection reason", "RED": "RED", "YELLOW": "YELLOW",
                          "declarations": "Declarations"}, empty="No declaration selected."),
        "</div><div>",
        table(rules, {"rule_id": "Rule", "rule": "What it flags", "selected_declarations": "Selected declarations"},
              empty="No rule hit among the selected declarations."),
        "</div></div>",
        "<h2>Quarantined files of the day</h2>",
        table(q, {"source": "Source", "file_name": "File", "rows": "Rows", "failed_checks": "What failed",
                  "link": "Report"}, {"link": _raw}, empty="No file quarantined on this day."),
        "<h2>Drift</h2>", drift,
        "<h2>Model</h2>", champ,
        "<h2>Recent rule-weight changes</h2>",
        table(f["weights"], {"version": "Version", "rule_id": "Rule", "previous_weight": "Before", "weight": "After",
                             "change": "Change", "inspected_in_version": "New inspected",
                             "frauds_in_version": "New frauds"}, {"previous_weight": fr, "weight": fr, "change": fr},
              empty="No weight changed in the last versions."),
    ]
    return page(f"Risk targeting: {day}", body, days, day, "targeting")


def channels_page(day: date, days: list[date], cl: pd.DataFrame, opts: dict, filters: dict, can_edit: bool,
                  audit: pd.DataFrame, message: str = "", error: str = "") -> str:
    """The officers' channel list of ``day`` (already filtered), its filters, CSV link, override form and the
    audit of the day's overrides."""
    def sel(name, values, label):
        o = "<option value=''>all</option>" + "".join(
            f"<option value='{escape(v)}'{' selected' if filters.get(name) == v else ''}>{escape(v)}</option>"
            for v in values)
        return f"<label>{label}<select name='{name}'>{o}</select></label>"

    q = _q(day=day, **filters)
    form = (f"<form class='inline' method='get' action='{PREFIX}/channels'><input type='hidden' name='day' "
            f"value='{day}'>{sel('office', opts['office'], 'Office')}{sel('channel', opts['channel'], 'Channel')}"
            f"{sel('reason', opts['reason'], 'Selection reason')}<button>Filter</button>"
            f"<a href='{PREFIX}/channels.csv{escape(q)}' download>Export CSV</a></form>")
    rows = cl.assign(override=[
        (f"<span class='note'>{escape(r.model_channel)} &rarr; {escape(r.channel)} by {escape(r.override_officer)}: "
         f"{escape(r.override_why)}</span>" if r.override_officer else "")
        + (f" <a href='#override' data-decl='{escape(r.declaration_id)}' onclick=\"document.getElementById("
           "'ov_decl').value=this.dataset.decl\">override</a>" if can_edit else "") for r in cl.itertuples()])
    n = len(cl)
    counts = cl.channel.value_counts().to_dict() if n else {}
    ovf = (f"<h2 id='override'>Override a channel</h2><form class='inline' method='post' action='{PREFIX}/overrides'>"
           f"<input type='hidden' name='day' value='{day}'>"
           "<label>Declaration<input id='ov_decl' name='declaration_id' required size='22'></label>"
           "<label>Channel<select name='channel'><option>RED</option><option>YELLOW</option><option>GREEN</option>"
           "</select></label><label>Officer<input name='officer' required size='10'></label>"
           "<label>Why<input name='why' required size='40'></label><button>Record override</button></form>"
           "<p class='note'>Recorded as an override event (who, why, when) like <code>sunat-pipeline override</code>;"
           " the inspection list applies the latest event of a declaration.</p>") if can_edit else (
        "<p class='note'>Overrides need edit rights on the sunat_daily DAG; you can view the list.</p>")
    body = [
        (f"<div class='box msg'>{escape(message)}</div>" if message else "")
        + (f"<div class='box err'>{escape(error)}</div>" if error else ""),
        f"<p class='note'>Declarations selected on {day} (RED: physical examination, YELLOW: documentary check), "
        "with why each was selected in plain words. An officer's override in force shows beside it.</p>",
        form,
        f"<p><b>{n}</b> declarations: " + ", ".join(f"{chip(k)} {v}" for k, v in sorted(counts.items())) + "</p>",
        table(rows, {"declaration_id": "Declaration", "customs_office": "Office", "channel": "Channel",
                     "selection_reason": "Selection reason", "fraud_probability": "Fraud probability",
                     "expected_revenue_usd": "Expected revenue (USD)", "items": "Items", "reasons": "Why selected",
                     "override": "Override"},
              {"channel": chip, "fraud_probability": numeric(lambda v: pct(v)),
               "expected_revenue_usd": numeric(lambda v: escape(num(v, 0))),
               "reasons": lambda v: escape(v or "").replace(" | ", "<br>"), "override": _raw},
              empty="No selected declaration matches."),
        ovf,
        "<h2>Override audit of the day</h2>",
        table(audit, {"recorded_at": "Recorded at", "declaration_id": "Declaration", "channel_before": "From",
                      "channel": "To", "officer_id": "Officer", "why": "Why", "recorded_by": "Airflow user",
                      "override_id": "Event"},
              {"channel_before": chip, "channel": chip}, empty="No override recorded for this day."),
    ]
    return page(f"Channel list: {day}", body, days, day, "channels")
