"""Benchmark: retraining the risk model at scale.

Bar (2-core development machine): ``RiskModel.fit`` on 2 million labelled items x 50 features, with the
pipeline's default training settings (a bag of 4 XGBoost classifiers of 200 trees, depth 6, plus the revenue
regressor on the frauds), in at most 5 minutes of wall time.

The data are synthetic (numpy): 50 features shaped like the pipeline's (log values, ratios, rates in [0, 1],
counts, small integer codes, some missing values); fraud follows a logistic function of a dozen of them plus
interactions (about 8% positives, like an inspected set); revenue is log-normal for the frauds.

What is timed: ``fit`` (the whole bag and the regressor), then ``predict`` on 50,000 rows (one day of items).
No assertion: it prints (and optionally writes) the figures with the machine's load, so a busy machine's
figure can be read for what it is.

    .venv/bin/python -m benchmarks.bench_train [--rows 2000000] [--features 50] [--n-jobs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import pandas as pd

from sunat_pipeline.modeling.metrics import targeting_report
from sunat_pipeline.modeling.model import RiskModel  # sets OMP_WAIT_POLICY=PASSIVE before XGBoost loads (see model.py)
from sunat_pipeline.settings import get_settings


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {}
    for j in range(features):
        kind = j % 5
        if kind == 0:
            v = rng.normal(0, 1, rows)
        elif kind == 1:
            v = rng.beta(2, 8, rows)  # rates
        elif kind == 2:
            v = np.log1p(rng.gamma(2, 50, rows))  # log values
        elif kind == 3:
            v = rng.poisson(3, rows).astype(float)  # counts
        else:
            v = rng.integers(0, 40, rows).astype(float)  # codes
        if j % 7 == 6:
            v[rng.random(rows) < 0.1] = np.nan  # missing values
        cols[f"f{j:02d}"] = v.astype("float32")
    X = pd.DataFrame(cols)
    z = np.zeros(rows)
    w = np.random.default_rng(12345).normal(0, 1, min(12, features))  # the same signal in every sample
    centre = {0: (0, 1), 1: (0.2, 0.12), 2: (4.3, 0.8), 3: (3, 1.7), 4: (19.5, 11.5)}  # mean, sd per kind
    for j, wj in enumerate(w):
        m, sd = centre[j % 5]
        z += wj * (np.nan_to_num(X.iloc[:, j].to_numpy(dtype=float), nan=m) - m) / sd
    z += 1.5 * (X.f01.to_numpy() > 0.4) * (X.f00.to_numpy() < -0.5) + 0.8 * (X.f04.to_numpy() % 7 == 3)
    z = z / np.sqrt(len(w)) * 1.5
    b = -2.7
    y = (rng.random(rows) < 1 / (1 + np.exp(-(z + b)))).astype(np.int8)
    revenue = np.where(y == 1, rng.lognormal(7, 1, rows), 0.0)
    return X, y, revenue


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    t = get_settings().training
    t0 = time.time()
    X, y, revenue = synthetic(a.rows, a.features)
    Xh, yh, revh = synthetic(50_000, a.features, seed=1)
    gen_s = time.time() - t0
    load_before = os.getloadavg()
    model = RiskModel(n_estimators=t.n_estimators, max_depth=t.max_depth, learning_rate=t.learning_rate,
                      bag_size=t.bag_size, seed=42, device=t.device, n_jobs=a.n_jobs)
    t1, c1 = time.time(), time.process_time()
    model.fit(X, y, revenue)
    fit_s, fit_cpu = time.time() - t1, time.process_time() - c1
    t2 = time.time()
    pred = model.predict(Xh)
    predict_s = time.time() - t2
    rep = targeting_report(pred.expected_revenue_usd.to_numpy(), yh, revh, rates=(0.05, 0.10))
    out = {
        "rows": a.rows, "features": a.features, "fraud_rate": round(float(y.mean()), 4),
        "params": model.get_params(), "fit_seconds": round(fit_s, 1),
        "fit_cpu_seconds": round(fit_cpu, 1), "predict_50k_seconds": round(predict_s, 2),
        "generate_seconds": round(gen_s, 1), "bar_seconds": 300, "within_bar": fit_s <= 300,
        "holdout_precision_at_5": rep["precision_at_5"], "holdout_revenue_at_10": rep["revenue_at_10"],
        "cpu_count": os.cpu_count(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
