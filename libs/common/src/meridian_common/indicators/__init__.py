"""Indicators, each in two forms: incremental (explicit serializable state, O(1) or O(window)
per new candle, for the streaming path) and batch (`<name>_batch` over numpy arrays, for
research and training). Both follow TA-Lib's warm-up conventions and are proven equal to each
other and to TA-Lib in libs/common/tests/test_indicators_parity_{a,b}.py: an indicator returns
None (NaN in batch) until it has seen enough values, then a value for every later one.
"""

from meridian_common.indicators.adx import Adx, AdxValue, adx_batch
from meridian_common.indicators.atr import Atr, atr_batch, true_range_batch
from meridian_common.indicators.bbands import Bbands, BbandsValue, bbands_batch
from meridian_common.indicators.cci import Cci, cci_batch
from meridian_common.indicators.donchian import Channel, Donchian, donchian_batch
from meridian_common.indicators.ema import Ema, ema_batch
from meridian_common.indicators.keltner import Keltner, keltner_batch
from meridian_common.indicators.macd import Macd, MacdValue, macd_batch
from meridian_common.indicators.mfi import Mfi, mfi_batch
from meridian_common.indicators.obv import Obv, obv_batch
from meridian_common.indicators.realized_vol import (
    HOURLY_ANNUALIZATION,
    RealizedVol,
    realized_vol_batch,
)
from meridian_common.indicators.roc import Roc, roc_batch
from meridian_common.indicators.rsi import Rsi, rsi_batch
from meridian_common.indicators.sma import Sma, sma_batch
from meridian_common.indicators.stoch import Stoch, StochValue, stoch_batch
from meridian_common.indicators.vwap import DAY_MS, Vwap, vwap_batch
from meridian_common.indicators.wma import Wma, wma_batch
from meridian_common.indicators.zscore import ZScore, zscore_batch

__all__ = [
    "DAY_MS", "HOURLY_ANNUALIZATION", "Adx", "AdxValue", "Atr", "Bbands", "BbandsValue", "Cci",
    "Channel", "Donchian", "Ema", "Keltner", "Macd", "MacdValue", "Mfi", "Obv", "RealizedVol",
    "Roc", "Rsi", "Sma", "Stoch", "StochValue", "Vwap", "Wma", "ZScore", "adx_batch",
    "atr_batch", "bbands_batch", "cci_batch", "donchian_batch", "ema_batch", "keltner_batch",
    "macd_batch", "mfi_batch", "obv_batch", "realized_vol_batch", "roc_batch", "rsi_batch",
    "sma_batch", "stoch_batch", "true_range_batch", "vwap_batch", "wma_batch", "zscore_batch",
]
