"""Does a world give fraud away? An independent check on a demo lake (evaluation only: reads the ground truth).

    python -m benchmarks.giveaway_check LAKE [--json OUT]

Written apart from the simulator's own world report (it shares no code with ``sunat_sim``): it reads what the
pipeline sees (the landed customs and reference extracts, with DuckDB) and the truth, then scores, at
declaration level, every observable numeric column and a few simple ratios by population ROC-AUC (either
direction), and every single value of every categorical column and every one-sided threshold of the numeric
ones by precision among those covering at least 2% of the frauds. The bars of issue 12: best ROC-AUC <= 0.75,
no flag with precision >= 0.8 at >= 2% coverage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

CATEGORICAL = ["customs_office", "importer_id", "declarant_id", "supplier_id", "supplier_country", "transport_mode",
               "hs_code", "origin_country", "invoice_currency", "permit_prefix", "hs4", "hs2"]


def _items(lake: Path) -> pd.DataFrame:
    con = duckdb.connect()
    items = con.sql(f"select * from read_csv('{lake}/landing/customs/*.csv', all_varchar=true, "
                    "union_by_name=true)").df()
    for c in ("quantity", "net_weight_kg", "fob_usd", "freight_usd", "insurance_usd", "cif_usd", "duty_rate"):
        items[c] = pd.to_numeric(items[c], errors="coerce")
    items["item_no"] = pd.to_numeric(items.item_no).astype(int)
    items = items.drop_duplicates(["declaration_id", "item_no"], keep="last")
    refs = con.sql(f"select *, regexp_extract(filename, '__([0-9-]{{10}})', 1) as issued from read_csv("
                   f"'{lake}/landing/reference_prices/*.csv', all_varchar=true, union_by_name=true, "
                   "filename=true)").df()
    refs["ref"] = pd.to_numeric(refs.ref_unit_price_usd_kg, errors="coerce")
    # The price in force: latest issue on or before the declaration day (as an administration would use it).
    items = items.sort_values("declaration_date")
    refs = refs.sort_values("issued")
    items["_d"] = pd.to_datetime(items.declaration_date)
    refs["_d"] = pd.to_datetime(refs.issued)
    items = pd.merge_asof(items, refs[["_d", "hs_code", "origin_country", "ref"]], on="_d",
                          by=["hs_code", "origin_country"], direction="backward")
    uv = items.fob_usd / items.net_weight_kg.clip(lower=1e-3)
    items["unit_value_kg"] = uv
    items["unit_value_qty"] = items.fob_usd / items.quantity.clip(lower=1)
    items["kg_per_unit"] = items.net_weight_kg / items.quantity.clip(lower=1)
    items["value_over_reference"] = uv / items.ref
    items["cif_over_fob"] = items.cif_usd / items.fob_usd.clip(lower=1e-6)
    items["freight_share"] = items.freight_usd / items.fob_usd.clip(lower=1e-6)
    items["origin_differs_supplier"] = (items.origin_country != items.supplier_country).astype(float)
    items["has_permit"] = items.permit_no.notna().astype(float)
    items["permit_prefix"] = items.permit_no.str[:2]
    items["hs4"], items["hs2"] = items.hs_code.str[:4], items.hs_code.str[:2]
    items["uv_vs_hs_median"] = uv / uv.groupby(items.hs_code).transform("median")
    return items


NUMERIC = ["quantity", "net_weight_kg", "fob_usd", "freight_usd", "insurance_usd", "cif_usd", "duty_rate",
           "unit_value_kg", "unit_value_qty", "kg_per_unit", "value_over_reference", "cif_over_fob", "freight_share",
           "origin_differs_supplier", "has_permit", "uv_vs_hs_median"]


def check(lake: Path) -> dict:
    items = _items(lake)
    truth = pd.read_parquet(lake / "world_truth" / "items.parquet", columns=["declaration_id", "item_no", "is_fraud"])
    truth["item_no"] = truth.item_no.astype(int)
    items = items.merge(truth, on=["declaration_id", "item_no"], how="inner")
    y_decl = items.groupby("declaration_id").is_fraud.max()
    n_fraud = int(y_decl.sum())
    aucs, flags = {}, []
    for c in NUMERIC:
        x = items.groupby("declaration_id")[c].agg(["min", "max"])
        for agg in ("min", "max"):
            v = x[agg].reindex(y_decl.index)
            ok = v.notna()
            if ok.sum() < 100 or v[ok].nunique() < 2:
                continue
            a = roc_auc_score(y_decl[ok], v[ok])
            aucs[f"{c} ({agg} over items)"] = round(float(max(a, 1 - a)), 4)
            # One-sided thresholds at every 0.5% quantile: the best precision covering >= 2% of frauds.
            for q in np.linspace(0.005, 0.995, 199):
                t = v[ok].quantile(q)
                for side, m in (("<=", v <= t), (">=", v >= t)):
                    hit = int((m & (y_decl == 1)).sum())
                    if hit >= 0.02 * n_fraud:
                        flags.append((hit / max(int(m.sum()), 1), f"{c} {side} {t:.4g}", hit / n_fraud))
    for c in CATEGORICAL:
        d = items.groupby("declaration_id")[c].agg(lambda s: set(s.dropna()))
        exploded = d.explode().dropna()
        yy = y_decl.reindex(exploded.index)
        g = pd.DataFrame({"v": exploded.to_numpy(), "y": yy.to_numpy()}).groupby("v").y.agg(["sum", "count"])
        g = g[g["sum"] >= 0.02 * n_fraud]
        for v, r in g.iterrows():
            flags.append((r["sum"] / r["count"], f"{c} == {v}", r["sum"] / n_fraud))
    flags.sort(key=lambda f: -f[0])
    best = max(aucs.items(), key=lambda kv: kv[1])
    return {"declarations": int(len(y_decl)), "fraud_rate_declarations": round(float(y_decl.mean()), 4),
            "best_single_feature_auc": {"feature": best[0], "roc_auc": best[1]},
            "top_auc": dict(sorted(aucs.items(), key=lambda kv: -kv[1])[:8]),
            "best_flags": [{"flag": f, "precision": round(float(p), 3), "coverage": round(float(cv), 3)}
                           for p, f, cv in flags[:8]],
            "bars": {"best_auc_at_most_0.75": bool(best[1] <= 0.75),
                     "no_flag_precision_0.8_at_2pct": bool(not flags or flags[0][0] < 0.8)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lake", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    out = check(a.lake)
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
