# One image for every Airflow component and the MLflow server: the pinned lock (with psycopg2 and asyncpg for
# PostgreSQL, the Celery provider and redis for the workers, Flask-WTF for MLflow's basic auth) plus this project.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/sunat
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY sunat_pipeline ./sunat_pipeline
COPY sunat_sim ./sunat_sim
COPY dags ./dags
COPY plugins ./plugins
COPY expectations ./expectations
COPY config ./config
COPY mappings ./mappings
COPY compose ./compose
RUN pip install --no-cache-dir --no-deps -e .
# Airflow's home and logs (a volume in docker-compose.yaml) and the lake belong to the runtime user (the
# compose file runs as AIRFLOW_UID, group 0, as Airflow's own image does).
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow \
 && mkdir -p /opt/airflow/logs /lake /mlflow-auth && chown -R 50000:0 /opt/airflow /lake /mlflow-auth \
 && chmod -R g+rwX /opt/airflow /lake /mlflow-auth
USER 50000
ENV SUNAT_ROOT=/opt/sunat AIRFLOW_HOME=/opt/airflow AIRFLOW__CORE__DAGS_FOLDER=/opt/sunat/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/sunat/plugins
