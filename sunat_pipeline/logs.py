"""Logging set-up shared by the CLI and the Airflow tasks (Airflow captures the root logger)."""

from __future__ import annotations

import logging


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sunat_pipeline").setLevel(level)
    for noisy in ("great_expectations", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
