"""The Airflow plugin's app (plugins/risk_targeting.py) through FastAPI's TestClient, with Airflow's own auth
manager (the simple one) validating real JWTs on a migrated metadata database: 401 without a user, pages for a
viewer, overrides only for a user who may edit the daily DAG."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pandas as pd
import pytest
from riskworld import D1, D2, D3, build, copy, env

from sunat_pipeline.orchestration.runner import ensure_db
from sunat_pipeline.reporting import riskview
from sunat_pipeline.selection import overrides
from sunat_pipeline.settings import get_settings

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "risk_targeting.py"


def load_plugin():
    spec = importlib.util.spec_from_file_location("risk_targeting", PLUGIN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def app(tiny_world, tmp_path_factory):
    lake = copy(build(tiny_world, tmp_path_factory), tmp_path_factory.mktemp("plugin_app"))
    mp = pytest.MonkeyPatch()
    for k, v in env(lake).items():
        mp.setenv(k, v)
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "risk-pages-test-" + "0123456789abcdef" * 4)
    ensure_db(get_settings())  # the auth manager checks token revocation in the metadata DB
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    am = create_auth_manager()
    tokens = {role: am.generate_jwt(SimpleAuthManagerUser(username=role, role=role)) for role in ("admin", "viewer")}
    yield {"client": TestClient(load_plugin().app), "tokens": tokens, "lake": lake}
    mp.undo()


def get(app, path, role=None, **kw):
    headers = {"Authorization": f"Bearer {app['tokens'][role]}"} if role else {}
    return app["client"].get(path, headers=headers, **kw)


@pytest.mark.parametrize("path", ["/targeting", "/channels", "/channels.csv", f"/day/{D2}/report",
                                  f"/report/sunat_daily/manual__{D2}", "/api/figures", "/"])
def test_every_page_needs_an_airflow_user(app, path):
    assert get(app, path).status_code == 401
    bad = app["client"].get(path, headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401
    forged = app["client"].get(path, cookies={"_token": app["tokens"]["admin"][:-4] + "AAAA"})
    assert forged.status_code == 401


def test_the_ui_cookie_is_a_user_too(app):
    app["client"].cookies.set("_token", app["tokens"]["viewer"])
    try:
        assert app["client"].get("/targeting").status_code == 200
    finally:
        app["client"].cookies.clear()


def test_run_tab_shows_the_day_s_report_or_says_why_not(app):
    r = get(app, f"/report/sunat_daily/manual__{D2}T00:00:00+00:00", "viewer")
    assert r.status_code == 200 and f"Risk targeting KPIs: {D2}" in r.text
    assert r.content == riskview.report_file(app["lake"], D2).read_bytes()
    none = get(app, f"/report/sunat_daily/manual__{D3}T00:00:00+00:00", "viewer")
    assert none.status_code == 200 and f"There is no KPI report for {D3}" in none.text
    other = get(app, "/report/sunat_retrain/manual__x", "viewer")
    assert "No risk report for this DAG" in other.text and "sunat_retrain does not produce one" in other.text


def test_targeting_page_and_its_figures(app):
    page = get(app, f"/targeting?day={D2}", "viewer").text
    for heading in ("Channels per office today", "Hit rate and lift over random", "Top reasons",
                    "Quarantined files of the day", "Drift", "Champion", "Recent rule-weight changes"):
        assert heading in page
    f = get(app, f"/api/figures?day={D2}", "viewer").json()
    oc = pd.DataFrame(f["offices"]).set_index("customs_office")
    assert oc.loc["ALL", "declarations"] == riskview.office_channels(app["lake"], D2).declarations.iloc[-1]
    assert f["champion"]["version"] == "1" and f["champion"]["run_url"] in page
    assert f["quarantined"][0]["file_name"] in page
    q = get(app, f"/quarantine/{f['quarantined'][0]['sha256']}", "viewer")
    assert q.status_code == 200 and "REJECTED" in q.text
    assert get(app, "/targeting?day=yesterday", "viewer").status_code == 400


def test_channel_list_filters_and_csv(app):
    full = pd.read_csv(io.StringIO(get(app, f"/channels.csv?day={D2}", "viewer").text), dtype=str)
    assert len(full) == len(riskview.channel_list(app["lake"], D2))
    red = pd.read_csv(io.StringIO(get(app, f"/channels.csv?day={D2}&channel=RED", "viewer").text), dtype=str)
    assert len(red) and (red.channel == "RED").all()
    page = get(app, f"/channels?day={D2}&channel=RED", "viewer").text
    assert all(d in page for d in red.declaration_id)
    assert "need edit rights" in page and "Record override" not in page  # a viewer sees no form


def test_override_needs_edit_rights_and_is_audited(app):
    decl = riskview.channel_list(app["lake"], D2, channel="RED").declaration_id.iloc[0]
    form = {"day": str(D2), "declaration_id": decl, "channel": "GREEN", "officer": "OF<42>",
            "why": "documents checked at the <desk>"}
    c = app["client"]
    viewer = c.post("/overrides", data=form, headers={"Authorization": f"Bearer {app['tokens']['viewer']}"})
    assert viewer.status_code == 403 and overrides.in_force(app["lake"], D2).query("declaration_id == @decl").empty
    assert c.post("/overrides", data=form).status_code == 401
    admin = {"Authorization": f"Bearer {app['tokens']['admin']}"}
    r = c.post("/overrides", data=form, headers=admin, follow_redirects=False)
    assert r.status_code == 303 and "Override+recorded" in r.headers["location"]
    ev = overrides.in_force(app["lake"], D2).set_index("declaration_id").loc[decl]
    assert (ev.channel, ev.channel_before, ev.officer_id, ev.why, ev.recorded_by) == (
        "GREEN", "RED", "OF<42>", form["why"], "admin")
    page = c.get(r.headers["location"].removeprefix("/risk"), headers=admin).text
    assert "OF&lt;42&gt;" in page and "OF<42>" not in page and "Record override" in page
    bad = c.post("/overrides", data={**form, "declaration_id": "NOPE"}, headers=admin, follow_redirects=False)
    assert "not+found" in bad.headers["location"]
    assert c.post("/overrides", data=form, headers={**admin, "Origin": "https://evil.example"}).status_code == 403
    assert get(app, f"/channels?day={D1}", "admin").status_code == 200
