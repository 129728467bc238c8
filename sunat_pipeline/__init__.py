"""sunat_pipeline: the risk-targeting product. One sub-package per stage, in the order data flows:

``lake`` (partition reader, atomic writers) -> ``ingest`` (landing, reading, validation, silver, reconcile,
Data Docs) -> ``features`` (catalog, valuation, history profiles, tax, build) -> ``modeling`` (model, train,
tuning, evaluate, registry) -> ``selection`` (rules, select, score, overrides) -> ``feedback`` (offence
database, rule weights) -> ``reporting`` (KPIs, drift monitor, HTML report). ``orchestration`` is the Airflow
adapter (the only place that imports Airflow); ``settings`` is the one typed settings object.
"""
