"""KPIs (DuckDB cubes), drift monitoring against the training population, and the daily HTML report."""
