#!/bin/bash
# First start of the PostgreSQL container (docker-entrypoint-initdb.d): MLflow's own role and database, with the
# password from the env file (never in a committed file). Airflow's database is the image's POSTGRES_DB.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
