"""Channel selection: risk rules, scoring the day's items, RED/YELLOW/GREEN under each office's capacity
(mandatory, exploitation, exploration, random), reasons, the audit trail and officers' overrides."""
