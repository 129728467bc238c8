"""The MLflow store: the one way to open it, the experiment, the registered model, its aliases and descriptions.

Every MLflow client of the product comes from :func:`client`, which creates the local store's folder when
the tracking URI is a SQLite file (settings only compute the URI). The experiment is created with its
artifact location beside that store and tagged as a model-training experiment (``mlflow.experimentKind =
custom_model_development``). MLflow 3.17.2's UI ignores that tag when it picks a view: its GenAI / Model
training switch (a per-browser preference, GenAI by default) decides, unless the link carries
``?workflowType=machine_learning``; :func:`experiment_url` gives that link, and the demo prints it.
The registered model and each version carry a description: what the model predicts, on what data, and why
a version was or was not promoted.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from datetime import date
from pathlib import Path

from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)
CHAMPION = "champion"
# MLflow's experiment type tag (read by its UI): classic model development, not GenAI.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_DESCRIPTION = (
    "Risk model of import declaration items (sunat_pipeline.modeling.model.RiskModel, a bag of XGBoost "
    "classifiers and a revenue regressor). Predicts the probability that an item is found fraudulent at "
    "inspection, the revenue at stake if it is, and an uncertainty (the spread of the bag). Trained on inspected "
    "items whose outcome was reported by the training date, with point-in-time features (docs/features.md). "
    "The daily scoring uses the version under the alias 'champion'; a new version takes it only if it beats the "
    "champion on the same recent holdout (docs/models.md).")


# In-process caches: one client per store, and the last few loaded model versions. A registered version's
# artifacts never change, so a model loaded once serves every later step of the process (a backtest runs many
# days in one process; Airflow starts a process per task, where they simply start empty).
_CLIENTS: OrderedDict[tuple, object] = OrderedDict()
_MODELS: OrderedDict[tuple, object] = OrderedDict()
_CLIENTS_KEPT, _MODELS_KEPT = 4, 4


def _store_identity(uri: str) -> tuple | None:
    """What a client is cached under: the URI, and for a SQLite store the file's identity (a store deleted and
    created again at the same path gets a new client); ``None``: not cached (the file does not exist yet)."""
    if not uri.startswith("sqlite:///"):
        return (uri,)
    try:
        st = os.stat(uri.removeprefix("sqlite:///"))
    except FileNotFoundError:
        return None
    return uri, st.st_dev, st.st_ino


def client(settings: Settings):
    """An ``MlflowClient`` on the settings' store (also the fluent API's tracking URI); creates a local SQLite
    store's folder. One client per store and process."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    key = _store_identity(uri)
    c = _recall(_CLIENTS, key) if key is not None else None
    if c is None:
        c = MlflowClient(uri)
        key = _store_identity(uri)  # the client created a new SQLite file
        if key is not None:
            _remember(_CLIENTS, key, c, _CLIENTS_KEPT)
    return c


def _recall(cache: OrderedDict, key):
    """The cached value of ``key`` (now the most recently used), or None."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    return None


def _remember(cache: OrderedDict, key, value, kept: int) -> None:
    """Cache ``value``, dropping the least recently used beyond ``kept`` entries."""
    cache[key] = value
    while len(cache) > kept:
        cache.popitem(last=False)


def experiment_url(experiment_id: str, ui: str = "http://localhost:5000") -> str:
    """The experiment's page in the MLflow UI, in the model-training view (see the module docstring)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def experiment(settings: Settings) -> str:
    """The experiment's id (created if needed, tagged as model development); the fluent API's active one."""
    import mlflow

    c = client(settings)
    exp = c.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        location = None  # a tracking server keeps the artifacts in its own (served) store
        if not settings.tracking_uri.startswith(("http://", "https://")):
            settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts.as_uri()
        exp_id = c.create_experiment(settings.mlflow_experiment, artifact_location=location,
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    else:
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # created before the tag existed
            c.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def champion(settings: Settings, load: bool = True):
    """(model version, RiskModel) of the current champion, or (None, None); ``load=False``: (model version,
    None), for a caller that needs only the version."""
    mv = champion_version(settings)
    if mv is None:
        return None, None
    return mv, _load(settings, mv) if load else None


def champion_version(settings: Settings):
    """The champion's model version, or None only when the registered model or its alias does not exist: any
    other error (the tracking server down, a refused request) raises, so an outage never reads as "no champion"
    (which would train and promote a new model on it)."""
    from mlflow.exceptions import MlflowException

    c = client(settings)
    name = settings.registered_model
    try:
        return c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # no registered model yet
            return None
        if e.error_code != "INVALID_PARAMETER_VALUE":
            raise
    # "alias not found" and a malformed request share that code: the model's aliases tell them apart.
    try:
        aliases = c.get_registered_model(name).aliases
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if CHAMPION in aliases:
        raise RuntimeError(f"the {CHAMPION} alias of {name} exists but its version could not be read")
    return None


def load_version(settings: Settings, version: str):
    """The ``RiskModel`` of a registered version."""
    return _load(settings, client(settings).get_model_version(settings.registered_model, str(version)))


def _load(settings: Settings, mv):
    """The ``RiskModel`` of model version ``mv``, loaded once per process: cached under the store, the version
    and its run and model ids (so a store recreated at the same path never serves another store's model)."""
    import mlflow

    key = (_store_identity(settings.tracking_uri), settings.registered_model, str(mv.version), mv.run_id,
           mv.source, mv.creation_timestamp)
    model = _recall(_MODELS, key)
    if model is None:
        client(settings)
        model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/{mv.version}").unwrap_python_model(
        ).model
        _remember(_MODELS, key, model, _MODELS_KEPT)
    return model


# Only a training run that ended well counts as a training: a failed or killed one (FAILED, KILLED, or RUNNING
# forever after its process died) must leave the day untrained, so the retry trains again.
DONE = "attributes.status = 'FINISHED'"


def runs_for(settings: Settings, asof: date) -> list:
    """Finished training runs for the training date ``asof``."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id],
                         filter_string=f"tags.training_date = '{asof.isoformat()}' and {DONE}")


def last_training_date(settings: Settings) -> date | None:
    """Training date of the latest finished training run."""
    c = client(settings)
    exp = c.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        return None
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.kind = 'training' and {DONE}",
                         order_by=["tags.training_date DESC"], max_results=1)
    return date.fromisoformat(runs[0].data.tags["training_date"]) if runs else None


def version_description(asof: date, metrics: dict, decision: dict, trigger: str) -> str:
    """What a version is: its data, its holdout figure and the promotion decision in plain words."""
    metric = decision.get("primary_metric", "")
    verdict = "Promoted to champion" if decision.get("promoted") else "Not promoted"
    return (f"Trained on {asof.isoformat()} ({trigger}) on {metrics.get('n_train', 0)} inspected items with "
            f"outcomes reported by then ({100 * metrics.get('train_fraud_rate', 0.0):.1f}% fraud); judged on the "
            f"holdout {decision.get('holdout_from')}..{decision.get('holdout_to')} ({decision.get('n_holdout')} "
            f"items): {metric} {metrics.get(metric, 0.0):.4f} (rules alone "
            f"{metrics.get('rules_' + metric, 0.0):.4f}, random {metrics.get('random_' + metric, 0.0):.4f}). "
            f"{verdict}: {decision.get('why', '')}.")


def register(settings: Settings, version: str, *, promote: bool, description: str, tags: dict[str, str],
             model_description: str = MODEL_DESCRIPTION) -> None:
    """Describe a new version (and the registered model: ``model_description``, the customs risk model's unless
    given), tag it, and move the champion alias if promoted."""
    c = client(settings)
    name = settings.registered_model
    c.update_registered_model(name, description=model_description)
    c.update_model_version(name, version, description=description)
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, v)
    if promote:
        promote_version(settings, version)


def promote_version(settings: Settings, version: str) -> bool:
    """Point the champion alias at ``version`` unless it already does (a retried promotion changes nothing);
    returns whether the alias moved."""
    mv = champion_version(settings)
    if mv is not None and str(mv.version) == str(version):
        log.info("version %s is already the champion of %s", version, settings.registered_model)
        return False
    client(settings).set_registered_model_alias(settings.registered_model, CHAMPION, str(version))
    return True


def pin_champion(settings: Settings, version: str) -> None:
    """Rollback: point the champion alias at an earlier version."""
    c = client(settings)
    c.get_model_version(settings.registered_model, version)  # raises if it does not exist
    c.set_registered_model_alias(settings.registered_model, CHAMPION, version)
    log.info("champion of %s pinned to version %s", settings.registered_model, version)
