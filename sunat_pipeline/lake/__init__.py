"""The lake on disk: one hive-partition reader and the atomic writers every stage uses."""
