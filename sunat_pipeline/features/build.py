"""The feature matrix of declaration items, point in time; the one builder of training, scoring and evaluation.

A declaration lodged on day D may use only what was known at the start of D:

* customs history lodged **before** D (unit-value statistics, peer deviations, importer activity, anomaly models);
* inspection outcomes whose extract was available on or before D (``reported_date <= D``; outcomes
  always come back at least a day after the inspection, so an item's own outcome never reaches its own
  features), counted once per item with the latest result reported by D;
* tax returns filed on or before D, exchange rates of months that ended before them;
* reference prices in force on D (the latest issue per HS10 and origin with ``effective_date <= D``);
* the permit register as known before D (``permits``: registered, and status set, before D);
* the monthly tax run's scores, audit list and audit outcomes published before D (``taxrisk``).

Every join is an as-of join on those dates (vectorised: integer-coded keys, counting sorts and binary
search; no per-row Python), so the same code builds features for training (many days at once) and for
one day's scoring, with identical values. ``build_features(..., profile_state=...)`` takes the entity
profiles from the persisted daily state (``sunat_pipeline.features.history``) instead of recomputing them.
The parts: ``declared`` (the item itself), ``valuation`` and ``anomaly`` (past declarations), ``activity``
(the importer's past), ``history`` (entity profiles), ``tax`` (tax returns), ``taxrisk`` (the tax run's risk of the
importer); ``catalog`` describes them all.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from sunat_pipeline.features.activity import history_features, importer_codes
from sunat_pipeline.features.anomaly import valuation_and_anomaly
from sunat_pipeline.features.arrays import to_days
from sunat_pipeline.features.catalog import DEFAULT_SPEC, FeatureSpec, feature_names
from sunat_pipeline.features.declared import base_features
from sunat_pipeline.features.history import ProfileState, labelled_outcomes, profile_features, state_features
from sunat_pipeline.features.permits import permit_valid
from sunat_pipeline.features.tax import tax_features
from sunat_pipeline.features.taxrisk import tax_risk_features
from sunat_pipeline.features.valuation import peer_deviations
from sunat_pipeline.settings import TaxSettings


def build_features(items: pd.DataFrame, *, customs_history: pd.DataFrame, outcomes: pd.DataFrame,
                   reference: pd.DataFrame, tax: pd.DataFrame, fx: pd.DataFrame,
                   permits: pd.DataFrame | None = None, profile_state: ProfileState | None = None,
                   taxes: TaxSettings | None = None, spec: FeatureSpec = DEFAULT_SPEC,
                   tax_scores: pd.DataFrame | None = None, tax_lists: pd.DataFrame | None = None,
                   tax_audits: pd.DataFrame | None = None) -> pd.DataFrame:
    """Feature matrix (columns ``feature_names(spec)``: FEATURES by default) aligned with ``items`` (reset index).

    ``customs_history`` and ``outcomes`` may hold data after the items' dates: the as-of joins keep
    only what each item's day could see, so features never depend on what came later.
    ``profile_state``: entity profiles as of the items' day (all items of that one day), e.g. from
    ``history.update_profiles``; by default they are rebuilt from ``outcomes``.
    ``permits``: the permit register (silver ``permits``); None or empty: ``permit_valid`` is NaN.
    ``taxes``: the import tax rates (``settings.tax``; None: the settings' defaults).
    ``spec``: which configurable features to build (the daily pipeline's by default).
    ``tax_scores``, ``tax_lists``, ``tax_audits``: the monthly tax run's tables with their publication dates
    (``taxrisk.load``); None or empty: the tax risk features are NaN.
    """
    taxes = TaxSettings() if taxes is None else taxes
    items = items.reset_index(drop=True)
    base = base_features(items, reference, taxes)
    h_day = to_days(customs_history.declaration_date)
    # Two independent halves on the two cores (numpy, Arrow and scikit-learn release the GIL).
    with ThreadPoolExecutor(max_workers=2) as pool:
        valuation = pool.submit(valuation_and_anomaly, items, customs_history, base, h_day)
        codes = importer_codes(items, customs_history)
        parts = [
            history_features(items, customs_history, codes, h_day),
            tax_features(items, tax, customs_history, fx, taxes, codes, h_day),
        ]
        if profile_state is not None:
            parts.append(state_features(items, profile_state, spec.profiles))
        else:
            labelled = labelled_outcomes(outcomes, customs_history, spec.profiles)
            parts.append(profile_features(items, labelled, spec.profiles))
        if spec.peer_groups:
            parts.append(peer_deviations(items, customs_history, spec.peer_groups, h_day))
        parts += [base, valuation.result(), pd.DataFrame({"permit_valid": permit_valid(items, permits)}),
                  tax_risk_features(items, tax_scores, tax_lists, tax_audits)]
    cols = {}
    for part in parts:
        cols.update({c: part[c].to_numpy(dtype="float64") for c in part.columns})
    return pd.DataFrame({name: cols[name] for name in feature_names(spec)})


def item_frame(items: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """Declared columns and features side by side (what rules and reasons read); declared values win."""
    items = items.reset_index(drop=True)
    return pd.concat([items, X.drop(columns=list(items.columns.intersection(X.columns)))], axis=1)
