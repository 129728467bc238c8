"""The risk pages' figures (sunat_pipeline/reporting/riskview.py) against direct counts on the Parquet, and
their HTML (riskpages.py) escaping what people typed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from riskworld import BROKEN, D1, D2, D3, build, parquet_counts, parquet_hit_rates

from sunat_pipeline.reporting import riskpages, riskview
from sunat_pipeline.reporting.kpi_tables import ALL, ratio_interval


@pytest.fixture(scope="module")
def lake(tiny_world, tmp_path_factory):
    return build(tiny_world, tmp_path_factory)


def test_office_channels_equal_the_parquet_and_the_capacity(lake):
    oc = riskview.office_channels(lake, D2).set_index("customs_office")
    direct = parquet_counts(lake, D2)
    assert sorted(oc.index.drop(ALL)) == sorted(direct.index)
    for office, r in direct.iterrows():
        assert (oc.loc[office, "red"], oc.loc[office, "yellow"], oc.loc[office, "green"]) == (
            r.get("RED", 0), r.get("YELLOW", 0), r.get("GREEN", 0))
        assert oc.loc[office, "red_capacity"] == lake.selection.capacity_for(office).red  # no capacity recorded
    assert oc.loc[ALL, "declarations"] == direct.to_numpy().sum()


def test_hit_rates_and_lift_equal_a_direct_count(lake):
    hr = riskview.hit_rates(lake, D2).set_index("customs_office").loc[ALL]
    direct = parquet_hit_rates(lake, D2)
    (tf, tn), (rf, rn) = direct["targeted"], direct["random"]
    assert tn > 0 and rn > 0, "the world must inspect both kinds of selection"
    assert (hr.targeted_frauds, hr.targeted_inspected, hr.random_frauds, hr.random_inspected) == (tf, tn, rf, rn)
    assert hr.hit_rate_targeted == pytest.approx(tf / tn)
    lo, hi = ratio_interval(tf, tn, rf, rn)
    assert (hr.lift_low, hr.lift_high) == (pytest.approx(lo.iloc[0]), pytest.approx(hi.iloc[0]))
    assert hr.hit_rate_targeted_low <= hr.hit_rate_targeted <= hr.hit_rate_targeted_high
    # A window that ends before any outcome came back has nothing inspected.
    early = riskview.hit_rates(lake, D1).set_index("customs_office").loc[ALL]
    assert early.targeted_inspected == 0 and np.isnan(early.hit_rate_targeted)


def test_the_day_s_quarantine_drift_champion_and_weights(lake):
    q = riskview.quarantined(lake, D2)
    assert list(q.file_name) == [BROKEN] and riskview.quarantined(lake, D1).empty
    text = riskview.quarantine_report(lake, q.sha256.iloc[0])
    assert "REJECTED" in text and BROKEN in text
    assert riskview.quarantine_report(lake, "../../etc/passwd") is None
    d = riskview.drift(lake, D2)
    assert d["checked"] and d["max_psi"] > 0 and d["threshold"] == lake.monitoring.psi_threshold
    c = riskview.champion(lake)
    assert c["version"] == "1" and c["run_id"] and c["run_url"].endswith(f"/runs/{c['run_id']}")
    w = riskview.weight_changes(lake)
    assert len(w) and (w.weight - w.previous_weight).abs().min() > 0


def test_reports_exist_for_scored_days_only(lake):
    assert riskview.scored_days(lake) == [D1, D2]
    assert riskview.report_file(lake, D2).name == f"report_{D2}.html"
    assert riskview.report_file(lake, D3) is None
    assert riskview.run_day(lake, {"date": str(D2)}, None) == D2
    assert riskview.run_day(lake, {}, None, run_id=f"manual__{D1}T00:00:00+00:00") == D1


def test_channel_list_filters_and_reasons(lake):
    cl = riskview.channel_list(lake, D2)
    direct = parquet_counts(lake, D2)
    assert len(cl) == direct.get("RED", 0).sum() + direct.get("YELLOW", 0).sum()
    assert set(cl.channel) <= {"RED", "YELLOW"} and (cl.reasons != "").all()
    office = cl.customs_office.iloc[0]
    red = riskview.channel_list(lake, D2, office=office, channel="red")
    assert len(red) == direct.loc[office, "RED"] and (red.customs_office == office).all()
    rnd = riskview.channel_list(lake, D2, reason="random")
    assert len(rnd) and (rnd.selection_reason == "random").all()


def test_pages_escape_what_people_type(lake):
    cl = riskview.channel_list(lake, D2).head(1).assign(
        override_officer="<script>alert(1)</script>", override_why="it's a \"tip-off\" & more")
    audit = pd.DataFrame([{"recorded_at": "t", "declaration_id": "X", "channel_before": "GREEN", "channel": "RED",
                           "officer_id": "<b>OF1</b>", "why": "<img src=x onerror=alert(1)>", "override_id": "1"}])
    html = riskpages.channels_page(D2, [D1, D2], cl, riskview.channel_list_options(lake, D2), {}, True, audit)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>OF1</b>" not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x" in html
