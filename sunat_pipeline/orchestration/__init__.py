"""The Airflow adapter: assets shared by the DAGs and the runner of the embedded Airflow.
The only part of the product that imports Airflow."""
