"""A TradingView-style alert (the webhook's JSON body) and the signal.v1 it becomes.

Why its own module: what an alert may say and how it maps to a Signal is the contract with
whoever writes the alert; the route (`webhook`) only adds auth, rate limits and publishing.

Validation runs with a context (`Rules`): the symbols allowed and the receipt time, so the same
body is judged the same way in a test with an injected clock. Error messages name the field and
never repeat a value (the body carries the secret).

Event time (the risk gate decides signal.v1 merged with candles in event time, see
docs/decisions/0002-risk-gate-in-event-time.md). A candle's event time is its close time, and a
trend signal carries the event time of the candle it was computed on. So an alert is stamped:
- without `time`: the close of the last closed candle of the timeframe at receipt
  (floor(receipt, timeframe)), so live the gate decides it at once (in order, or late when the
  merge is already past that close) instead of holding it up to a timeframe;
- with `time` (the alert's bar time, TradingView's `{{time}}`: the bar's OPEN): the close of that
  bar (floor(time, timeframe) + timeframe), the first moment everything the bar said was known.
  A bar that has not closed yet at receipt is decided when it closes. This is also what makes a
  replay place alerts at exact candles. `time` may not be in the future.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from meridian.v1 import common_pb2, signal_pb2
from meridian_common import ids
from meridian_common.money import to_str

PRODUCER = "webhook"
STRATEGY_PREFIX = "webhook:"
NAME_PATTERN = r"^[a-z0-9_-]{1,32}$"
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_PRICE = Decimal("1e15")
FUTURE_SKEW_MS = 60_000  # clock difference tolerated between the sender and this service
MIN_EPOCH_MS = 10 ** 12  # 2001-09-09: a smaller number is epoch seconds, a common mistake

DIRECTIONS: dict[str, int] = {
    "buy": common_pb2.DIRECTION_LONG, "long": common_pb2.DIRECTION_LONG,
    "sell": common_pb2.DIRECTION_SHORT, "short": common_pb2.DIRECTION_SHORT,
    "close": common_pb2.DIRECTION_FLAT, "flat": common_pb2.DIRECTION_FLAT,
    "exit": common_pb2.DIRECTION_FLAT,
}
DIRECTION_NAMES = {common_pb2.DIRECTION_LONG: "long", common_pb2.DIRECTION_SHORT: "short",
                   common_pb2.DIRECTION_FLAT: "flat"}


@dataclass(frozen=True, slots=True)
class Rules:
    """What validation needs besides the body."""

    symbols: tuple[str, ...]
    now_ms: int


def _positive_decimal(value: object) -> Decimal:
    """A decimal string or a JSON number, exactly (the body is parsed with Decimal floats, and a
    float given otherwise goes through str, never through float arithmetic)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError("must be a decimal string or a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("is not a decimal number") from None
    if not number.is_finite() or number <= 0:
        raise ValueError("must be a finite number > 0")
    if number > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE:f}")
    return number


PositiveDecimal = Annotated[
    Decimal, PlainValidator(_positive_decimal),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}],
                    "description": "Decimal > 0, as a string or a JSON number (kept exact)."})]


def _epoch_ms(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an ISO-8601 time or epoch milliseconds")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        ms = int(value)
        if ms < MIN_EPOCH_MS:
            raise ValueError("must be epoch milliseconds (this looks like seconds)")
        return ms
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("is not an ISO-8601 time (e.g. 2021-03-01T10:00:00Z) or epoch "
                             "milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise ValueError("must be an ISO-8601 time or epoch milliseconds")


EpochMs = Annotated[
    int, PlainValidator(_epoch_ms),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}],
                    "description": "ISO-8601 (UTC when no offset) or epoch milliseconds."})]


class TradingViewAlert(BaseModel):
    """The JSON body of an alert. Unknown fields are refused (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [{
        "secret": "<MERIDIAN_CONTROL_WEBHOOK_SECRET>", "name": "breakout", "symbol": "BTCUSDT",
        "action": "buy", "price": "{{close}}", "stop_loss": "29000", "id": "{{strategy.order.id}}",
        "time": "{{time}}"}]})

    secret: SecretStr = Field(description="MERIDIAN_CONTROL_WEBHOOK_SECRET: this route's auth.")
    name: str = Field(pattern=NAME_PATTERN,
                      description="Strategy name; the signal's strategy is webhook:<name>.")
    symbol: str = Field(description="One of MERIDIAN_CONTROL_WEBHOOK_SYMBOLS.")
    action: str = Field(description="buy|long, sell|short, close|flat|exit (any case).")
    price: PositiveDecimal = Field(description="Reference price (the sizing reference).")
    stop_loss: PositiveDecimal | None = Field(
        None, description="Below price for a long, above for a short; not with a close.")
    take_profit: PositiveDecimal | None = Field(
        None, description="Above price for a long, below for a short; not with a close.")
    id: str | None = Field(None, pattern=ID_PATTERN,
                           description="The alert's own id: a retry with the same id is the "
                                       "same signal. Default: the event time's bar.")
    time: EpochMs | None = Field(
        None, description="The alert's bar time (bar OPEN, TradingView {{time}}): the signal "
                          "is stamped with that bar's close. Default: the last closed candle "
                          "at receipt.")

    @field_validator("symbol")
    @classmethod
    def _allowed_symbol(cls, value: str, info: ValidationInfo) -> str:
        rules = _rules(info)
        if value not in rules.symbols:
            raise ValueError(f"must be one of {', '.join(rules.symbols)}")
        return value

    @field_validator("action")
    @classmethod
    def _known_action(cls, value: str) -> str:
        action = value.strip().lower()
        if action not in DIRECTIONS:
            raise ValueError(f"must be one of {', '.join(DIRECTIONS)}")
        return action

    @field_validator("stop_loss", "take_profit")
    @classmethod
    def _protective_side(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        action, price = info.data.get("action"), info.data.get("price")
        if value is None or action is None or price is None:
            return value  # absent, or the action or price already refused
        direction = DIRECTIONS[action]
        if direction == common_pb2.DIRECTION_FLAT:
            raise ValueError(f"not allowed with action {action!r} (a close has no stops)")
        below = (info.field_name == "stop_loss") == (direction == common_pb2.DIRECTION_LONG)
        if below and not value < price:
            raise ValueError(f"must be below price for a {DIRECTION_NAMES[direction]}")
        if not below and not value > price:
            raise ValueError(f"must be above price for a {DIRECTION_NAMES[direction]}")
        return value

    @field_validator("time")
    @classmethod
    def _not_future(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value > _rules(info).now_ms + FUTURE_SKEW_MS:
            raise ValueError("is in the future")
        return value

    @property
    def direction(self) -> int:
        return DIRECTIONS[self.action]

    @property
    def strategy(self) -> str:
        return STRATEGY_PREFIX + self.name


def _rules(info: ValidationInfo) -> Rules:
    rules = info.context.get("rules") if isinstance(info.context, dict) else None
    if not isinstance(rules, Rules):
        raise TypeError("TradingViewAlert is validated with context={'rules': Rules(...)}")
    return rules


def event_time_ms(alert: TradingViewAlert, received_ms: int, timeframe_ms: int) -> int:
    """The close of the alert's bar when it names one, else of the last candle closed at
    receipt (see the module's docstring)."""
    if alert.time is not None:
        return alert.time - alert.time % timeframe_ms + timeframe_ms
    return received_ms - received_ms % timeframe_ms


def signal_id(alert: TradingViewAlert, exchange: str, event_ms: int) -> str:
    """Deterministic from (name, symbol, direction, event time, the alert's id): a retried
    alert has the same id, so the control plane and the risk gate each take it once.

    The event time is always part of it, the alert's id only tells alerts of one bar apart:
    TradingView's ids repeat (`{{strategy.order.id}}` is an order's name, such as "Long", on
    every entry), so an id alone would make every later entry a duplicate of the first. The
    direction rather than the action's word, so 'buy' and 'long' for one bar are one signal."""
    h = ids.digest("webhook", alert.name, exchange, alert.symbol, alert.direction, event_ms,
                   alert.id or "", size=8)
    return f"webhook:{alert.name}:{alert.symbol}:{event_ms}:{h}"


def to_signal(alert: TradingViewAlert, exchange: str, event_ms: int) -> signal_pb2.Signal:
    """The Signal, filled as the trend signals are (strength and confidence 1: no model)."""
    price = to_str(alert.price)
    return signal_pb2.Signal(
        meta=common_pb2.Meta(id=signal_id(alert, exchange, event_ms),
                             cause_id=f"alert:{alert.id}" if alert.id else "",
                             event_time_ms=event_ms, producer=PRODUCER),
        exchange=exchange, symbol=alert.symbol, strategy=alert.strategy,
        direction=alert.direction,  # type: ignore[arg-type]
        strength=1.0, confidence=1.0, model_version="", reference_price=price,
        stop_loss=to_str(alert.stop_loss) if alert.stop_loss is not None else "",
        take_profit=to_str(alert.take_profit) if alert.take_profit is not None else "",
        reason=f"webhook {alert.name}: {alert.action} at {price}")


def field_errors(errors: list[Any], secret: str) -> list[dict[str, str]]:
    """pydantic's errors as {field, error}, without the input values (the body carries the
    secret, and a value echoed back could be it pasted in the wrong field). An unknown field is
    named, as sent, unless its name holds the secret (then "***")."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        field = ".".join(loc) or "body"
        if secret in field:
            field = "***"
        if err.get("type") == "extra_forbidden":
            message = "unknown field (allowed: " + ", ".join(TradingViewAlert.model_fields) + ")"
        else:
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": field, "error": message.replace(secret, "***")})
    return out


def known_fields(errors: list[dict[str, str]]) -> list[str]:
    """The bad fields for a log line: the model's own names, any other as "<unknown>" (a log
    line never carries what a client chose to send)."""
    return [e["field"] if e["field"] in TradingViewAlert.model_fields else "<unknown>"
            for e in errors]


def describe(errors: list[dict[str, str]]) -> str:
    return "invalid alert: " + "; ".join(f"{e['field']}: {e['error']}" for e in errors)


_SAFE = re.compile(NAME_PATTERN)


def loggable_name(body: object, secret: str) -> str:
    """The alert's name for a log line when it is a valid one, else '-' (a refused body's
    fields are not logged: one of them may be the secret)."""
    name = body.get("name") if isinstance(body, dict) else None
    ok = isinstance(name, str) and _SAFE.match(name) and secret not in name
    return name if ok else "-"  # type: ignore[return-value]


def secret_elsewhere(body: dict[str, Any], secret: str) -> list[dict[str, str]]:
    """Fields other than `secret` whose name or text holds the secret: refused, since each
    of them may end up in the signal, a log line or an answer."""
    out = []
    for key, value in body.items():
        if key == "secret":
            continue
        if secret in key or (isinstance(value, str) and secret in value):
            out.append({"field": "***" if secret in key else key,
                        "error": "must not contain the secret"})
    return out
