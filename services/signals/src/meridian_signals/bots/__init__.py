"""The bots host: grid and DCA bots (`meridian_common.strategy`) run on the bus.

`python -m meridian_signals.bots` reads the bots from the TOML file named by
MERIDIAN_BOTS_CONFIG (`spec`), and `handler.BotsHandler` turns candles, fills and the risk
gate's decisions into order intents (order.intent.v1) for the gate.
"""
