"""Assets shared by the DAGs: what each task produces in the lake, so the UI shows the data lineage."""

from airflow.sdk import Asset

SILVER = Asset(name="sunat_silver", uri="file:///sunat/silver")
MODEL = Asset(name="sunat_risk_model", uri="mlflow://models/sunat_risk_model")
SCORED = Asset(name="sunat_scored_declarations", uri="file:///sunat/gold/scored_declarations")
OFFENCES = Asset(name="sunat_offences", uri="file:///sunat/gold/offences")
RULE_WEIGHTS = Asset(name="sunat_rule_weights", uri="file:///sunat/gold/rule_weights")
