"""The monthly tax audit selection (issue 17, docs/tax.md "The monthly audit list"): point-in-time
taxpayer-month features (``inputs``, ``features``), an anomaly model and a supervised model in MLflow with
champion/challenger (``models``, ``train``), the capacity-bounded audit list per regional office with reasons
(``auditlist``, ``reasons``), audit outcomes folded back (``outcomes``), the lake tables (``store``), and the
steps the ``sunat_tax_monthly`` DAG runs (``monthly``)."""
