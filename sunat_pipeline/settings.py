"""One typed settings object for the whole pipeline.

Values come, highest priority first, from environment variables prefixed ``SUNAT_`` (nested with
``__``, e.g. ``SUNAT_SELECTION__RANDOM_SHARE=0.2``), then the YAML file named by ``SUNAT_CONFIG``
(default ``config/pipeline.yaml`` under the project root), then the defaults below.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _root() -> Path:
    return Path(os.environ.get("SUNAT_ROOT", PROJECT_ROOT)).resolve()


def _config_file() -> Path:
    return Path(os.environ.get("SUNAT_CONFIG", _root() / "config" / "pipeline.yaml"))


class OfficeCapacity(BaseModel):
    """Inspections an office can do in a day, counted in declarations."""

    red: int = Field(ge=0, description="physical examinations per day")
    yellow: int = Field(ge=0, description="documentary checks per day")


class SelectionSettings(BaseModel):
    default_capacity: OfficeCapacity = OfficeCapacity(red=6, yellow=9)
    capacity: dict[str, OfficeCapacity] = Field(default_factory=dict)
    random_share: float = Field(0.15, ge=0, le=1, description="share of capacity chosen at random")
    exploration_share: float = Field(0.10, ge=0, le=1, description="share of capacity for exploration")

    def capacity_for(self, office: str) -> OfficeCapacity:
        return self.capacity.get(str(office), self.default_capacity)


class TrainingSettings(BaseModel):
    retrain_every_days: int = 7
    min_new_labels: int = 2000
    holdout_days: int = 21
    n_estimators: int = 200
    max_depth: int = 6
    learning_rate: float = 0.08
    bag_size: int = 4
    promotion_margin: float = 0.0
    device: str = "cpu"


class FeedbackSettings(BaseModel):
    prior_hits: float = 2.0
    prior_misses: float = 8.0
    max_step: float = 0.25
    decay: float = 0.98


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUNAT_", env_nested_delimiter="__", extra="ignore")

    root: Path = Field(default_factory=_root)
    lake_root: Path | None = None
    airflow_home: Path | None = None
    airflow_db_url: str | None = None  # embedded Airflow's metadata DB; default SQLite in the Airflow home
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "sunat-risk"
    registered_model: str = "sunat_risk_model"
    seed: int = 42
    rules_file: Path | None = None
    selection: SelectionSettings = SelectionSettings()
    training: TrainingSettings = TrainingSettings()
    feedback: FeedbackSettings = FeedbackSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        cfg = _config_file()
        if cfg.exists():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=cfg))
        return tuple(sources)

    # Paths of the lake. Everything the pipeline writes lives under lake (git-ignored).
    @cached_property
    def lake(self) -> Path:
        return Path(self.lake_root or self.root / "data").resolve()

    @property
    def airflow_home_path(self) -> Path:
        return Path(self.airflow_home or os.environ.get("AIRFLOW_HOME") or self.root / ".local" / "airflow").resolve()

    @property
    def landing(self) -> Path:
        return self.lake / "landing"

    @property
    def bronze(self) -> Path:
        return self.lake / "bronze"

    @property
    def quarantine(self) -> Path:
        return self.lake / "quarantine"

    @property
    def silver(self) -> Path:
        return self.lake / "silver"

    @property
    def gold(self) -> Path:
        return self.lake / "gold"

    @property
    def truth(self) -> Path:
        """Ground truth of the synthetic world: read only by the simulator and evaluation."""
        return self.lake / "world_truth"

    @property
    def scored_dir(self) -> Path:
        return self.gold / "scored_declarations"

    @property
    def rules_path(self) -> Path:
        return Path(self.rules_file or self.root / "config" / "rules.yaml")

    @property
    def expectations_dir(self) -> Path:
        return self.root / "expectations"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        db = (self.root / ".local" / "mlflow" / "mlflow.db").resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifact store of a new experiment: beside a SQLite tracking DB, else under .local/."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///"):
            return Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"
        return (self.root / ".local" / "mlflow" / "artifacts").resolve()

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def get_settings(**overrides: Any) -> Settings:
    """Fresh settings every call: tasks may run in a new process with a new environment."""
    return Settings(**overrides)
