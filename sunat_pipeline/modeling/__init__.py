"""The risk model and everything that trains and judges it: ``model`` (RiskModel: XGBoost bag, scikit-learn
estimator shape, defaults from ``settings.TrainingSettings``), ``train`` (labelled set, holdout, MLflow run,
champion/challenger), ``registry`` (the MLflow store, experiment, registered model, aliases, descriptions),
``tuning`` (the one time-budgeted hyperparameter search), ``metrics`` (targeting metrics, the primary metric,
calibration), ``plots`` (run plots and SHAP), ``mlflow_model`` (the pyfunc flavour) and ``evaluate`` (the
production path on an external labelled extract)."""
