"""Control plane settings (prefix MERIDIAN_CONTROL_). Tokens are secrets: they never print.

The database is the common MERIDIAN_DATABASE_URL (`CommonSettings.database_url`): the control
plane reads the tables the ledger and the risk gate write, and moves the promoted marks of
`models` and `active_configs`.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @field_validator("token", "read_token")
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
