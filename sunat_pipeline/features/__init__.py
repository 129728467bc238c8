"""Point-in-time features of declaration items, one builder for training, daily scoring and offline evaluation:
``build`` (the feature matrix), ``catalog`` (every feature described, with its inputs; docs/features.md),
``declared`` (the item's own values and attributes), ``valuation`` (unit values and peer deviations against past
declarations), ``anomaly`` (monthly Isolation Forest), ``activity`` (the importer's past declarations),
``history`` (entity risk profiles from known inspection outcomes, full rebuild and daily state), ``tax``
(tax returns against customs imports) and ``arrays`` (the vectorised as-of helpers)."""
