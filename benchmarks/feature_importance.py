"""Which features carry the model on the synthetic world.

Generates the default world in a temporary lake, ingests every source up to the first live date (as the
daily DAG would have), builds the training set as of that date (``train.training_set``: every item whose
outcome was reported by then, features point in time), fits the ``RiskModel`` with the configured
parameters on all but the last ``holdout_days`` and prints the top features by importance (XGBoost gain,
mean over the bag), importance per risk area and source (from the catalog), and the holdout ROC AUC with
and without the features this issue added.

    .venv/bin/python -m benchmarks.feature_importance [--top 15] [--seed 42] [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.features.catalog import catalog_frame
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.modeling import train
from sunat_pipeline.modeling.model import RiskModel
from sunat_pipeline.settings import get_settings
from sunat_sim.world import WorldConfig, generate

# Features added by issue #4 (the rest existed before): the ablation drops these.
NEW = ["insurance_share", "unit_value_robust_z", "unit_value_qty_robust_z", "unit_value_past_log_ratio",
       "unit_value_ref_level", "unit_value_ref_n", "office_importer_n_insp", "hs6_origin_n_insp",
       "office_importer_fraud_rate", "hs6_origin_fraud_rate", "importer_items_30d", "importer_days_since_last",
       "tax_igv_credit_over_import_igv", "tax_sales_over_purchases", "value_anomaly_score"]


def run(root: Path, top: int, seed: int) -> dict:
    settings = get_settings(lake_root=root / "data", mlflow_tracking_uri=f"sqlite:///{root}/mlflow.db")
    cfg = WorldConfig(seed=seed)
    t = time.perf_counter()
    generate(cfg, settings.lake)
    asof = cfg.first_live_date
    for source in SOURCES:
        ingest.ingest_source(settings, source, upto=asof)
    t_world = time.perf_counter() - t
    t = time.perf_counter()
    X, meta = train.training_set(settings, asof)
    t_features = time.perf_counter() - t
    hold = (pd.to_datetime(meta.declaration_date) >= pd.Timestamp(asof - timedelta(
        days=settings.training.holdout_days))).to_numpy()
    tr = settings.training

    def fit(cols: list[str]) -> tuple[RiskModel, float]:
        m = RiskModel(n_estimators=tr.n_estimators, max_depth=tr.max_depth, learning_rate=tr.learning_rate,
                      bag_size=tr.bag_size, seed=settings.seed)
        m.fit(X.loc[~hold, cols], meta.y[~hold], meta.revenue[~hold])
        from sklearn.metrics import roc_auc_score

        p = m.predict(X.loc[hold, cols]).fraud_probability
        return m, float(roc_auc_score(meta.y[hold], p))

    model, auc = fit(list(X.columns))
    _, auc_without_new = fit([c for c in X.columns if c not in NEW])
    imp = model.feature_importance().rename("importance")
    cat = catalog_frame().set_index("name")
    table = pd.concat([imp, cat[["source", "risk_area"]]], axis=1, join="inner").sort_values(
        "importance", ascending=False)
    table["new"] = np.where(table.index.isin(NEW), "new", "")
    print(f"world {cfg.history_days} history days x {cfg.declarations_per_day} declarations/day (seed {seed}): "
          f"generated and ingested in {t_world:.0f} s; training set as of {asof}: {len(X):,} labelled items, "
          f"{int(meta.y.sum()):,} frauds ({100 * meta.y.mean():.1f}%), features in {t_features:.1f} s")
    print(f"holdout (last {tr.holdout_days} days, {int(hold.sum()):,} items): ROC AUC {auc:.3f} with all "
          f"{X.shape[1]} features, {auc_without_new:.3f} without the {len(NEW)} added by issue #4\n")
    print(f"top {top} features by importance (XGBoost gain, share of the total):")
    print(table.head(top).to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nimportance by risk area:")
    print(table.groupby("risk_area").importance.sum().sort_values(ascending=False).to_string(
        float_format=lambda v: f"{v:.3f}"))
    print("\nimportance by source:")
    print(table.groupby("source").importance.sum().sort_values(ascending=False).to_string(
        float_format=lambda v: f"{v:.3f}"))
    return {"auc": auc, "auc_without_new": auc_without_new, "importance": imp}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--keep", type=Path, help="build the lake here and keep it (default: a temporary folder)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
        run(a.keep, a.top, a.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="sunat-importance-") as tmp:
            run(Path(tmp), a.top, a.seed)


if __name__ == "__main__":
    main()
