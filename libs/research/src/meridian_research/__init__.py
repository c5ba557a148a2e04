"""Research on the shared library: vectorbt sweeps, Optuna studies, backtest reports."""
