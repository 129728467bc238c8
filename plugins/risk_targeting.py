"""Airflow plugin: the risk pages inside the Airflow UI (docs/ui.md).

* a "Risk report" tab on every DAG run: the day's HTML KPI report of a sunat_daily run, else a page saying why
  there is none;
* "Risk targeting" in the navigation: channels per office against capacity, hit rates and lift over random,
  top reasons, quarantined files, drift, the champion model, recent rule-weight changes;
* "Channel list" in the navigation: the officers' list of the day's selected declarations, filters, CSV export,
  and an override form for users who may edit the daily DAG.

The pages are a FastAPI app the api-server mounts at ``/risk`` (``fastapi_apps``) and the UI shows in a frame
(``external_views``). Airflow does not protect a plugin's app: every route here requires an Airflow user, from
the UI's token cookie or an ``Authorization: Bearer`` token, checked by Airflow's auth manager (401 without one).
The figures and HTML come from ``sunat_pipeline.reporting.riskview`` and ``riskpages``.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode, urlparse

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from sunat_pipeline.reporting import riskpages, riskview
from sunat_pipeline.settings import get_settings

log = logging.getLogger(__name__)
DAG = riskview.DAILY_DAG
app = FastAPI(title="SUNAT risk targeting", docs_url=None, redoc_url=None, openapi_url=None)


# --- access control --------------------------------------------------------------------------------------

async def airflow_user(request: Request):
    """The Airflow user of the request: a Bearer token wins over the UI's cookie, as in Airflow's own API."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from jwt import InvalidTokenError

    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        raise HTTPException(401, "Not logged in to Airflow.", headers={"WWW-Authenticate": "Bearer"})
    try:
        return await get_auth_manager().get_user_from_token(token)
    except InvalidTokenError:  # expired, revoked or not signed by this Airflow
        raise HTTPException(401, "Your Airflow session is not valid: log in again.",
                            headers={"WWW-Authenticate": "Bearer"}) from None


User = Annotated[Any, Depends(airflow_user)]


def _may(user, method: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return get_auth_manager().is_authorized_dag(method=method, user=user, details=DagDetails(id=DAG))


def reader(user: User):
    """A user who may read the daily DAG (its data is what the pages show)."""
    if not _may(user, "GET"):
        raise HTTPException(403, f"You may not read the {DAG} DAG.")
    return user


Reader = Annotated[Any, Depends(reader)]


@app.exception_handler(HTTPException)
async def _error_page(request: Request, exc: HTTPException):
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    lines = [str(exc.detail)] + (["Open Airflow, log in, then come back to this page."] if exc.status_code == 401
                                 else [])
    return HTMLResponse(riskpages.notice("Risk pages", lines, [("/", "Airflow home")]), exc.status_code,
                        headers=exc.headers)


# --- pages -----------------------------------------------------------------------------------------------

def _day(settings, day: str | None) -> tuple[date | None, list[date]]:
    days = riskview.scored_days(settings)
    if not day:
        return (days[-1] if days else None), days
    try:
        return date.fromisoformat(day), days
    except ValueError:
        raise HTTPException(400, f"Not a day: {day!r} (YYYY-MM-DD).") from None


def _nothing() -> HTMLResponse:
    return HTMLResponse(riskpages.notice("Nothing scored yet", [
        f"The {DAG} DAG has not scored any day in this lake yet; the pages fill in after its first run."]))


def _dag_run(dag_id: str, run_id: str):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        r = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return None if r is None else {"conf": dict(r.conf or {}), "logical_date": r.logical_date,
                                       "data_interval_end": r.data_interval_end, "run_after": r.run_after}


@app.get("/report/{dag_id}/{run_id}", response_class=HTMLResponse)
def run_report(dag_id: str, run_id: str, user: Reader):
    """The "Risk report" tab of a DAG run."""
    if dag_id != DAG:
        return riskpages.notice("No risk report for this DAG", [
            f"The risk report belongs to the daily risk-targeting DAG, {DAG}. {dag_id} does not produce one.",
            f"Open a run of {DAG} to see its day's report."], [(f"/dags/{DAG}", f"Runs of {DAG}")])
    s = get_settings()
    run = _dag_run(dag_id, run_id)
    day = riskview.run_day(s, **run, run_id=run_id) if run else riskview.run_day(s, None, run_id=run_id)
    return _report(s, day, f"run {run_id}")


@app.get("/day/{day}/report", response_class=HTMLResponse)
def day_report(day: str, user: Reader):
    s = get_settings()
    return _report(s, _day(s, day)[0], f"day {day}")


def _report(s, day: date | None, what: str):
    page = riskview.report_file(s, day)
    if page is None:
        return riskpages.notice("No risk report for this day", [
            f"There is no KPI report for {day or what} in the lake yet.",
            "The report is written by the run's kpi_report task: the run may still be going, have failed before it,"
            " or have processed another lake."], [(f"{riskpages.PREFIX}/targeting", "Risk targeting (latest day)")])
    return HTMLResponse(page.read_bytes())


def figures(s, day: date) -> dict:
    """Everything the targeting page shows for ``day`` (riskview's frames and dicts)."""
    return {"offices": riskview.office_channels(s, day), "hit_rates": riskview.hit_rates(s, day),
            "window_days": riskview.WINDOW_DAYS, "reasons": riskview.top_reasons(s, day),
            "quarantined": riskview.quarantined(s, day), "drift": riskview.drift(s, day),
            "champion": riskview.champion(s), "weights": riskview.weight_changes(s)}


@app.get("/", include_in_schema=False)
def home(user: User):
    return RedirectResponse(f"{riskpages.PREFIX}/targeting", 303)


@app.get("/targeting", response_class=HTMLResponse)
def targeting(user: Reader, day: str | None = None):
    s = get_settings()
    d, days = _day(s, day)
    return _nothing() if d is None else riskpages.targeting_page(d, days, figures(s, d))


@app.get("/api/figures")
def figures_json(user: Reader, day: str | None = None):
    """The targeting page's figures as JSON (scripts and tests)."""
    s = get_settings()
    d, _ = _day(s, day)
    if d is None:
        return {"day": None}
    f = figures(s, d)
    by_reason, rules = f.pop("reasons")
    out = {k: v.to_dict("records") if hasattr(v, "to_dict") else v for k, v in f.items()}
    return JSONResponse(riskview.jsonable({**out, "day": d, "reasons": by_reason.to_dict("records"),
                                           "rules": rules.to_dict("records")}))


@app.get("/quarantine/{sha256}", response_class=HTMLResponse)
def quarantine_report(sha256: str, user: Reader):
    text = riskview.quarantine_report(get_settings(), sha256)
    if text is None:
        raise HTTPException(404, "No quarantine report for this file.")
    return riskpages.page("Quarantine report", [f"<pre>{riskpages.escape(text)}</pre>"])


def _filters(office: str | None, channel: str | None, reason: str | None) -> dict:
    return {"office": office or "", "channel": (channel or "").upper(), "reason": reason or ""}


@app.get("/channels", response_class=HTMLResponse)
def channels(user: Reader, day: str | None = None, office: str | None = None, channel: str | None = None,
             reason: str | None = None, msg: str = "", err: str = ""):
    s = get_settings()
    d, days = _day(s, day)
    if d is None:
        return _nothing()
    f = _filters(office, channel, reason)
    return riskpages.channels_page(d, days, riskview.channel_list(s, d, **f), riskview.channel_list_options(s, d),
                                   f, _may(user, "PUT"), riskview.override_audit(s, d), msg, err)


@app.get("/channels.csv")
def channels_csv(user: Reader, day: str | None = None, office: str | None = None, channel: str | None = None,
                 reason: str | None = None):
    s = get_settings()
    d, _ = _day(s, day)
    cl = riskview.channel_list(s, d, **_filters(office, channel, reason)) if d else riskview.empty_channel_list()
    return Response(cl.to_csv(index=False), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="channel_list_{d}.csv"'})


@app.post("/overrides")
def override(request: Request, day: Annotated[str, Form()], declaration_id: Annotated[str, Form()],
             channel: Annotated[str, Form()], officer: Annotated[str, Form()], why: Annotated[str, Form()],
             user: User):
    """Record an officer's override (edit rights on the daily DAG), then back to the channel list."""
    if not _may(user, "PUT"):
        raise HTTPException(403, f"Overrides need edit rights on the {DAG} DAG.")
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.url.netloc:  # a form posted from another site
        raise HTTPException(403, "Overrides are recorded from the Airflow UI only.")
    s = get_settings()
    d, _ = _day(s, day)
    q = {"day": d.isoformat()}
    try:
        rec = riskview.record_override(s, d, declaration_id.strip(), channel, officer, why, user.get_name())
        q["msg"] = (f"Override recorded: {rec['declaration_id']} {rec['channel_before']} -> {rec['channel']} "
                    f"by {rec['officer_id']} (event {rec['override_id']}).")
    except (LookupError, ValueError) as e:
        q["err"] = str(e).strip("'\"")
    return RedirectResponse(f"{riskpages.PREFIX}/channels?{urlencode(q)}", 303)


class RiskTargetingPlugin(AirflowPlugin):
    name = "sunat_risk_targeting"
    fastapi_apps = [{"app": app, "url_prefix": riskpages.PREFIX, "name": "SUNAT risk targeting"}]
    external_views = [
        {"name": "Risk report", "href": f"{riskpages.PREFIX}/report/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "risk-report"},
        {"name": "Risk targeting", "href": f"{riskpages.PREFIX}/targeting", "destination": "nav",
         "url_route": "risk-targeting", "nav_top_level": True},
        {"name": "Channel list", "href": f"{riskpages.PREFIX}/channels", "destination": "nav",
         "url_route": "channel-list", "nav_top_level": True},
    ]
