"""Indicators, each with explicit serializable state and O(1) work per new value.

Warm-up rules follow TA-Lib so the streaming values can be checked against it: an indicator
returns None until it has seen enough values, then a number for every value after.
"""

from meridian_common.indicators.ema import Ema
from meridian_common.indicators.rsi import Rsi

__all__ = ["Ema", "Rsi"]
