"""load_wide: the shared files as one aligned frame (values straight from the CSVs, missing hours
NaN, never filled), with the funding settlements of the symbols that have them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from meridian_research.data import DEFAULT_SYMBOLS, load_wide

H = pd.Timedelta("1h")


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_four_symbols_on_one_utc_hourly_axis() -> None:
    w = load_wide(start="2023-03-01", end="2023-03-08")
    assert w.symbols == list(DEFAULT_SYMBOLS)
    assert str(w.index.tz) == "UTC"
    assert w.index[0] == ts("2023-03-01")
    assert w.index[-1] == ts("2023-03-07 23:00")
    assert len(w.index) == 7 * 24
    for frame in (w.open, w.high, w.low, w.close, w.volume):
        assert frame.shape == (7 * 24, 4)
        assert frame.index.equals(w.index)
    assert (w.low <= w.open).all().all()
    assert (w.high >= w.close).all().all()
    np.testing.assert_array_equal(w.open_ms[:2], [1_677_628_800_000, 1_677_632_400_000])


def test_values_are_the_csv_rows() -> None:
    w = load_wide(symbols=("BTCUSDT",), start="2020-05-11", end="2020-05-11 02:00")
    # BTCUSDT-1h.csv.gz: 1589155200000,8722.77,8805.14,8696.0,8770.16,3812.842913
    row = w.index[0]
    assert row == ts("2020-05-11")
    assert (w.open.at[row, "BTCUSDT"], w.high.at[row, "BTCUSDT"], w.low.at[row, "BTCUSDT"],
            w.close.at[row, "BTCUSDT"], w.volume.at[row, "BTCUSDT"]) == \
        (8722.77, 8805.14, 8696.0, 8770.16, 3812.842913)
    assert len(w.index) == 2  # end is exclusive


def test_an_hour_no_symbol_has_is_not_invented() -> None:
    # 2023-03-24 13:00 is missing in all four files (exchange maintenance)
    w = load_wide(start="2023-03-24 10:00", end="2023-03-24 16:00")
    assert ts("2023-03-24 13:00") not in w.index
    assert list(w.index) == [ts("2023-03-24 10:00") + k * H for k in (0, 1, 2, 4, 5)]
    assert not w.close.isna().any().any()


def test_hours_one_symbol_lacks_stay_nan() -> None:
    # XRP trades since 2018, BTC's file starts 2020-05-11: before that BTC is NaN, never filled
    w = load_wide(symbols=("BTCUSDT", "XRPUSDT"), start="2020-05-09 22:00", end="2020-05-11 02:00")
    before = w.index < ts("2020-05-11")
    assert w.close.loc[before, "BTCUSDT"].isna().all()
    assert w.open.loc[before, "BTCUSDT"].isna().all()
    assert not w.close.loc[before, "XRPUSDT"].isna().any()
    assert not w.close.loc[~before, "BTCUSDT"].isna().any()
    np.testing.assert_array_equal(w.present("BTCUSDT"), ~before)
    # XRPUSDT-1h.csv.gz: 1589068800000 (2020-05-10 00:00),0.21642,0.21651,0.178,0.19786,...
    assert w.low.at[ts("2020-05-10"), "XRPUSDT"] == 0.178


def test_funding_where_the_files_have_it() -> None:
    w = load_wide(start="2023-01-01", end="2023-01-03")
    assert set(w.funding) == {"BTCUSDT", "ETHUSDT"}  # no funding file for XRP or LTC
    btc = w.funding["BTCUSDT"]
    assert str(btc.index.tz) == "UTC"
    # settlements 00:00, 08:00, 16:00 from the start up to the last candle's close (01-03 00:00)
    assert list(btc.index) == [ts("2023-01-01") + k * 8 * H for k in range(7)]
    assert btc.iloc[0] == 0.0001  # BTCUSDT-funding-8h.csv.gz: 1672531200000,0.0001
    old = load_wide(symbols=("BTCUSDT",), start="2021-06-01", end="2021-06-02")
    assert old.funding == {}  # BTC funding history starts in 2022: none is made up


def test_bounds_accept_timestamps_and_epoch_ms() -> None:
    a = load_wide(symbols=("ETHUSDT",), start=pd.Timestamp("2023-02-01", tz="UTC"),
                  end=1_675_220_400_000)  # 2023-02-01 03:00
    b = load_wide(symbols=("ETHUSDT",), start="2023-02-01 00:00", end="2023-02-01 03:00")
    pd.testing.assert_frame_equal(a.close, b.close)
    assert len(a.index) == 3


def test_select_keeps_alignment() -> None:
    w = load_wide(symbols=("BTCUSDT", "XRPUSDT"), start="2020-05-10", end="2020-05-12")
    only_btc = w.select(["BTCUSDT"])
    assert only_btc.symbols == ["BTCUSDT"]
    assert only_btc.index[0] == ts("2020-05-11")  # rows no selected symbol has are dropped
    assert not only_btc.close.isna().any().any()


def test_errors_name_the_problem() -> None:
    with pytest.raises(FileNotFoundError, match="DOGEUSDT"):
        load_wide(symbols=("DOGEUSDT",))
    with pytest.raises(ValueError, match="no 1h candles"):
        load_wide(symbols=("BTCUSDT",), start="2030-01-01")
    with pytest.raises(ValueError, match="repeat"):
        load_wide(symbols=("BTCUSDT", "BTCUSDT"))
