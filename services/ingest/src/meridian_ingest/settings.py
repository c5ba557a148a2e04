"""Ingest settings (prefix MERIDIAN_INGEST_)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")


def parse_time_ms(value: str) -> int:
    """'2021-01-01' or '2021-01-01T12:00:00Z' (UTC) -> epoch ms."""
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date or datetime (e.g. 2021-01-01)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_INGEST_", extra="forbid", frozen=True)

    source: Literal["csv", "db"] = Field(
        "csv", description="Replay source: the shared CSV files or the candles table.")
    data_dir: Path | None = Field(None, description="CSV directory (default: ../shared/data).")
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_SYMBOLS, description="Comma-separated symbols to replay.")
    timeframe: str = Field("1h", pattern=r"^\d+[mhdw]$", description="Candle timeframe.")
    start: str | None = Field(None, description="First candle open time (UTC ISO), inclusive.")
    end: str | None = Field(None, description="Last candle open time (UTC ISO), exclusive.")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(s.strip() for s in value.split(",") if s.strip())
        if not value:
            raise ValueError("at least one symbol is required")
        return value

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time_ms(value)
        return value

    @property
    def start_ms(self) -> int | None:
        return parse_time_ms(self.start) if self.start else None

    @property
    def end_ms(self) -> int | None:
        return parse_time_ms(self.end) if self.end else None
