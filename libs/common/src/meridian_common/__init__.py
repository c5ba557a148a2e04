"""Meridian's shared library: one implementation of each idea for research, replay and live.

Modules are split by concern: contracts and codec (`topics`, `codec`), transport (`bus`, `host`),
configuration (`config`), telemetry (`logs`, `metrics`), time (`clock`), money and trading logic
(`money`, `indicators`, `strategy`, `fees`, `fills`, `accounting`, `sizing`), storage (`db`) and
market-data sources (`marketdata`).
"""
