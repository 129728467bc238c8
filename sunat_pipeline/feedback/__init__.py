"""Inspection feedback: the append-only offence database and the learned rule-weight versions."""
