"""Monitoring: drift of the score and of key features against the model's training data (PSI).

The reference of a model version is the population of declaration items lodged in the
``monitoring.reference_days`` days before its training date (the data it was trained in the time of),
with the model's own scores on it; it is computed once per model version and kept under
``gold/monitoring/reference/model_version=N/``. Each day, the items lodged in the last
``monitoring.window_days`` days (features as of each item's day, the score from the scored output) are
compared with it by the population stability index

    PSI = sum over bins (q_b - p_b) * ln(q_b / p_b)

with ``p`` the reference shares and ``q`` the day's shares; numeric features are cut at the reference
deciles (missing values get a bin of their own), categorical ones by category; every bin gets half a count
so empty bins stay finite. Rule of thumb: below 0.1 stable, 0.1-0.25 moderate, above 0.25 major.

Past ``monitoring.psi_threshold`` the run logs a WARNING and writes a retraining request
(``gold/monitoring/retrain_requests/request_D.json``), which the next day's ``train_if_due`` honours
(``retrain.retrain_request``), at most once per ``monitoring.cooldown_days``. Everything written is a function of
the lake, so re-running a day rewrites the same bytes.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.lake.store import (
    partition,
    read_partitioned,
    write_parquet_atomic,
    write_partition,
)
from sunat_pipeline.reporting.retrain import request_retrain
from sunat_pipeline.selection.output import RULES_ONLY, manifests, read_scored
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
SCORE = "fraud_probability"
MODEL_SCORE = "model_fraud_probability"  # the champion's own score, before the rules are stacked on it


def _dir(settings: Settings) -> Path:
    return settings.gold / "monitoring"


# --- PSI -------------------------------------------------------------------------------------------------

def _shares(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=float) + 0.5
    return c / c.sum()


def _psi_from_counts(ref: np.ndarray, cur: np.ndarray) -> float:
    p, q = _shares(ref), _shares(cur)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_numeric(reference, current, bins: int = 10) -> float:
    """PSI of a numeric variable; bins at the reference quantiles, plus one bin for missing values. A variable
    with at most ``bins`` distinct values in the reference (a flag, a count) is binned by value, so a rare
    flag becoming common is seen (deciles of a 95%-zero flag would all be 0)."""
    r = np.asarray(reference, dtype=float)
    c = np.asarray(current, dtype=float)
    rf, cf = r[np.isfinite(r)], c[np.isfinite(c)]
    values = np.unique(rf)
    if 0 < len(values) <= bins:  # by value: edges between consecutive values, new values fall in the ends
        edges = (values[:-1] + values[1:]) / 2
    else:
        edges = np.unique(np.quantile(rf, np.linspace(0, 1, bins + 1)[1:-1])) if len(rf) else np.array([])
    k = len(edges) + 1
    rc = np.bincount(np.searchsorted(edges, rf, side="right"), minlength=k)
    cc = np.bincount(np.searchsorted(edges, cf, side="right"), minlength=k)
    rc = np.append(rc, len(r) - len(rf))
    cc = np.append(cc, len(c) - len(cf))
    if rc[-1] == 0 and cc[-1] == 0:  # no missing values on either side: no missing bin
        rc, cc = rc[:-1], cc[:-1]
    return _psi_from_counts(rc, cc)


def psi_categorical(reference, current) -> float:
    """PSI of a categorical variable over the union of the categories seen."""
    r = pd.Series(reference).astype("str").fillna("<missing>")
    c = pd.Series(current).astype("str").fillna("<missing>")
    cats = sorted(set(r) | set(c))
    return _psi_from_counts(r.value_counts().reindex(cats, fill_value=0).to_numpy(),
                            c.value_counts().reindex(cats, fill_value=0).to_numpy())


def status_of(psi: float, settings: Settings) -> str:
    m = settings.monitoring
    if not np.isfinite(psi):
        return "n/a"
    return "major" if psi > m.psi_threshold else "moderate" if psi > m.psi_notice else "stable"


def drift_table(reference: pd.DataFrame, current: pd.DataFrame, settings: Settings,
                version: str | None = None) -> pd.DataFrame:
    """One row per monitored variable (the score first): PSI, its status and the sample sizes. ``version``:
    the model version of the reference (the score is compared on the items that version scored)."""
    m = settings.monitoring
    rows = []
    variables = [(SCORE, "score")] + [(f, "numeric") for f in m.features] + [(f, "categorical") for f in
                                                                               m.categorical]
    for var, kind in variables:
        if var not in reference.columns or var not in current.columns:
            continue
        ref, cur = reference[var], current[var]
        if var == SCORE:  # the score of the reference's model only, on the items it scored
            ref = ref.dropna()
            cur = cur[current.model_version == version] if version and "model_version" in current else cur.dropna()
        if len(cur) < m.min_rows or len(ref) < m.min_rows:
            value = np.nan
        elif kind == "categorical":
            value = psi_categorical(ref, cur)
        else:
            value = psi_numeric(ref, cur, m.bins)
        rows.append({"variable": var, "kind": kind, "psi": round(value, 6) if np.isfinite(value) else np.nan,
                     "status": status_of(value, settings), "n_reference": len(ref), "n_current": len(cur),
                     "mean_reference": _mean(ref, kind), "mean_current": _mean(cur, kind)})
    return pd.DataFrame(rows, columns=["variable", "kind", "psi", "status", "n_reference", "n_current",
                                       "mean_reference", "mean_current"])


def _mean(s: pd.Series, kind: str) -> float:
    if kind == "categorical":
        return np.nan
    v = pd.to_numeric(s, errors="coerce").astype(float)
    return round(float(v.mean()), 6) if v.notna().any() else np.nan


# --- reference and current data --------------------------------------------------------------------------

def _with_categories(items: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    items = items.reset_index(drop=True)
    out = X.reset_index(drop=True).copy()
    out["origin_country"] = items.origin_country.astype("str").to_numpy()
    out["hs_chapter"] = items.hs_code.astype("str").str[:2].to_numpy()
    out["customs_office"] = items.customs_office.astype("str").to_numpy()
    out.insert(0, "item_no", items.item_no.astype("int64").to_numpy())
    out.insert(0, "declaration_id", items.declaration_id.astype("str").to_numpy())
    return out


def _features_of(settings: Settings, items: pd.DataFrame, asof: date) -> pd.DataFrame:
    """Features of ``items`` as of each item's day, from what silver holds up to ``asof`` (as scoring does,
    ``train.load_inputs``)."""
    from sunat_pipeline.features.build import build_features
    from sunat_pipeline.modeling.train import load_inputs

    return _with_categories(items, build_features(items, **load_inputs(settings, asof), taxes=settings.tax))


def _model_training_date(settings: Settings, model_version: str) -> date | None:
    try:
        from sunat_pipeline.modeling import registry

        mv = registry.client(settings).get_model_version(settings.registered_model, str(model_version))
        return date.fromisoformat(mv.tags["training_date"])
    except Exception as e:  # no such version in this registry (or no registry): the caller falls back
        log.warning("model version %s: training date not found in MLflow (%s)", model_version, e)
        return None


def _first_scored_day(settings: Settings, model_version: str) -> date | None:
    days = [date.fromisoformat(r["declaration_date"]) for r in manifests(settings)
            if str(r.get("model_version")) == str(model_version)]
    return min(days) if days else None


def reference_frame(settings: Settings, model_version: str, model=None,
                    training_date: date | None = None) -> pd.DataFrame | None:
    """The reference of a model version: features and score of the items lodged in the window before its
    training date (``training_date``, else the version's MLflow tag, else the first day it scored). Cached
    once computed with a score (``model``, else the registered version); ``None`` when there is nothing to
    compare with."""
    path = partition(_dir(settings) / "reference", "model_version", str(model_version)) / "part-0.parquet"
    if path.exists():
        return pd.read_parquet(path)
    trained = training_date or _model_training_date(settings, model_version)
    end = trained or _first_scored_day(settings, model_version)
    if end is None:
        return None
    start = end - timedelta(days=settings.monitoring.reference_days)
    items = ingest.silver(settings, "customs", upto=end - timedelta(days=1), since=start)
    if items.empty:
        return None
    items = items.sort_values(["declaration_date", "declaration_id", "item_no"], kind="stable").reset_index(
        drop=True)
    if len(items) > settings.monitoring.reference_max_rows:
        rng = np.random.default_rng(settings.seed)
        keep = np.sort(rng.choice(len(items), settings.monitoring.reference_max_rows, replace=False))
        items = items.iloc[keep].reset_index(drop=True)
    # Features of each item as of its own day (build_features' as-of joins), with inputs known by the end.
    ref = _features_of(settings, items, end)
    if model is None and trained is not None:
        try:
            from sunat_pipeline.modeling import registry

            model = registry.load_version(settings, str(model_version))
        except Exception as e:
            log.warning("model version %s could not be loaded for the score reference: %s", model_version, e)
    if model is None:
        log.warning("drift reference for model v%s without scores (features only), window %s..%s; not cached",
                    model_version, start, end)
        return ref
    from sunat_pipeline.features.catalog import FEATURES

    ref[SCORE] = model.predict(ref[FEATURES]).fraud_probability.to_numpy(dtype=float)
    write_parquet_atomic(ref, path)
    log.info("drift reference for model v%s: %d items lodged %s..%s (training date %s) -> %s", model_version,
             len(ref), start, end - timedelta(days=1), trained, path)
    return ref


def current_frame(settings: Settings, day: date) -> tuple[pd.DataFrame, str | None]:
    """The items lodged in the ``monitoring.window_days`` days up to ``day``: features as of each item's day
    and the model's own score from the scored output (with the model version that gave it); and day ``day``'s model
    version. A window of days, not one day: a single day's items cluster on a few importers and brokers,
    and small days would make PSI noisy."""
    since = day - timedelta(days=settings.monitoring.window_days - 1)
    items = ingest.silver(settings, "customs", upto=day, since=since)
    if items.empty:
        return pd.DataFrame(), None
    items = items.sort_values(["declaration_date", "declaration_id", "item_no"], kind="stable").reset_index(
        drop=True)
    cur = _features_of(settings, items, day)
    cols = ["declaration_id", "item_no", SCORE, "model_version", "declaration_date"]
    try:
        sc = read_scored(settings, upto=day, since=since, columns=[*cols, MODEL_SCORE])
    except ValueError:  # no day of the window has the column (outputs before schema 5)
        sc = read_scored(settings, upto=day, since=since, columns=cols)
    if MODEL_SCORE in sc:
        # The reference holds the model's own scores: compare them with the model's own, not with the rules
        # stacked on them (which moved every day's PSI past 8 and requested a retraining every cooldown).
        sc[SCORE] = sc.pop(MODEL_SCORE).fillna(sc[SCORE])
    today = sc[sc.declaration_date == day]
    version = str(today.model_version.iloc[0]) if len(today) else None
    if len(sc):
        sc = sc.drop(columns="declaration_date").astype({"declaration_id": "str", "item_no": "int64",
                                                          "model_version": "str"})
        cur = cur.merge(sc, on=["declaration_id", "item_no"], how="left")
    return cur, version


# --- the daily check -------------------------------------------------------------------------------------

def check(settings: Settings, day: date, reference: pd.DataFrame | None = None, model=None) -> dict:
    """Drift of day ``day`` against the reference of the model that scored it; warns and requests a
    retraining past the threshold. Writes ``gold/monitoring/drift/report_date=D/part-0.parquet``; a re-run
    of the day keeps the first run's table (late data cannot change a past day's check), unless a
    ``reference`` is given."""
    m = settings.monitoring
    path = partition(_dir(settings) / "drift", "report_date", day) / "part-0.parquet"
    if reference is None and path.exists():
        table = read_partitioned(_dir(settings) / "drift", "report_date", upto=day, since=day)
        version = str(table.model_version.iloc[0]) if len(table) else None
        log.info("drift %s: the day's check is already recorded (%s)", day, path)
    else:
        current, version = current_frame(settings, day)
        if version == RULES_ONLY:  # a rules-only policy: no model, so no training data to drift from
            log.info("drift %s: scored by the rules alone, no model to monitor", day)
            return {"date": day.isoformat(), "model_version": version, "checked": False, "max_psi": None,
                    "worst": None, "major": [], "retrain_requested": False, "table": pd.DataFrame()}
        if reference is None and version is not None:
            reference = reference_frame(settings, version, model=model)
        if reference is None or current.empty:
            log.info("drift %s: nothing to compare (model version %s, %d items)", day, version, len(current))
            return {"date": day.isoformat(), "model_version": version, "checked": False, "max_psi": None,
                    "worst": None, "major": [], "retrain_requested": False, "table": pd.DataFrame()}
        table = drift_table(reference, current, settings, version).assign(model_version=version, report_date=day)
        write_partition(table, _dir(settings) / "drift", "report_date", day)
    finite = table[table.psi.notna()]
    worst = finite.sort_values("psi", ascending=False).head(1)
    major = finite[finite.status == "major"]
    summary = {"date": day.isoformat(), "model_version": version, "checked": True,
               "max_psi": float(worst.psi.iloc[0]) if len(worst) else None,
               "worst": str(worst.variable.iloc[0]) if len(worst) else None,
               "major": [f"{v} {p:.3f}" for v, p in zip(major.variable, major.psi, strict=True)],
               "retrain_requested": False, "table": table}
    for r in finite[finite.status == "moderate"].itertuples():
        log.info("drift %s: %s moderate (PSI %.3f)", day, r.variable, r.psi)
    if len(major):
        log.warning("drift %s: PSI past %.2f against the training data of model v%s: %s", day, m.psi_threshold,
                    version, ", ".join(summary["major"]))
        summary["retrain_requested"] = request_retrain(settings, day, version, summary["major"])
    else:
        log.info("drift %s: no variable past PSI %.2f (max %s %.3f)", day, m.psi_threshold, summary["worst"],
                 summary["max_psi"] or 0.0)
    return summary
