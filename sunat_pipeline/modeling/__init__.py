"""The risk model (XGBoost, scikit-learn estimator shape), training and MLflow registry, the
hyperparameter search, targeting metrics, and offline evaluation on external labelled extracts."""
