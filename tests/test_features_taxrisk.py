"""Tax risk in the customs features (issue 17 item 4): the monthly tax run's tables reach a declaration only when
published strictly before its day; values by hand; nothing published means NaN."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from tinyworld import LONG_WORLD

from sunat_pipeline.features import taxrisk
from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.catalog import FEATURES
from sunat_pipeline.settings import get_settings
from sunat_pipeline.tax import store

A, B, C = "20000000001", "20000000002", "20000000003"


def _publish(s, month: str, scores: dict[str, float], listed: dict[str, str], audits: list[tuple]) -> None:
    """One month of the tax run: scores (taxpayer -> combined score; ranked), the list (taxpayer -> reason), and
    every audit known by then (audit_id, taxpayer, result)."""
    sc = pd.DataFrame({"taxpayer_id": list(scores), "combined_score": list(scores.values())})
    sc = sc.sort_values("combined_score", ascending=False).reset_index(drop=True).assign(
        population_rank=lambda d: np.arange(1, len(d) + 1))
    store.write(s, store.SCORES, month, sc)
    store.write(s, store.LIST, month, pd.DataFrame({"taxpayer_id": list(listed),
                                                    "selection_reason": list(listed.values())}))
    store.write(s, store.OUTCOMES, month, pd.DataFrame(audits, columns=taxrisk.AUDIT_COLUMNS))


def _items(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"importer_id": [r[0] for r in rows],
                         "declaration_date": pd.to_datetime([r[1] for r in rows])})


def _features(s, items: pd.DataFrame, asof: date) -> pd.DataFrame:
    inp = taxrisk.load(s, asof)
    return taxrisk.tax_risk_features(items, inp["tax_scores"], inp["tax_lists"], inp["tax_audits"])


@pytest.fixture()
def lake(tmp_path):
    s = get_settings(lake_root=tmp_path / "data")
    # January's run, published 2026-02-02: A riskiest of 4 and listed by risk, B listed at random; one audit of A.
    _publish(s, "2026-01", {A: 0.9, B: 0.2, "X1": 0.5, "X2": 0.4}, {A: "risk", B: "random"},
             [("a1", A, "ASSESSED")])
    # February's run, published 2026-03-02: A drops, C not eligible; a second audit of A and one of B.
    _publish(s, "2026-02", {A: 0.1, B: 0.8, "X1": 0.5}, {B: "risk"},
             [("a1", A, "ASSESSED"), ("a2", A, "NO_FINDINGS"), ("b1", B, "ASSESSED")])
    return s


def test_published_date_is_the_run_date(lake):
    assert store.published_date(lake, "2026-01") == date(2026, 2, 2)
    assert store.published_date(lake, "2026-12") == date(2027, 1, 2)
    assert store.read_published(lake, store.LIST, date(2026, 2, 1)).empty
    got = store.read_published(lake, store.LIST, date(2026, 3, 2))
    assert sorted(got.month.unique()) == ["2026-01", "2026-02"]


def test_values_by_hand_and_strictly_before_the_day(lake):
    items = _items((A, "2026-02-02"), (A, "2026-02-03"), (B, "2026-02-03"), (C, "2026-02-03"),
                   (A, "2026-03-02"), (A, "2026-03-03"), (B, "2026-03-03"), (C, "2026-03-03"))
    x = _features(lake, items, date(2026, 3, 3))
    # On the run date itself nothing of that run is known.
    assert x.iloc[0].isna().all()
    # From the 3rd: January's run.
    assert x.tax_risk_score[1] == 0.9 and x.tax_risk_rank_share[1] == 0.25 and x.tax_audit_listed[1] == 1
    assert x.tax_audits_closed[1] == 1 and x.tax_audits_assessed[1] == 1
    # A random pick is not a risk signal; B's audit was not known yet.
    assert x.tax_risk_score[2] == 0.2 and x.tax_risk_rank_share[2] == 1.0 and x.tax_audit_listed[2] == 0
    assert x.tax_audits_closed[2] == 0
    # C was not scored: no score, but the list and the audits of a published run say "not listed, no audit".
    assert np.isnan(x.tax_risk_score[3]) and np.isnan(x.tax_risk_rank_share[3])
    assert x.tax_audit_listed[3] == 0 and x.tax_audits_closed[3] == 0
    # 2026-03-02 still sees January's run; from the 3rd, February's (3 scored, a1 counted once).
    assert x.iloc[4].equals(x.iloc[1])
    assert x.tax_risk_score[5] == 0.1 and x.tax_risk_rank_share[5] == 1.0 and x.tax_audit_listed[5] == 0
    assert x.tax_audits_closed[5] == 2 and x.tax_audits_assessed[5] == 1
    assert x.tax_risk_rank_share[6] == pytest.approx(1 / 3) and x.tax_audit_listed[6] == 1
    assert x.tax_audits_closed[6] == 1 and x.tax_audits_assessed[6] == 1


def test_a_list_published_after_the_declaration_never_changes_it(lake):
    items = _items((A, "2026-03-02"), (B, "2026-03-02"), (A, "2026-04-02"), (B, "2026-04-02"))
    before = _features(lake, items, date(2026, 4, 2))
    # March's run (published 2026-04-02, on the later declarations' own day) lists and audits everybody.
    _publish(lake, "2026-03", {A: 1.0, B: 0.99}, {A: "risk", B: "risk"},
             [("a1", A, "ASSESSED"), ("a2", A, "NO_FINDINGS"), ("b1", B, "ASSESSED"), ("a3", A, "ASSESSED"),
              ("b2", B, "ASSESSED")])
    after = _features(lake, items, date(2026, 12, 31))
    pd.testing.assert_frame_equal(before, after)
    # The day after its publication, a declaration sees it.
    later = _features(lake, _items((A, "2026-04-03")), date(2026, 4, 3))
    assert later.tax_risk_score[0] == 1.0 and later.tax_audits_closed[0] == 3 and later.tax_audits_assessed[0] == 2


def test_nothing_published_is_nan(tmp_path):
    s = get_settings(lake_root=tmp_path / "data")
    inp = taxrisk.load(s, date(2026, 6, 1))
    assert all(df.empty for df in inp.values())
    x = taxrisk.tax_risk_features(_items((A, "2026-06-01")), **{k.removeprefix("tax_"): v for k, v in inp.items()})
    assert x.isna().all().all() and list(x.columns) == list(taxrisk.NAMES)
    assert taxrisk.tax_risk_features(_items((A, "2026-06-01"))).isna().all().all()


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world(LONG_WORLD).landed_frames()


def test_build_features_reads_the_tax_run_point_in_time(world, tmp_path):
    """The whole feature matrix of a day: NaN without a tax run; with one, the importers' values; a run
    published after the day changes no column."""
    c = world["customs"]
    day = pd.Timestamp("2026-02-20")
    items = c[c.declaration_date == day].reset_index(drop=True)
    inp = {"customs_history": c[c.declaration_date <= day], "outcomes": world["enforcement"],
           "reference": world["reference_prices"], "tax": world["tax"], "fx": world["exchange_rates"]}
    plain = build_features(items, **inp)
    assert list(plain.columns) == FEATURES and plain[list(taxrisk.NAMES)].isna().all().all()
    s = get_settings(lake_root=tmp_path / "data")
    imp = sorted(c.importer_id.unique())
    scores = {t: (i + 1) / len(imp) for i, t in enumerate(imp)}
    _publish(s, "2026-01", scores, {imp[-1]: "risk"}, [("a1", imp[-1], "ASSESSED")])  # published 2026-02-02
    x = build_features(items, **inp, **taxrisk.load(s, day.date()))
    assert x.tax_risk_score.notna().all() and x.tax_audits_closed.notna().all()
    top = (items.importer_id == imp[-1]).to_numpy()
    assert (x.tax_audit_listed[top] == 1).all() and (x.tax_audit_listed[~top] == 0).all()
    same = [f for f in FEATURES if f not in taxrisk.NAMES]
    pd.testing.assert_frame_equal(x[same], plain[same])
    _publish(s, "2026-02", {t: 1 - v for t, v in scores.items()}, {imp[0]: "risk"}, [])  # published 2026-03-02
    pd.testing.assert_frame_equal(build_features(items, **inp, **taxrisk.load(s, date(2026, 3, 31))), x)
