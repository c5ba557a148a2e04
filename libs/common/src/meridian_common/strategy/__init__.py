"""Primary strategy rules, shared by the signals service, replays and research."""

from meridian_common.strategy.trend import TrendParams, TrendRules, row_inputs, trend_events
from meridian_common.strategy.vote import Vote

__all__ = ["TrendParams", "TrendRules", "Vote", "row_inputs", "trend_events"]
