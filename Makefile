# Two commands from a fresh clone: `make demo` and `make test`. Both build .venv from the lock first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT := $(abspath .)
export AIRFLOW_HOME ?= $(ROOT)/.local/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export MLFLOW_TRACKING_URI ?= sqlite:///$(ROOT)/.local/mlflow/mlflow.db

.PHONY: venv demo ui run-day test lint clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt && \
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e . && \
	echo "[venv] installed in $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sunat-pipeline demo

# Airflow UI on :8080 and MLflow UI on :5000, on the demo's embedded stores. Ctrl-C stops both.
ui: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME) .local/mlflow
	@echo "Airflow: http://localhost:8080  user 'admin', password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	@echo "MLflow:  http://localhost:5000"
	@trap 'kill 0' INT TERM EXIT; \
	SUNAT_ROOT=$(ROOT) $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 0.0.0.0 --port 5000 & \
	SUNAT_ROOT=$(ROOT) AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin $(BIN)/airflow standalone & \
	wait

run-day: $(STAMP)
	@test -n "$(DATE)" || { echo "usage: make run-day DATE=YYYY-MM-DD"; exit 2; }
	$(BIN)/sunat-pipeline run-day --date $(DATE)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf data .local
