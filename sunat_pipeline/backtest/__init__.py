"""Backtests: selection policies as settings overlays (``policies``), paired comparisons with bootstrap
intervals (``stats``), and the policy backtest on an external labelled extract (``external``, ``measures``;
``sunat-pipeline backtest``). The synthetic-world replay is the simulator's (``sunat-sim backtest``)."""
