"""Test isolation: nothing a test does may touch the project's own lake, MLflow store or Airflow home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SANDBOX = Path(tempfile.mkdtemp(prefix="sunat-tests-"))
os.environ["SUNAT_LAKE_ROOT"] = str(_SANDBOX / "data")
os.environ["SUNAT_MLFLOW_TRACKING_URI"] = f"sqlite:///{_SANDBOX / 'mlflow.db'}"
os.environ["AIRFLOW_HOME"] = str(_SANDBOX / "airflow")
for var in ("SUNAT_CONFIG", "MLFLOW_TRACKING_URI", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__DAGS_FOLDER"):
    os.environ.pop(var, None)
os.environ["GX_ANALYTICS_ENABLED"] = "False"
