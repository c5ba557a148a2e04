"""Ingest's two replay sources agree: the CSV files loaded into PostgreSQL and replayed from a DB
range give byte-identical md.candle.v1 messages, and loading twice is idempotent."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from google.protobuf.message import Message

from meridian_common import codec, config, db
from meridian_ingest.commands import candle_stream
from meridian_ingest.settings import IngestSettings
from meridian_ingest.sources import Routed
from meridian_ingest.store import load_csv

pytestmark = pytest.mark.integration

ENV = {"MERIDIAN_INGEST_SYMBOLS": "BTCUSDT,LTCUSDT", "MERIDIAN_INGEST_START": "2021-04-20",
       "MERIDIAN_INGEST_END": "2021-04-27"}  # spans the 2021-04-20 and 04-25 outages


def test_db_range_replays_exactly_what_the_csv_holds(new_database: Callable[[str], str]) -> None:
    url = new_database("ingest")
    db.migrate(url)
    settings = config.load(IngestSettings, ENV)
    loaded = load_csv(url, "binance", settings.symbols, "1h", None, settings.start_ms,
                      settings.end_ms)
    again = load_csv(url, "binance", settings.symbols, "1h", None, settings.start_ms,
                     settings.end_ms)
    assert loaded == again == 2 * (7 * 24 - 2 - 3)
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from candles").fetchone() == (loaded,)

    common = config.load(config.CommonSettings, {"MERIDIAN_DATABASE_URL": url})
    from_csv = [codec.encode(_message(c)) for c in candle_stream(common, settings)]
    from_db = [codec.encode(_message(c)) for c in candle_stream(
        common, config.load(IngestSettings, {**ENV, "MERIDIAN_INGEST_SOURCE": "db"}))]
    assert len(from_csv) == loaded + 2  # and one start watermark per symbol
    assert from_db == from_csv


def _message(item: object) -> Message:
    return item.message if isinstance(item, Routed) else item  # type: ignore[return-value]


def test_db_source_without_database_url_is_a_clear_error() -> None:
    settings = config.load(IngestSettings, {**ENV, "MERIDIAN_INGEST_SOURCE": "db"})
    common = config.load(config.CommonSettings, {})
    with pytest.raises(config.ConfigError, match="MERIDIAN_DATABASE_URL is required"):
        list(candle_stream(common, settings))
