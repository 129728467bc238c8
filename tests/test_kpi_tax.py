"""Tax audit KPIs (issue 17 item 5): hit rate, yield and lift of a known set of audits, by sector and office, with
their intervals; the daily report's monthly section, and its notice when no tax audit has landed."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from sunat_pipeline.reporting import kpi, kpi_tax, report
from sunat_pipeline.settings import get_settings
from sunat_pipeline.tax import store

# audit_id: (taxpayer, program, result, assessed tax, penalty, listed_reason)
AUDITS = {
    "r1": ("T1", "RANDOM", "ASSESSED", 100.0, 50.0, None),
    "r2": ("T2", "RANDOM", "NO_FINDINGS", 0.0, 0.0, None),
    "r3": ("T3", "RANDOM", "NO_FINDINGS", 0.0, 0.0, "random"),
    "r4": ("T4", "RANDOM", "NOT_LOCATED", 0.0, 0.0, None),
    "u1": ("T5", "RULES", "ASSESSED", 200.0, 100.0, "risk"),
    "u2": ("T6", "RULES", "ASSESSED", 400.0, 200.0, "risk"),
    "u3": ("T7", "RULES", "ASSESSED", 1000.0, 500.0, None),
    "u4": ("T8", "RULES", "NO_FINDINGS", 0.0, 0.0, "risk"),
    "u5": ("T9", "RULES", "NO_FINDINGS", 0.0, 0.0, None),
    "u6": ("T1", "RULES", "NO_FINDINGS", 0.0, 0.0, None),
}
# T1-T4 and T9 commerce in office IR-A, the others services in IR-B; T9 is not in the register.
REGISTER = pd.DataFrame({"taxpayer_id": [f"T{i}" for i in range(1, 9)],
                         "sector": ["commerce"] * 4 + ["services"] * 4, "tax_office": ["IR-A"] * 4 + ["IR-B"] * 4})


def _audits() -> pd.DataFrame:
    rows = [(a, *v) for a, v in AUDITS.items()]
    df = pd.DataFrame(rows, columns=["audit_id", "taxpayer_id", "program", "result", "assessed_tax_pen", "penalty_pen",
                                     "listed_reason"])
    return df.assign(closed_date=[date(2026, 1, 10)] * 5 + [date(2026, 2, 10)] * 5)


def _row(t, selection, dimension="all", value="ALL"):
    r = t[(t.dimension == dimension) & (t.value == value) & (t.selection == selection)]
    assert len(r) == 1, (dimension, value, selection)
    return r.iloc[0]


def _jeffreys(k, n):
    return (0.0 if k == 0 else beta.ppf(0.025, k + 0.5, n - k + 0.5),
            1.0 if k == n else beta.ppf(0.975, k + 0.5, n - k + 0.5))


def test_hit_rate_yield_and_lift_of_a_known_set():
    t = kpi_tax.audit_kpis(_audits(), REGISTER, seed=1)
    rnd, rules, risk, every = (_row(t, s) for s in ("RANDOM", "RULES", "list_risk", "ALL"))
    assert (rnd.audits, rnd.assessed, rules.audits, rules.assessed, risk.audits, risk.assessed) == (4, 1, 6, 3, 3, 2)
    assert rnd.hit_rate == 0.25 and rules.hit_rate == 0.5 and risk.hit_rate == pytest.approx(2 / 3)
    assert every.hit_rate == 0.4 and _row(t, "list_random").audits == 1
    # Yield: (assessed tax + penalty) per closed audit, NOT_LOCATED and NO_FINDINGS included.
    assert rnd.yield_pen == 37.5 and rules.yield_pen == 400.0 and risk.yield_pen == 300.0
    assert every.yield_pen == 255.0 and every.assessed_pen == 2550.0
    # Lift over the RANDOM program: 2 and 8/3, with Katz's interval computed here by hand.
    assert rules.lift_vs_random == pytest.approx(2.0) and risk.lift_vs_random == pytest.approx(8 / 3)
    assert rnd.lift_vs_random == pytest.approx(1.0) and rules.random_audits == 4
    se = math.sqrt(1 / 2 - 1 / 3 + 1 / 1 - 1 / 4)
    assert risk.lift_vs_random_low == pytest.approx(math.exp(math.log(8 / 3) - 1.96 * se))
    assert risk.lift_vs_random_high == pytest.approx(math.exp(math.log(8 / 3) + 1.96 * se))
    # Hit rates: Jeffreys 95%.
    for r, k, n in ((rnd, 1, 4), (rules, 3, 6), (risk, 2, 3)):
        assert (r.hit_rate_low, r.hit_rate_high) == pytest.approx(_jeffreys(k, n))
    # Yield: a bootstrap interval around the mean, inside the amounts' range, the same for the same seed.
    assert 0 <= rules.yield_pen_low < rules.yield_pen < rules.yield_pen_high <= 1500
    again = kpi_tax.audit_kpis(_audits(), REGISTER, seed=1)
    pd.testing.assert_frame_equal(t, again)


def test_by_sector_and_office():
    t = kpi_tax.audit_kpis(_audits(), REGISTER)
    assert set(t.dimension) == {"all", "sector", "tax_office"}
    assert set(t[t.dimension == "sector"].value) == {"commerce", "services", "UNKNOWN"}
    # Commerce: T1 (RANDOM assessed, RULES not), T2-T4 RANDOM, none else.
    com, com_rnd = _row(t, "ALL", "sector", "commerce"), _row(t, "RANDOM", "sector", "commerce")
    assert (com.audits, com.assessed, com_rnd.audits, com_rnd.assessed) == (5, 1, 4, 1)
    assert _row(t, "RULES", "sector", "commerce").lift_vs_random == 0.0
    # Services (IR-B): RULES only, 3 of 4 assessed; no random audit there: no lift, no interval.
    b = _row(t, "RULES", "tax_office", "IR-B")
    assert (b.audits, b.assessed, b.hit_rate, b.random_audits) == (4, 3, 0.75, 0)
    assert np.isnan(b.lift_vs_random) and np.isnan(b.lift_vs_random_low)
    # Every audit lands in exactly one sector and one office.
    for dim in ("sector", "tax_office"):
        assert t[(t.dimension == dim) & (t.selection == "ALL")].audits.sum() == len(AUDITS)
    assert list(t.columns) == [c for c in kpi_tax.COLUMNS if c not in ("month", "published_date", "period")]
    assert kpi_tax.audit_kpis(_audits().iloc[:0]).empty


def test_report_section_absent_then_present(tmp_path):
    s = get_settings(lake_root=tmp_path / "data")
    day = date(2026, 3, 2)
    t = kpi.compute(s, day)
    assert t["tax_audits"].empty and list(t["tax_audits"].columns) == list(kpi_tax.COLUMNS)
    page = report.render(s, day, t, pd.DataFrame()).decode()
    assert kpi_tax.TITLE in page and "No tax audits landed yet" in page
    # February's run publishes its audit outcomes on 2026-03-02: not in the report of the 1st, in that of the 2nd.
    store.write(s, store.OUTCOMES, "2026-02", _audits())
    assert kpi_tax.compute(s, date(2026, 3, 1)).empty
    t = kpi.compute(s, day)
    x = t["tax_audits"]
    assert set(x.month) == {"2026-02"} and set(x.published_date) == {"2026-03-02"}
    assert set(x.period) == {"all", "2026-02"}
    assert _row(x[x.period == "all"], "ALL").audits == 10 and _row(x[x.period == "2026-02"], "ALL").audits == 5
    # No register landed: sector and office unknown, the figures still there.
    assert set(x[x.dimension == "tax_office"].value) == {"UNKNOWN"}
    page = report.render(s, day, t, pd.DataFrame()).decode()
    assert "No tax audits landed yet" not in page and "By tax office" in page
    assert "10 closed audits known, 5 closed in the month" in page
    assert "<td>40.0% [15.3%, 69.6%]</td>" in page and "<td>2.67 [0.41, 17.42]</td>" in page  # as above
    # Written with the other KPI tables, one snapshot per report day.
    kpi.write(s, day, t)
    stored = kpi.read(s, "tax_audits", day)
    pd.testing.assert_frame_equal(stored.drop(columns="report_date"), x, check_dtype=False)
