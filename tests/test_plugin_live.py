"""The risk pages in a live Airflow: a real ``airflow api-server`` (SQLite metadata DB, simple auth manager with
an admin and a viewer, this repository's plugins folder) on a small lake; the plugins API lists the views, the
app refuses requests without a user, and a headless Chromium (Debian's package, driven by Playwright) logs in,
opens a daily run's "Risk report" tab, the "Risk targeting" page and the "Channel list", checks the figures
against the Parquet, records an override and finds it in the audit. Full-page screenshots go to the test's
folder and to /tmp/plugin_shots."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from apt import apt_install
from riskworld import D2, D3, build, copy, env, parquet_counts, parquet_hit_rates

from sunat_pipeline.orchestration.runner import airflow_env, ensure_db
from sunat_pipeline.settings import get_settings

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/plugin_shots")
USERS = {"admin": "admin", "viewer": "viewer"}  # user: role, and password (simple auth manager)


def _chromium() -> str | None:
    """Debian's chromium, installed when missing and possible; None (and why) otherwise."""
    if not Path(CHROMIUM).exists():
        apt_install("chromium")
    return CHROMIUM if Path(CHROMIUM).exists() else None


def _call(base, path, token=None, body=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null") if "json" in r.headers.get("content-type", "") else None
    except urllib.error.HTTPError as e:
        return e.code, None
    except urllib.error.URLError:  # not listening yet
        return 0, None


@pytest.fixture(scope="module")
def server(tiny_world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin_live")
    lake = copy(build(tiny_world, tmp_path_factory), tmp)
    s = get_settings(lake_root=lake.lake, mlflow_tracking_uri=lake.tracking_uri, airflow_home=tmp / "airflow")
    ensure_db(s)
    (tmp / "passwords.json").write_text(json.dumps(USERS))
    e = {**airflow_env(s), **env(lake), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
        f"{u}:{r}" for u, r in USERS.items()), "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
        tmp / "passwords.json"), "AIRFLOW__API_AUTH__JWT_SECRET": "live-test-" + "fedcba9876543210" * 4}
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "dags", "reserialize"], env=e, check=True, capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(tmp / "api-server.log", "w") as log:
        proc = subprocess.Popen([airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=e,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield _started(proc, f"http://127.0.0.1:{port}", tmp, lake)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _started(proc, base: str, tmp: Path, lake) -> dict:
    """Wait for the server; the users' tokens; runs of the daily DAG for D2 and D3, queued (no scheduler):
    enough for their tabs."""
    for _ in range(120):
        if proc.poll() is not None:
            pytest.fail(f"api-server exited: {(tmp / 'api-server.log').read_text()[-3000:]}")
        if _call(base, "/api/v2/monitor/health")[0] == 200:
            break
        time.sleep(0.5)
    tokens = {u: _call(base, "/auth/token", body={"username": u, "password": p})[1]["access_token"]
              for u, p in USERS.items()}
    for d in (D2, D3):
        st, _ = _call(base, "/api/v2/dags/sunat_daily/dagRuns", tokens["admin"], {
            "dag_run_id": f"manual__{d}", "logical_date": f"{d}T00:00:00Z", "conf": {"date": str(d)}})
        assert st == 200, st
    return {"base": base, "tokens": tokens, "lake": lake}


def test_plugins_api_lists_the_views(server):
    st, body = _call(server["base"], "/api/v2/plugins", server["tokens"]["viewer"])
    p = next(p for p in body["plugins"] if p["name"] == "sunat_risk_targeting")
    views = {v["name"]: v for v in p["external_views"]}
    assert views["Risk report"]["destination"] == "dag_run" and "{RUN_ID}" in views["Risk report"]["href"]
    assert views["Risk targeting"]["nav_top_level"] and views["Channel list"]["destination"] == "nav"
    assert [a["url_prefix"] for a in p["fastapi_apps"]] == ["/risk"]


def test_the_mounted_app_refuses_requests_without_a_user(server):
    assert _call(server["base"], "/risk/targeting")[0] == 401
    assert _call(server["base"], "/risk/api/figures", "forged.jwt.token")[0] == 401
    st, f = _call(server["base"], f"/risk/api/figures?day={D2}", server["tokens"]["viewer"])
    assert st == 200 and f["day"] == str(D2)


def test_an_officer_in_the_browser(server, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (apt-get install chromium as root)")
    from playwright.sync_api import sync_playwright

    base, lake = server["base"], server["lake"]
    SHOTS.mkdir(exist_ok=True)

    def shot(page, name):
        page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
        shutil.copy(tmp_path / f"{name}.png", SHOTS / f"{name}.png")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.set_default_timeout(20_000)
        page.goto(base + "/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(USERS["admin"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(base + "/")
        frame = page.frame_locator("iframe")

        # 1. The daily run's tab shows the day's report; a run of a day without one says so.
        page.goto(f"{base}/dags/sunat_daily/runs/manual__{D2}")
        page.get_by_role("link", name="Risk report").click()
        frame.get_by_role("heading", name=f"Risk targeting KPIs: {D2}").wait_for()
        shot(page, "1_run_tab_report")
        page.goto(f"{base}/dags/sunat_daily/runs/manual__{D3}")
        page.get_by_role("link", name="Risk report").click()
        frame.get_by_text(f"There is no KPI report for {D3}").wait_for()
        shot(page, "2_run_tab_no_report")

        # 2. The targeting page, from the navigation: channels per office and hit rates equal the Parquet's.
        page.get_by_role("link", name="Risk targeting").click()
        frame.get_by_role("heading", name=f"Risk targeting: {D2}").wait_for()
        shot(page, "3_targeting_in_airflow")
        cells = [r.locator("td").all_inner_texts() for r in frame.locator("table").first.locator("tbody tr").all()]
        shown = {c[0]: tuple(int(x) for x in c[2:5]) for c in cells}
        direct = parquet_counts(lake, D2)
        assert shown == {**{o: (r.get("RED", 0), r.get("YELLOW", 0), r.get("GREEN", 0)) for o, r in direct.iterrows()},
                         "ALL": tuple(int(direct[c].sum()) for c in ("RED", "YELLOW", "GREEN"))}
        total = frame.locator("table").nth(1).locator("tbody tr", has_text="ALL").locator("td").all_inner_texts()
        hits = parquet_hit_rates(lake, D2)
        (tf, tn), (rf, rn) = hits["targeted"], hits["random"]
        assert total[3].startswith(f"{100 * tf / tn:.1f}% ({tf} of {tn};"), total
        assert total[4].startswith(f"{100 * rf / rn:.1f}% ({rf} of {rn};"), total
        page.goto(f"{base}/risk/targeting?day={D2}")  # the page alone, to see it whole
        shot(page, "4_targeting_full_page")

        # 3. The channel list: filter RED, override the first declaration, find it in the audit.
        page.goto(base + "/")
        page.get_by_role("link", name="Channel list").click()
        frame.get_by_role("heading", name=f"Channel list: {D2}").wait_for()
        frame.locator("form[method=get] select[name=channel]").select_option("RED")
        frame.get_by_role("button", name="Filter").click()
        rows = frame.locator("table").first.locator("tbody tr")
        frame.get_by_text(f"{direct.RED.sum()} declarations").wait_for()
        assert rows.count() == direct.RED.sum()
        shot(page, "5_channel_list_red")
        decl = rows.first.locator("td").first.inner_text()
        rows.first.get_by_role("link", name="override").click()
        assert frame.locator("#ov_decl").input_value() == decl
        frame.locator("select[name=channel]").last.select_option("YELLOW")
        frame.locator("input[name=officer]").fill("OF042")
        frame.locator("input[name=why]").fill("<b>tip-off</b> from the port")
        frame.get_by_role("button", name="Record override").click()
        frame.get_by_text(f"Override recorded: {decl} RED -> YELLOW by OF042").wait_for()
        audit = frame.locator("table").last.locator("tbody tr").first.locator("td").all_inner_texts()
        assert audit[1:7] == [decl, "RED", "YELLOW", "OF042", "<b>tip-off</b> from the port", "admin"]
        page.goto(f"{base}/risk/channels?day={D2}")
        shot(page, "6_channel_list_after_override_full_page")
        browser.close()
    assert sorted(f.name for f in tmp_path.glob("*.png")) == sorted(f.name for f in SHOTS.glob("[1-6]_*.png"))
