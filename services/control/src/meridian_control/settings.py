"""Control plane settings (prefix MERIDIAN_CONTROL_). Tokens are secrets: they never print.

The database is the common MERIDIAN_DATABASE_URL (`CommonSettings.database_url`): the control
plane reads the tables the ledger and the risk gate write, and moves the promoted marks of
`models` and `active_configs`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_WEBHOOK_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT")
# A webhook secret travels in the body of every alert through the sender's servers and is
# guessed without any rate limit on wrong guesses: short ones are refused.
MIN_WEBHOOK_SECRET = 16


class ControlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERIDIAN_CONTROL_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1,
                      description="Address the HTTP API listens on (0.0.0.0 for every interface).")
    port: int = Field(8080, ge=1, le=65535, description="Port the HTTP API listens on.")
    token: SecretStr = Field(
        description="Bearer token for every route, including the ones that change state "
                    "(POST /v1/kill-switch). Required: the service does not start without it. "
                    "Secret.")
    read_token: SecretStr | None = Field(
        None, description="Bearer token for the read-only routes (GET) only. Optional. Secret.")
    kafka_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="Longest wait for Kafka per request (and for the check at start-up).")
    db_timeout_s: float = Field(
        5.0, gt=0, le=300,
        description="Longest wait for PostgreSQL per request; past it the route answers 503.")
    push_s: float = Field(
        1.0, ge=0.05, le=3600,
        description="Seconds between the database polls of each /v1/ws/portfolio connection; a "
                    "message is sent only when the positions or the latest equity changed.")
    initial_capital: Decimal = Field(
        Decimal("10000"), gt=0,
        description="The ledger's starting equity (set it to MERIDIAN_LEDGER_INITIAL_CAPITAL: "
                    "the database does not store it); account equity = this + net PnL.")
    orders_scan: int = Field(
        2000, ge=1, le=1_000_000,
        description="Records of order.event.v1 read back from the end of each partition by GET "
                    "/v1/orders (orders are not stored in the database).")

    webhook_secret: SecretStr | None = Field(
        None, description="Shared secret of POST /v1/webhook/tradingview, sent as the field "
                          "`secret` of the alert's JSON body (TradingView cannot set headers). "
                          f"Unset: the route answers 404. At least {MIN_WEBHOOK_SECRET} "
                          "characters, different from both tokens. Secret.")
    webhook_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_WEBHOOK_SYMBOLS,
        description="Comma-separated symbols an alert may name (on MERIDIAN_EXCHANGE); the "
                    "signals service must cover them too, since the risk gate waits for each "
                    "symbol's signal stream.")
    webhook_market_type: Literal["spot", "linear"] = Field(
        "spot", description="The market alerts trade, named as ingest names it: spot keys "
                            "signals MERIDIAN_EXCHANGE:SYMBOL, linear (USDT perpetuals) "
                            "<exchange>-linear:SYMBOL. Set it to the pipeline's "
                            "MERIDIAN_INGEST_MARKET_TYPE, or the gate decides the alerts on a "
                            "market with no candles.")
    webhook_timeframe: str = Field(
        "1h", pattern=r"^[1-9]\d*[mhd]$",
        description="Candle timeframe an alert's event time is aligned to (the close of the "
                    "last closed candle at receipt, or of the bar of the alert's `time`).")
    webhook_rate_per_min: int = Field(
        6, ge=1, le=10_000,
        description="Alerts accepted per minute per (name, symbol), as a token bucket of that "
                    "size; past it 429 with Retry-After.")
    webhook_global_rate_per_min: int = Field(
        60, ge=1, le=100_000,
        description="Alerts accepted per minute over every name and symbol (token bucket).")
    webhook_dedupe: int = Field(
        10_000, ge=1, le=1_000_000,
        description="Signal ids of recent alerts remembered (LRU): a retried alert answers 200 "
                    "duplicate and is not published again.")

    @field_validator("webhook_symbols", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(s.strip() for s in value.split(",") if s.strip())
        if not value:
            raise ValueError("at least one symbol is required")
        return value

    @field_validator("token", "read_token", "webhook_secret")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # An HTTP header value carries no surrounding whitespace (a token read from a file often
        # ends in a newline), so the token is compared without it.
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("must not be empty or blank")
        return SecretStr(token)

    @field_validator("read_token")
    @classmethod
    def _differs_from_token(cls, value: SecretStr | None,
                            info: ValidationInfo) -> SecretStr | None:
        token = info.data.get("token")
        if value is not None and token is not None and \
                value.get_secret_value() == token.get_secret_value():
            raise ValueError("must differ from MERIDIAN_CONTROL_TOKEN (the read-only token "
                             "would otherwise grant write access)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _strong_and_distinct(cls, value: SecretStr | None,
                             info: ValidationInfo) -> SecretStr | None:
        # The alert's sender (TradingView) stores and transmits this secret: were it a bearer
        # token, whoever reads an alert could engage the kill switch or promote a model.
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < MIN_WEBHOOK_SECRET:
            raise ValueError(f"must be at least {MIN_WEBHOOK_SECRET} characters")
        for name in ("token", "read_token"):
            token = info.data.get(name)
            if token is not None and secret == token.get_secret_value():
                raise ValueError(f"must differ from MERIDIAN_CONTROL_{name.upper()} (the alert's "
                                 "sender would otherwise hold an API token)")
        return value
