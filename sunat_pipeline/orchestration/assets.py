"""Assets shared by the DAGs: what each task produces, so the UI shows the data lineage and a drift request
schedules the retraining DAG. URIs come from the settings (the lake's folders and the MLflow registry), so
they name the data where this deployment keeps it."""

from __future__ import annotations

from airflow.sdk import Asset

from sunat_pipeline.settings import Settings, get_settings


def _file(path) -> str:
    return path.resolve().as_uri()


def lake_assets(settings: Settings) -> dict[str, Asset]:
    """Every asset of the DAGs, by name, for ``settings``' lake and registry."""
    # The feedback stage's folders (feedback/offences.py, feedback/weights.py; tests/test_dags.py keeps them
    # equal): importing it here would load pandas into the scheduler's DAG parsing.
    return {
        "SILVER": Asset(name="sunat_silver", uri=_file(settings.silver)),
        # The registered model's name only: the tracking URI may carry credentials.
        "MODEL": Asset(name="sunat_risk_model", uri=f"mlflow://models/{settings.registered_model}"),
        "SCORED": Asset(name="sunat_scored_declarations", uri=_file(settings.scored_dir)),
        "OFFENCES": Asset(name="sunat_offences", uri=_file(settings.gold / "offences")),
        "RULE_WEIGHTS": Asset(name="sunat_rule_weights", uri=_file(settings.gold / "rule_weights")),
        "DRIFT_REQUEST": Asset(name="sunat_drift_retrain_request", uri=_file(settings.retrain_requests_dir)),
    }


_ASSETS = lake_assets(get_settings())
SILVER = _ASSETS["SILVER"]
MODEL = _ASSETS["MODEL"]
SCORED = _ASSETS["SCORED"]
OFFENCES = _ASSETS["OFFENCES"]
RULE_WEIGHTS = _ASSETS["RULE_WEIGHTS"]
DRIFT_REQUEST = _ASSETS["DRIFT_REQUEST"]
