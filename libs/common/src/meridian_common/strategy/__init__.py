"""Primary strategy rules, shared by the signals service, replays and research."""

from meridian_common.strategy.ema_cross import EmaCross, EmaCrossParams, Vote

__all__ = ["EmaCross", "EmaCrossParams", "Vote"]
