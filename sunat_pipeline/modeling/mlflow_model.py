"""MLflow pyfunc flavour of the risk model (kept apart so the model imports without MLflow)."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd

from sunat_pipeline.modeling.model import RiskModel


class RiskModelPyfunc(mlflow.pyfunc.PythonModel):
    def __init__(self, model: RiskModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.model.predict(model_input)
