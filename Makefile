# Two commands from a fresh clone: `make demo` and `make test`. Both build .venv from the lock first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT := $(abspath .)
# The UIs read the same embedded stores as the demo (sunat_pipeline/orchestration/runner.py sets them for runs).
UI_ENV := AIRFLOW_HOME=$(ROOT)/.local/airflow AIRFLOW__CORE__DAGS_FOLDER=$(ROOT)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(ROOT)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(ROOT)/.local/airflow/airflow.db \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin SUNAT_ROOT=$(ROOT) PATH=$(ROOT)/$(BIN):$$PATH
MLFLOW_DB := sqlite:///$(ROOT)/.local/mlflow/mlflow.db

.PHONY: venv demo ui run-day stack test lint clean

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
	$(BIN)/sunat-sim demo

# Airflow UI on :8080 and MLflow UI on :5000, on the demo's embedded stores. Ctrl-C stops both.
ui: $(STAMP)
	@mkdir -p .local/airflow .local/mlflow
	@echo "Airflow: http://localhost:8080  (user admin; password in .local/airflow/simple_auth_manager_passwords.json.generated)"
	@echo "MLflow:  http://localhost:5000  (the demo summary, sunat-sim summary, prints the training runs link in the model-training view)"
	@trap 'kill 0' INT TERM EXIT; \
	$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_DB) --host 0.0.0.0 --port 5000 & \
	$(UI_ENV) $(BIN)/airflow standalone & \
	wait

# The production topology from the venv: Airflow (api-server :8080, scheduler, dag-processor, triggerer) on
# PostgreSQL with the CeleryExecutor, Redis as broker, two Celery workers, MLflow :5000 on PostgreSQL serving its
# artifacts. Needs PostgreSQL (trust) and Redis on 127.0.0.1 (docs/operations.md). Ctrl-C stops every process.
stack: $(STAMP)
	$(BIN)/python -m sunat_pipeline.orchestration.stack $(STACK_ARGS)

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
