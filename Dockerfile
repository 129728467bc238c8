# One image for every Airflow component and the MLflow server: the pinned lock plus this project.
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/sunat
COPY requirements.txt pyproject.toml ./
RUN pip install --no-cache-dir -r requirements.txt
COPY sunat_pipeline ./sunat_pipeline
COPY dags ./dags
COPY plugins ./plugins
COPY expectations ./expectations
COPY config ./config
RUN pip install --no-cache-dir --no-deps -e .
ENV SUNAT_ROOT=/opt/sunat AIRFLOW__CORE__DAGS_FOLDER=/opt/sunat/dags AIRFLOW__CORE__PLUGINS_FOLDER=/opt/sunat/plugins
