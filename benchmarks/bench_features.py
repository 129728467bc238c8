"""Benchmark: point-in-time features at scale.

Bars (2-core development machine): features of a 50,000-item day against 10 million items of history in at
most 20 s; a full rebuild (features of every one of the 10 million items, as a training set would) in at
most 10 minutes.

The history is synthetic and generated with numpy/pyarrow directly (the world generator is far too slow
for 10 million items): persistent importers with skewed activity, brokers, suppliers, 5,000 HS10 codes,
60 origins, 12 offices, about 3 items a declaration, 5% of items inspected with results reported 1-10
days later, monthly tax returns, daily exchange rates, reference prices per HS10 and origin. Frames are
built through Arrow, as silver Parquet reads them (text columns are pandas' Arrow-backed ``str``).

What is timed:

* ``day``: ``build_features`` for the day's items with every input bounded by the day (as scoring reads
  silver), entity profiles rebuilt from outcomes (the full path);
* ``day_with_state``: the same with the entity profiles taken from the daily state (what ``score_day``
  does), plus the time to extend the previous day's state by one day of outcomes;
* ``rebuild``: features of every history item, in calendar-month chunks of items, each chunk against the
  whole history (memory: the 10M x 48 float64 result alone is 3.8 GB).

    .venv/bin/python -m benchmarks.bench_features [--history-items 10000000] [--day-items 50000]
        [--days 200] [--skip-rebuild] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from sunat_pipeline.features.build import build_features
from sunat_pipeline.features.catalog import FEATURES
from sunat_pipeline.features.history import advance, build_state

START = date(2025, 1, 1)


def _text(uniques: list[str] | np.ndarray, codes: np.ndarray) -> pa.Array:
    d = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), pa.array(list(uniques)))
    return d.cast(pa.large_string())


def _ids(prefix: str, n: int, width: int) -> list[str]:
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def synthetic(n_hist: int, n_day: int, days: int, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Inputs as silver holds them: ``days`` days of history (``n_hist`` items) and one more day of ``n_day``."""
    rng = np.random.default_rng(seed)
    per_day = np.full(days, n_hist // days)
    per_day[: n_hist - per_day.sum()] += 1
    per_day = np.append(per_day, n_day)
    n = int(per_day.sum())
    day = np.repeat(np.arange(days + 1), per_day)

    n_imp, n_brk, n_sup, n_hs, n_org, n_off = 150_000, 2_000, 60_000, 5_000, 60, 12
    # Declarations of ~3 items: one importer, broker, supplier, office and origin per declaration.
    sizes = 1 + rng.poisson(2.0, n // 2)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= sizes.sum() - n
    n_decl = len(sizes)
    rep = np.repeat(np.arange(n_decl), sizes)
    item_no = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
    act = rng.pareto(1.2, n_imp) + 0.05
    imp_d = rng.choice(n_imp, size=n_decl, p=act / act.sum())
    brk_of_imp = rng.integers(0, n_brk, n_imp)
    sup_of_imp = rng.integers(0, n_sup, (n_imp, 3))
    org_of_sup = rng.choice(n_org, size=n_sup, p=(w := rng.pareto(1.0, n_org) + 0.1) / w.sum())
    sup_d = sup_of_imp[imp_d, rng.integers(0, 3, n_decl)]
    off_d = rng.choice(n_off, size=n_decl, p=(w := rng.pareto(1.0, n_off) + 0.1) / w.sum())
    imp, sup, off = imp_d[rep], sup_d[rep], off_d[rep]
    hs_pop = rng.pareto(1.1, n_hs) + 0.02
    hs = rng.choice(n_hs, size=n, p=hs_pop / hs_pop.sum())
    org = org_of_sup[sup]
    org = np.where(rng.random(n) < 0.05, rng.integers(0, n_org, n), org)  # some origin != supplier country

    hs_codes = sorted({f"{rng.integers(1, 98):02d}{rng.integers(0, 10**8):08d}" for _ in range(n_hs * 2)})[:n_hs]
    hs_codes = [c if i % 3 else hs_codes[i - 1][:6] + c[6:] for i, c in enumerate(hs_codes)]  # shared HS6
    origins = [chr(65 + i // 26) + chr(65 + i % 26) for i in range(n_org)]
    offices = [f"{100 + 7 * i:03d}" for i in range(n_off)]
    base_price = rng.lognormal(2.5, 1.5, n_hs)
    org_mult = rng.lognormal(0, 0.2, n_org)
    kg_unit = rng.lognormal(0, 1.5, n_hs)
    fraud = rng.random(n) < 0.08
    uv = base_price[hs] * org_mult[org] * rng.lognormal(0, 0.25, n) * np.where(fraud, rng.uniform(0.3, 0.7, n), 1)
    qty = np.maximum(1, np.round(rng.lognormal(4, 1.2, n)))
    kg = np.round(qty * kg_unit[hs] * rng.lognormal(0, 0.05, n), 3) + 0.001
    fob = np.round(kg * uv, 2)
    freight = np.round(fob * rng.uniform(0.03, 0.1, n), 2)
    ins = np.round(fob * 0.01, 2)
    duty = rng.choice([0.0, 0.04, 0.06, 0.11], size=n_hs)[hs]
    dates = (np.datetime64(START) + day.astype("timedelta64[D]")).astype("datetime64[ms]")
    decl_ids = _text(_ids("D", n_decl, 9), rep)
    imp_ids = _ids("20", n_imp, 9)
    customs = pa.table({
        "declaration_id": decl_ids, "item_no": pa.array(item_no.astype(np.int64)),
        "declaration_date": pa.array(dates), "customs_office": _text(offices, off),
        "importer_id": _text(imp_ids, imp), "declarant_id": _text(_ids("B", n_brk, 4), brk_of_imp[imp]),
        "supplier_id": _text(_ids("S", n_sup, 6), sup), "supplier_country": _text(origins, org_of_sup[sup]),
        "transport_mode": _text(["SEA", "AIR", "ROAD"], off % 3), "hs_code": _text(hs_codes, hs),
        "origin_country": _text(origins, org), "quantity": qty, "net_weight_kg": kg,
        "invoice_currency": _text(["USD"], np.zeros(n, np.int32)), "fob_invoice": fob, "fob_usd": fob,
        "freight_usd": freight, "insurance_usd": ins, "cif_usd": np.round(fob + freight + ins, 2),
        "duty_rate": duty, "permit_no": _text(["", "PM-1"], (rng.random(n) < 0.02).astype(np.int32)),
    }).to_pandas()

    # Outcomes: 5% of items inspected on their day, reported 1-10 days later.
    insp = np.flatnonzero(rng.random(n) < 0.05)
    found = fraud[insp] & (rng.random(len(insp)) < 0.8)
    rep_day = day[insp] + rng.integers(1, 11, len(insp))
    outcomes = pd.DataFrame({
        "record_id": pd.array(_ids("E", len(insp), 9), dtype="str"),
        "declaration_id": customs.declaration_id.iloc[insp].to_numpy(),
        "item_no": item_no[insp], "inspection_date": dates[insp],
        "channel": pd.array(np.where(rng.random(len(insp)) < 0.5, "RED", "YELLOW"), dtype="str"),
        "result": pd.array(np.where(found, "FRAUD", "CLEAN"), dtype="str"),
        "offence_code": pd.array(np.where(found, "undervaluation", ""), dtype="str"),
        "revenue_recovered_usd": np.where(found, fob[insp] * 0.3, 0.0), "penalty_usd": 0.0,
        "reported_date": (np.datetime64(START) + rep_day.astype("timedelta64[D]")).astype("datetime64[ms]"),
        "officer_id": pd.array(np.full(len(insp), "OF001"), dtype="str"),
    })
    # Tax: one return per importer and month with imports, filed on the 12th of the next month.
    month = dates.astype("datetime64[M]")
    im = pd.DataFrame({"imp": imp, "m": month.astype(np.int64), "cif": fob * 1.06 * 3.75}).groupby(
        ["imp", "m"], sort=True).cif.sum().reset_index()
    ev = rng.random(len(im)) < 0.1
    purchases = im.cif * rng.uniform(1.2, 2.0, len(im)) * np.where(ev, 0.6, 1.0)
    m64 = im.m.to_numpy().astype("datetime64[M]")
    tax = pd.DataFrame({
        "taxpayer_id": pd.array(np.asarray(imp_ids, dtype=object)[im.imp.to_numpy()], dtype="str"),
        "period": pd.array(np.datetime_as_string(m64, unit="M"), dtype="str"),
        "filing_date": ((m64 + 1).astype("datetime64[D]") + 11).astype("datetime64[ms]"),
        "sales_pen": purchases * 1.3, "purchases_pen": purchases, "igv_debit_pen": purchases * 1.3 * 0.16,
        "igv_credit_pen": purchases * 0.16,
    })
    fx = pd.DataFrame({"rate_date": (np.datetime64(START) + np.arange(days + 1).astype("timedelta64[D]")).astype(
        "datetime64[ms]"), "currency": pd.array(["USD"] * (days + 1), dtype="str"),
        "pen_per_unit": 3.75 + np.cumsum(rng.normal(0, 0.005, days + 1))})
    hi, oi = np.meshgrid(np.arange(n_hs), np.arange(n_org), indexing="ij")
    reference = pd.DataFrame({
        "hs_code": pd.array(np.asarray(hs_codes, dtype=object)[hi.ravel()], dtype="str"),
        "origin_country": pd.array(np.asarray(origins, dtype=object)[oi.ravel()], dtype="str"),
        "ref_unit_price_usd_kg": (base_price[hi] * org_mult[oi]).ravel()})
    return {"customs": customs, "enforcement": outcomes, "tax": tax, "exchange_rates": fx,
            "reference_prices": reference, "day": START + timedelta(days=days)}


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bounded(w: dict, d: date) -> dict:
    t = pd.Timestamp(d)
    return {"customs_history": w["customs"][w["customs"].declaration_date <= t],
            "outcomes": w["enforcement"][w["enforcement"].reported_date <= t], "reference": w["reference_prices"],
            "tax": w["tax"][w["tax"].filing_date <= t], "fx": w["exchange_rates"][w["exchange_rates"].rate_date <= t]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history-items", type=int, default=10_000_000)
    p.add_argument("--day-items", type=int, default=50_000)
    p.add_argument("--days", type=int, default=200)
    p.add_argument("--skip-rebuild", action="store_true")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args(argv)
    res: dict = {"history_items": a.history_items, "day_items": a.day_items, "days": a.days}

    t = time.perf_counter()
    w = synthetic(a.history_items, a.day_items, a.days)
    d = w["day"]
    res["generate_s"] = round(time.perf_counter() - t, 1)
    res["outcomes"] = len(w["enforcement"])
    print(f"generated {len(w['customs']):,} items ({len(w['enforcement']):,} outcomes, {len(w['tax']):,} tax "
          f"returns) in {res['generate_s']} s; peak RSS {_rss_gb():.1f} GB", flush=True)

    inp = bounded(w, d)
    items = w["customs"][w["customs"].declaration_date == pd.Timestamp(d)].reset_index(drop=True)
    t, c = time.perf_counter(), time.process_time()
    X = build_features(items, **inp)
    res["day_s"] = round(time.perf_counter() - t, 2)
    res["day_cpu_s"] = round(time.process_time() - c, 2)
    assert list(X.columns) == FEATURES and len(X) == a.day_items
    res["day_nan_share"] = {k: round(float(v), 3) for k, v in X.isna().mean().items() if v > 0}
    print(f"day ({len(items):,} items, {len(inp['customs_history']):,} history): {res['day_s']} s wall, "
          f"{res['day_cpu_s']} s CPU (profiles rebuilt from outcomes)", flush=True)

    prev = d - timedelta(days=1)
    t = time.perf_counter()
    state_prev = build_state(inp["outcomes"], inp["customs_history"], prev)
    res["profile_state_full_build_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    state = advance(state_prev, inp["outcomes"], inp["customs_history"], d)
    res["profile_state_extend_one_day_s"] = round(time.perf_counter() - t, 2)
    t, c = time.perf_counter(), time.process_time()
    X2 = build_features(items, **inp, profile_state=state)
    res["day_with_state_s"] = round(time.perf_counter() - t, 2)
    res["day_with_state_cpu_s"] = round(time.process_time() - c, 2)
    pd.testing.assert_frame_equal(X, X2)
    print(f"day with the profile state: {res['day_with_state_s']} s wall, {res['day_with_state_cpu_s']} s CPU "
          f"(+ {res['profile_state_extend_one_day_s']} s "
          f"to extend the state by one day; a full state build takes {res['profile_state_full_build_s']} s); "
          "same values", flush=True)
    del X, X2, state, state_prev
    gc.collect()

    if not a.skip_rebuild:
        hist = w["customs"][w["customs"].declaration_date < pd.Timestamp(d)]
        everything = {"customs_history": w["customs"], "outcomes": w["enforcement"],
                      "reference": w["reference_prices"], "tax": w["tax"], "fx": w["exchange_rates"]}
        month = hist.declaration_date.dt.to_period("M")
        t, c = time.perf_counter(), time.process_time()
        n_done, chunks = 0, []
        for m, idx in hist.groupby(month, sort=True).indices.items():
            tc, cc = time.perf_counter(), time.process_time()
            Xc = build_features(hist.iloc[idx], **everything)
            n_done += len(Xc)
            chunks.append({"month": str(m), "items": len(idx), "s": round(time.perf_counter() - tc, 1),
                           "cpu_s": round(time.process_time() - cc, 1)})
            print(f"  rebuild {m}: {len(idx):,} items in {chunks[-1]['s']} s wall, {chunks[-1]['cpu_s']} s CPU",
                  flush=True)
            del Xc
        res["rebuild_s"] = round(time.perf_counter() - t, 1)
        res["rebuild_cpu_s"] = round(time.process_time() - c, 1)
        res["rebuild_items"] = n_done
        res["rebuild_chunks"] = chunks
        print(f"rebuild: {n_done:,} items in {res['rebuild_s']} s wall, {res['rebuild_cpu_s']} s CPU", flush=True)
    res["peak_rss_gb"] = round(_rss_gb(), 1)
    res["load_average"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps({k: v for k, v in res.items() if k != "rebuild_chunks"}, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
