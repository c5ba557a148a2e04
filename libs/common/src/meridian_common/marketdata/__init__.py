"""Market-data sources and candle construction shared by ingest, replays and research."""

from meridian_common.marketdata.candles import RawCandle, make_candle, timeframe_ms
from meridian_common.marketdata.csvfiles import CsvCandleSource, CsvFundingSource, default_data_dir
from meridian_common.marketdata.funding import make_funding

__all__ = ["CsvCandleSource", "CsvFundingSource", "RawCandle", "default_data_dir", "make_candle",
           "make_funding", "timeframe_ms"]
