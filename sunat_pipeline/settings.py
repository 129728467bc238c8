"""One typed settings object for the whole pipeline.

Values come, highest priority first, from environment variables prefixed ``SUNAT_`` (nested with
``__``, e.g. ``SUNAT_SELECTION__RANDOM_SHARE=0.2``), then the YAML file named by ``SUNAT_CONFIG``
(default ``config/pipeline.yaml`` under the project root), then the defaults below.
"""

from __future__ import annotations

import json
import os
from datetime import date, time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
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
    """Inspections an office can do in a day, counted in declarations or in workload units.

    In workload units (ASYCUDA-style) a declaration costs ``per_declaration + per_item x items``; an office
    may override the unit costs of ``SelectionSettings`` (see docs/selection.md).
    """

    red: int = Field(ge=0, description="physical examinations per day (declarations or workload units)")
    yellow: int = Field(ge=0, description="documentary checks per day (declarations or workload units)")
    unit: Literal["declarations", "workload"] = Field("declarations", description="what red and yellow count")
    per_declaration: float | None = Field(None, ge=0, description="workload units per declaration (override)")
    per_item: float | None = Field(None, ge=0, description="workload units per item (override)")


class SelectionSettings(BaseModel):
    capacity: dict[str, OfficeCapacity] = Field(default_factory=dict, description="explicit capacity per office "
                                                "(always wins over the default)")
    default_capacity_mode: Literal["volume", "fixed"] = Field(
        "volume", description="capacity of an office without an explicit one: 'volume' derives it from the "
        "office's recent daily volume (shares below), 'fixed' is default_capacity for every office")
    default_capacity: OfficeCapacity = Field(OfficeCapacity(red=6, yellow=9), description="capacity of an office "
                                             "without an explicit one in 'fixed' mode, and without history in "
                                             "'volume' mode")
    red_share: float = Field(0.10, ge=0, le=1, description="volume mode: RED capacity as a share of the office's "
                             "average declarations a day")
    yellow_share: float = Field(0.15, ge=0, le=1, description="volume mode: YELLOW capacity as a share of the "
                                "office's average declarations a day")
    capacity_window_days: int = Field(28, ge=1, description="volume mode: days lodged before the scored day "
                                      "that the average is taken over")
    min_red: int = Field(1, ge=0, description="volume mode: least RED capacity of an office with history")
    min_yellow: int = Field(1, ge=0, description="volume mode: least YELLOW capacity of an office with history")
    random_share: float = Field(0.15, ge=0, le=1, description="share of capacity chosen at random")
    exploration_share: float = Field(0.10, ge=0, le=1, description="share of capacity for exploration (the "
                                     "starting point of the adaptive share)")
    exploration_adaptive: bool = Field(True, description="the exploration share follows exploration's recent hit "
                                       "rate against the random share's, within the bounds below")
    exploration_share_min: float = Field(0.05, ge=0, le=1, description="adaptive exploration share: lower bound")
    exploration_share_max: float = Field(0.20, ge=0, le=1, description="adaptive exploration share: upper bound "
                                         "(its evidence: the KPI window, monitoring.exploration_window_days)")
    workload_per_declaration: float = Field(10.0, ge=0, description="workload units of a declaration")
    workload_per_item: float = Field(5.0, ge=0, description="workload units of each of its items")
    exploitation_revenue_share: float = Field(
        0.5, ge=0, le=1, description="share of exploitation picks ranked by expected revenue; the rest by "
        "fraud probability")
    exploration_pool: int = Field(20, ge=1, description="exploration candidates per exploration slot (the best by "
                                  "uncertainty x revenue), among which k-means++ seeding picks diverse ones")
    scorer: Literal["model", "rules"] = Field(
        "model", description="what scores items: the registered champion model, or the rules alone (each item's "
        "fraud probability is the noisy-OR of the weights of the rules it hits: a rules-only administration)")
    rule_weights: Literal["learned", "file"] = Field(
        "learned", description="rule weights: the latest version learned from the outcomes before the day, or the "
        "rules file's own weights")
    documentary_blind: list[str] = Field(default_factory=lambda: ["quantity", "counterfeit"], description=(
        "offence codes a documentary (YELLOW) check cannot see: only a physical examination finds them"))
    channel_by_mechanism: bool = Field(False, description="RED goes to the model's picks most likely to hide an "
                                       "offence a documentary check cannot see (documentary_blind), YELLOW to the "
                                       "rest; off: RED to the highest ranked")
    combine: Literal["stacked", "model"] = Field(
        "stacked", description="with the model scorer: rank by the model and the learned rule weights stacked in "
        "log-odds (feedback/stacking.py), or by the model alone")
    mandatory_rules: bool = Field(True, description="mandatory rules select first (the law); off only for a pure "
                                  "random baseline")

    def capacity_for(self, office: str, daily_volume: float | None = None) -> OfficeCapacity:
        """The office's capacity: its explicit one; else, in volume mode with a known average daily volume
        (declarations lodged a day before the scored day), shares of it (in declarations); else the default."""
        if str(office) in self.capacity:
            return self.capacity[str(office)]
        if self.default_capacity_mode == "volume" and daily_volume is not None and daily_volume > 0:
            return OfficeCapacity(red=max(self.min_red, round(daily_volume * self.red_share)),
                                  yellow=max(self.min_yellow, round(daily_volume * self.yellow_share)))
        return self.default_capacity


# The risk model's hyperparameters (``modeling.model.RiskModel``). ``TrainingSettings`` holds their one set of
# defaults: the model's constructor, the daily training, the first trial of every search and ``evaluate`` use them.
MODEL_PARAMS = ("n_estimators", "max_depth", "learning_rate", "subsample", "min_child_weight", "colsample_bytree",
                "reg_lambda", "reg_alpha", "gamma", "max_pos_weight", "max_member_rows", "bootstrap", "max_bin")


class TrainingSettings(BaseModel):
    enabled: bool = Field(True, description="train and register models; off for a policy that scores with the "
                          "rules alone (selection.scorer: rules)")
    log_plots: bool = Field(True, description="log the training plots and SHAP summary to MLflow (off in "
                            "backtests, where nobody looks at them)")
    retrain_every_days: int = 7
    min_new_labels: int = 2000
    holdout_days: int = 21
    n_estimators: int = Field(200, ge=1, description="boosting rounds of each XGBoost model")
    max_depth: int = Field(6, ge=1, description="depth of each tree")
    learning_rate: float = Field(0.08, gt=0, description="shrinkage of each round")
    subsample: float = Field(0.8, gt=0, le=1, description="share of rows each tree sees")
    min_child_weight: float = Field(1.0, ge=0, description="least hessian weight in a leaf")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="share of features each tree sees")
    reg_lambda: float = Field(1.0, ge=0, description="L2 penalty on leaf weights")
    reg_alpha: float = Field(0.0, ge=0, description="L1 penalty on leaf weights")
    gamma: float = Field(0.0, ge=0, description="least loss reduction for a split")
    max_pos_weight: float = Field(10.0, ge=1, description="cap of the frauds' weight against the non-frauds")
    max_bin: int = Field(128, ge=2, description="histogram bins per feature (XGBoost's hist method; its default is "
                         "256): 128 fits a weekly training about a quarter faster with the same ranking quality "
                         "(docs/models.md)")
    max_member_rows: int | None = Field(500_000, ge=1, description="rows a bag member trains on at most (a random "
                                        "subset above it); None: all")
    bootstrap: bool = Field(True, description="each bag member trains on a bootstrap resample of its rows, so the "
                            "bag's spread is the fit's sampling uncertainty (exploration reads it), not seed noise")
    bag_size: int = Field(4, ge=1, description="XGBoost classifiers in the bag (their spread is the uncertainty)")
    documentary_blind_labels: bool = Field(False, description="a CLEAN documentary (YELLOW) result weighs as a "
                                           "negative only as far as the likely offence was visible to it")
    promotion_margin: float = Field(0.0, description="a challenger must do at least this much better than the "
                                    "champion (Revenue@10%) to replace it")
    promotion_rule: Literal["not_worse", "better"] = Field(
        "not_worse", description="on the all-traffic estimate: 'not_worse' promotes the challenger (trained on the "
        "newer outcomes) unless the 95% interval of its difference from the champion lies wholly below the margin; "
        "'better' promotes it when the point estimate clears the margin (docs/models.md)")
    device: str = "cpu"
    n_jobs: int = Field(2, ge=1, description="threads of each XGBoost fit (the machine's cores; a backtest running "
                        "several runs at once gives each its share, as more threads than cores slow every fit)")
    search_budget_s: float = Field(120.0, ge=0, description="hyperparameter search budget of a weekly retraining")
    search_max_trials: int = Field(12, ge=1, description="at most this many search trials (reproducible cap)")

    def model_params(self) -> dict[str, Any]:
        """The hyperparameters of ``RiskModel`` (MODEL_PARAMS), without bag size, seed and device."""
        return {k: getattr(self, k) for k in MODEL_PARAMS}


class TaxSettings(BaseModel):
    """Import taxes the administration levies on CIF (Peru: IGV 16% and IPM 2% on CIF plus duty)."""

    igv_rate: float = Field(0.16, ge=0, le=1, description="general sales tax (IGV) on CIF + duty")
    ipm_rate: float = Field(0.02, ge=0, le=1, description="municipal promotion tax (IPM) on CIF + duty")


class TaxAuditSettings(BaseModel):
    """The monthly tax audit selection (sunat_pipeline/tax/, docs/tax.md "The monthly audit list")."""

    capacity: dict[str, int] = Field(default_factory=dict, description="audits a regional tax office opens a "
                                     "month (explicit; wins over the share below)")
    capacity_share: float = Field(0.02, ge=0, le=1, description="capacity of an office without an explicit one: "
                                  "this share of its eligible taxpayers")
    min_capacity: int = Field(1, ge=0, description="least capacity of an office with eligible taxpayers")
    random_share: float = Field(0.15, ge=0, le=1, description="share of each office's list chosen at random "
                                "(unbiased labels for the next trainings)")
    anomaly_weight: float = Field(0.0, ge=0, le=1, description="where a supervised champion exists: weight of the "
                                  "anomaly score's rank percentile blended with the supervised one's (the "
                                  "supervised model already starts from the anomaly score; without one the "
                                  "anomaly score is the combined score)")
    window_months: int = Field(6, ge=1, description="return periods a month's features read (ending the month "
                               "before the processed one)")
    filing_due_day: int = Field(20, ge=1, le=28, description="a return filed after this day of the month after "
                                "its period counts as late")
    material_share: float = Field(0.05, ge=0, description="an assessment counts as a positive label when it is at "
                                  "least this share of the IGV debit declared for the audited periods")
    min_positive_labels: int = Field(15, ge=1, description="fewer positive labels than this: no supervised model")
    holdout_months: int = Field(2, ge=1, description="audits opened in the last months with outcomes judge the "
                                "challenger against the champion")
    ipw_power: float = Field(0.5, ge=0, le=1, description="labels weigh (1 / propensity) ** this: 1 is full inverse "
                             "propensity weighting, 0 none; tempered, since a few dozen positives make full "
                             "weights noisy (docs/tax.md)")
    max_ipw: float = Field(3.0, ge=1, description="cap of the label weights (after normalising them to mean 1)")
    promotion_margin: float = Field(0.0, description="a challenger must beat the champion's weighted ROC AUC by this")
    n_estimators: int = Field(50, ge=1, description="boosting rounds of the supervised XGBoost model")
    max_depth: int = Field(2, ge=1, description="tree depth of the supervised model")
    learning_rate: float = Field(0.05, gt=0, description="shrinkage of the supervised model")
    anomaly_trees: int = Field(300, ge=1, description="trees of the Isolation Forest")
    reasons_top: int = Field(3, ge=1, description="reasons given per listed taxpayer")
    anomaly_model: str = Field("sunat-tax-anomaly", description="registered name of the anomaly model")
    audit_model: str = Field("sunat-tax-audit", description="registered name of the supervised audit model")
    experiment: str = Field("sunat-tax-audit", description="MLflow experiment of both tax models")
    run_day: int = Field(2, ge=1, le=28, description="day of the month the monthly run fires (local time); it "
                         "processes the previous month")
    run_at: time = Field(time(7, 0), description="local time of the monthly run")
    start_month: str = Field("2026-01", pattern=r"^\d{4}-\d{2}$", description="first month the monthly DAG "
                             "processes")


class IngestSettings(BaseModel):
    """The landing zone's completeness contract (docs/landing.md)."""

    # NoDecode: the environment gives a plain comma-separated list (SUNAT_INGEST__DONE_MARKERS=customs,tax),
    # which pydantic-settings would otherwise try to parse as JSON.
    done_markers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="sources whose producers write in place and drop <file>.done when "
        "complete ('*' for every source); without a marker their files wait (status pending). Other sources "
        "land by an atomic rename from a hidden or temporary name")

    data_docs: bool = Field(True, description="render the GX Data Docs pages after each ingest; off in backtests "
                            "(nobody opens a scratch lake's pages; the next build renders every missing page)")

    @field_validator("done_markers", mode="before")
    @classmethod
    def _split_markers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else v.split(",")
        return [str(s).strip() for s in v if str(s).strip()] if isinstance(v, list | tuple) else v

    def marker_required(self, source: str) -> bool:
        return "*" in self.done_markers or source in self.done_markers


class FeedbackSettings(BaseModel):
    prior_hits: float = 2.0
    prior_misses: float = 8.0
    max_step: float = 0.25
    decay: float = 0.98
    # Model and rules stacked (feedback/stacking.py, docs/selection.md).
    stack_window_days: int = Field(56, ge=1, description="days of inspected items the stack is fitted on")
    stack_min_outcomes: int = Field(200, ge=1, description="fewer inspected items than this: the prior stack")
    stack_min_frauds: int = Field(20, ge=1, description="fewer frauds among them than this: the prior stack")
    stack_rule_prior: float = Field(0.5, ge=0, description="prior weight of each risk area's rule evidence")
    stack_rule_min: float = Field(0.1, ge=0, description="least weight of a risk area: rules never lose their say")
    stack_prior_sd: float = Field(1.0, gt=0, description="prior standard deviation of every stack coefficient")
    stack_max_ipw: float = Field(20.0, ge=1, description="cap of the inverse selection probability weights")


class MonitoringSettings(BaseModel):
    """Drift monitoring (reporting/monitor.py) and KPI reports (reporting/kpi.py, docs/kpi.md)."""

    psi_threshold: float = Field(0.25, description="PSI past which the run warns and requests a retraining")
    psi_notice: float = Field(0.10, description="PSI past which a variable is logged as moderately drifted")
    bins: int = Field(10, ge=2, description="quantile bins of numeric variables")
    reference_days: int = Field(28, ge=1, description="days lodged before the training date in the reference")
    reference_max_rows: int = Field(50_000, ge=100, description="items kept in a reference (seeded sample)")
    window_days: int = Field(7, ge=1, description="days of items (up to the run's day) compared with the reference")
    min_rows: int = Field(200, ge=1, description="fewer items than this in the window: no PSI")
    features: list[str] = Field(default_factory=lambda: [
        "log_cif", "log_unit_value_kg", "log_ref_ratio", "duty_rate", "kg_per_unit", "n_items", "has_permit",
        "importer_is_new", "origin_differs_supplier"])
    categorical: list[str] = Field(default_factory=lambda: ["origin_country", "hs_chapter", "customs_office"])
    request_retrain: bool = Field(True, description="past the threshold, ask the next train_if_due to retrain")
    cooldown_days: int = Field(7, ge=0, description="at most one retraining request per this many days")
    min_green_sample: int = Field(5, ge=1, description="random selections below the exploitation cut needed "
                                  "before the GREEN fraud estimate uses only them (else all random selections)")
    exploration_window_days: int = Field(28, ge=1, description="KPI exploration table: trailing days of reported "
                                         "outcomes beside the day's")
    new_importer_days: int = Field(30, ge=1, description="KPI discoveries: an importer whose first declaration is "
                                   "at most this many days before a declaration is new to customs")


class OperationsSettings(BaseModel):
    """How the DAGs run under Airflow's scheduler (docs/operations.md): schedules, timeouts, pool, alerts."""

    timezone: str = Field("America/Lima", description="zone of the run times, the deadline and the day a run "
                          "processes")
    start_date: date = Field(date(2026, 1, 1), description="first day the daily DAG processes; missed days since "
                             "then are caught up one run at a time")
    catchup: bool = Field(True, description="the scheduler runs every missed day of the daily DAG (off in `make "
                          "demo`: with catch-up, a backfill run moves the next scheduled run to the day after it)")
    daily_at: time = Field(time(6, 0), description="local time of the daily run; it processes the previous day")
    deadline_at: time = Field(time(10, 0), description="local time by which a day's run must be done, else an "
                              "alert (a deadline past midnight is not supported)")
    deadline_alert: bool = Field(True, description="attach the deadline alert to the daily DAG (the embedded "
                                 "`airflow dags test` runs turn it off: Airflow 3.3 fails them when it is set)")
    retrain_cron: str = Field("0 3 * * 0", description="local cron of the weekly retraining (also started by a "
                              "drift request)")
    extract_wait_h: float = Field(4, ge=0, description="how long a daily run waits for its day's customs extract "
                                  "to land before it fails (0: fail at once); it checks every `extract_poke_min`")
    extract_poke_min: float = Field(5, gt=0, description="minutes between two checks of the landing zone while a "
                                    "daily run waits for its extract")
    task_timeout_min: int = Field(60, ge=1, description="execution timeout of each task")
    train_timeout_min: int = Field(180, ge=1, description="execution timeout of a task that trains")
    dagrun_timeout_h: float = Field(12, gt=0, description="a daily or retraining run taking longer fails")
    champion_pool: str = Field("sunat_champion", description="one-slot pool of every task that can move the "
                               "champion alias")
    alerts_conn_id: str = Field("sunat_alerts", description="Airflow connection of the alert webhook (its host is "
                                "the URL, or extra {'url': ...}); absent: alerts are only logged")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUNAT_", env_nested_delimiter="__", extra="ignore")

    root: Path = Field(default_factory=_root)
    lake_root: Path | None = None
    airflow_home: Path | None = None
    airflow_db_url: str | None = None  # embedded Airflow's metadata DB; default SQLite in the Airflow home
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "sunat-risk"
    mlflow_ui_url: str = Field("http://localhost:5000", description="MLflow UI that the Airflow risk pages link "
                               "to (make ui serves it there)")
    registered_model: str = "sunat_risk_model"
    seed: int = 42
    rules_file: Path | None = None
    tax: TaxSettings = TaxSettings()
    tax_audit: TaxAuditSettings = TaxAuditSettings()
    ingest: IngestSettings = IngestSettings()
    selection: SelectionSettings = SelectionSettings()
    training: TrainingSettings = TrainingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    operations: OperationsSettings = OperationsSettings()

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
    def scored_dir(self) -> Path:
        return self.gold / "scored_declarations"

    @property
    def retrain_requests_dir(self) -> Path:
        """Drift monitoring's retraining requests (reporting/retrain.py; the DRIFT_REQUEST asset)."""
        return self.gold / "monitoring" / "retrain_requests"

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
        return f"sqlite:///{(self.root / '.local' / 'mlflow' / 'mlflow.db').resolve()}"

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
