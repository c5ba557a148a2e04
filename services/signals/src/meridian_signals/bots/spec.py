"""The bots file: a TOML list of grid and DCA bots, validated into `BotSpec`s before the start.

One `[[bots]]` table per bot. Every bot has `bot_id` (the prefix of its client order ids,
1..16 characters of [0-9a-z] in words joined by '-'), `kind` ("grid" or "dca"), `exchange`
and `symbol` (its key on the bus is "exchange:symbol"), and its market's rules: `tick`, `lot`
(required), `min_qty`, `min_notional` (default 0). Optionally `start`: the bot starts on the
first candle opening at or after it (a TOML date-time with its UTC offset, or epoch
milliseconds); without it, on the first candle the host reads. The other keys are the fields
of `GridParams` or `DcaParams`, by the same names (their docstrings give the meaning):

    [[bots]]
    bot_id = "grid-btc"
    kind = "grid"
    exchange = "binance"
    symbol = "BTCUSDT"
    start = 2026-12-08T00:00:00Z
    tick = "0.01"
    lot = "0.00001"
    min_notional = "5"
    lower = "33000"
    upper = "34200"
    levels = 4
    spacing = "arithmetic"     # or "geometric"
    quantity = "0.01"          # base per slot; or quote = "100" (quote currency per slot)
    initial_buy = true
    trailing_up = false
    trailing_down = false
    max_shifts = 0

    [[bots]]
    bot_id = "dca-eth"
    kind = "dca"
    exchange = "binance"
    symbol = "ETHUSDT"
    tick = "0.01"
    lot = "0.0001"
    base_quote = "100"
    safety_quote = "100"
    deviation = "0.01"         # fractions: 0.01 = 1 %
    take_profit = "0.015"
    max_safety_orders = 3
    step_scale = "1.5"
    volume_scale = "2"
    stop_loss = "0.1"          # optional
    cooldown_candles = 2
    max_cycles = 10            # optional

Decimals are written as strings or integers, never as TOML floats: a float is already rounded
in binary when it is read, and money here is exact. Any problem fails the whole file before
the service starts, naming the bot and the key: an unknown key (a typo must not fall back to a
default), a missing or mistyped value, a value the parameters refuse (their own message,
prefixed with "bots[<bot_id>]."), a bot id used twice, and two bots on one exchange:symbol.
The last is a rule of the host, not a taste: the risk gate keeps one book per symbol and the
executor one position, so two bots on a symbol would trade against each other's inventory
(a grid's sell could sell what the DCA bot bought).

A running bot's parameters are not changed in place: its state is rebuilt from the candles and
fills at every start, so new parameters would be replayed over old fills (other orders, other
ids). Give the new parameters a new bot_id and a `start` in the future.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from meridian_common import topics, venues
from meridian_common.money import dec
from meridian_common.sizing import MarketRules
from meridian_common.strategy.dca import DcaBot, DcaParams
from meridian_common.strategy.funding_arb import FundingArbParams
from meridian_common.strategy.funding_arb_bot import FundingArbBot, FundingArbBotParams
from meridian_common.strategy.grid import GridBot, GridParams
from meridian_common.strategy.intents import MarketsBot, OneMarket, check_bot_id

Kind = Literal["grid", "dca", "funding-arb"]
# Client order ids of the signals' orders start with "mrd-" (`meridian_common.ids`); a bot
# whose ids began the same way would take their fills for its own.
RESERVED_PREFIX = "mrd"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BotSpecError(ValueError):
    """A bots file the host cannot run; the message names the bot and the key."""


def _decimal(where: str, value: object) -> Decimal:
    """`money.dec` (exact: strings and integers), with a TOML float refused by name."""
    if isinstance(value, float):
        raise BotSpecError(f"{where}: {value!r} is a TOML float; write decimals as strings "
                           f"(\"{value}\") or integers, so the value is exact")
    try:
        return dec(value, where)  # type: ignore[arg-type]
    except ValueError as exc:
        raise BotSpecError(str(exc)) from None


def _integer(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BotSpecError(f"{where}: expected an integer, got {type(value).__name__} "
                           f"{value!r}")
    return value


def _boolean(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise BotSpecError(f"{where}: expected true or false, got {type(value).__name__} "
                           f"{value!r}")
    return value


def _rate(where: str, value: object) -> float:
    """A rate or weight (the rules compute in floats): written as a decimal like money."""
    return float(_decimal(where, value))


def _steps(where: str, value: object) -> tuple[tuple[Decimal, Decimal], ...]:
    """drawdown_steps: an array of [drawdown, multiplier] pairs of decimals."""
    if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 2
                                              for v in value):
        raise BotSpecError(f"{where}: expected an array of [drawdown, multiplier] pairs, e.g. "
                           f'[["0.01", "0.5"], ["0.02", "0"]], got {value!r}')
    return tuple((_decimal(f"{where}[{i}][0]", a), _decimal(f"{where}[{i}][1]", b))
                 for i, (a, b) in enumerate(value))


def _string(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise BotSpecError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    return value


Parse = Callable[[str, object], Any]

# Every field of the parameter classes but bot_id and rules, with how its value is read (a
# test checks these cover the dataclasses' fields exactly, so a new field is reachable).
GRID_FIELDS: dict[str, Parse] = {
    "lower": _decimal, "upper": _decimal, "levels": _integer, "spacing": _string,
    "quantity": _decimal, "quote": _decimal, "initial_buy": _boolean,
    "trailing_up": _boolean, "trailing_down": _boolean, "max_shifts": _integer,
}
DCA_FIELDS: dict[str, Parse] = {
    "base_quote": _decimal, "safety_quote": _decimal, "deviation": _decimal,
    "take_profit": _decimal, "max_safety_orders": _integer, "step_scale": _decimal,
    "volume_scale": _decimal, "stop_loss": _decimal, "cooldown_candles": _integer,
    "max_cycles": _integer,
}
# FundingArbParams' fields; `capital` and `perp_exchange` are the pair's own (ARB_EXTRA).
ARB_FIELDS: dict[str, Parse] = {
    "entry_rate": _rate, "exit_rate": _rate, "allow_reverse": _boolean, "improved": _boolean,
    "fast_span": _integer, "slow_span": _integer, "persistence_window": _integer,
    "level_full": _rate, "trend_scale": _rate, "weight_level": _rate, "weight_trend": _rate,
    "weight_persistence": _rate, "entry_score": _rate, "exit_score": _rate,
    "notional": _decimal, "min_scale": _decimal, "max_scale": _decimal,
    "exposure_cap": _decimal, "drawdown_steps": _steps,
}
ARB_EXTRA = ("capital", "perp_exchange")
RULE_FIELDS = ("tick", "lot", "min_qty", "min_notional")
COMMON_FIELDS = ("bot_id", "kind", "exchange", "symbol", "start")
_KINDS: dict[str, tuple[type[GridParams] | type[DcaParams], dict[str, Parse]]] = {
    "grid": (GridParams, GRID_FIELDS), "dca": (DcaParams, DCA_FIELDS)}
KIND_NAMES = (*_KINDS, "funding-arb")


@dataclass(frozen=True, slots=True)
class BotSpec:
    """One configured bot: where it trades, from when, and its validated parameters.

    `exchange:symbol` is its key; a funding-arb pair's spot leg, with the perpetual leg on
    `perp_exchange:symbol` (default `<exchange>-linear`, the venue name ingest gives a USDT
    perpetual market: `meridian_common.venues`)."""

    kind: Kind
    exchange: str
    symbol: str
    params: GridParams | DcaParams | FundingArbBotParams
    start_ms: int = 0  # the first candle it hears opens at or after this
    bot_id: str = ""  # grid and DCA: their params' bot_id
    perp_exchange: str = ""

    def __post_init__(self) -> None:
        if not self.bot_id and not isinstance(self.params, FundingArbBotParams):
            object.__setattr__(self, "bot_id", self.params.bot_id)
        if self.kind == "funding-arb" and not self.perp_exchange:
            object.__setattr__(self, "perp_exchange", venues.venue(self.exchange, "linear"))

    @property
    def key(self) -> str:
        return topics.market_key(self.exchange, self.symbol)

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key it trades: the pair's spot leg, then its perpetual leg."""
        if self.kind == "funding-arb":
            return self.key, topics.market_key(self.perp_exchange, self.symbol)
        return (self.key,)

    def make_bot(self) -> MarketsBot:
        """A fresh bot (no candle heard yet)."""
        if isinstance(self.params, FundingArbBotParams):
            spot, perp = self.keys
            return FundingArbBot(self.bot_id, spot, perp, self.params)
        if isinstance(self.params, GridParams):
            return OneMarket(GridBot(self.params), self.key)
        return OneMarket(DcaBot(self.params), self.key)


def load(path: str | Path) -> list[BotSpec]:
    """The bots of a TOML file; BotSpecError for a file that cannot be read or run."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BotSpecError(f"{path}: cannot read the bots file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BotSpecError(f"{path}: not valid TOML: {exc}") from None
    return parse(data)


def parse(data: Mapping[str, object]) -> list[BotSpec]:
    """The bots of a parsed TOML document (`{"bots": [table, ...]}`)."""
    extra = sorted(set(data) - {"bots"})
    if extra:
        raise BotSpecError(f"unknown top-level key {extra[0]!r}: the file holds [[bots]] tables "
                           "only")
    tables = data.get("bots", [])
    if not isinstance(tables, list):
        raise BotSpecError("bots: expected an array of tables ([[bots]])")
    specs: list[BotSpec] = []
    by_id: dict[str, BotSpec] = {}
    by_key: dict[str, BotSpec] = {}
    for index, table in enumerate(tables):
        spec = _bot(index, table)
        if spec.bot_id in by_id:
            raise BotSpecError(f"bots[{spec.bot_id}]: bot_id {spec.bot_id!r} is used by two "
                               "bots (it prefixes their client order ids)")
        for key in spec.keys:
            other = by_key.get(key)
            if other is not None:
                raise BotSpecError(
                    f"bots[{spec.bot_id}]: {key} already has bot {other.bot_id!r}; one bot per "
                    "exchange:symbol (the risk gate's book and the executor's position are per "
                    "symbol)")
            by_key[key] = spec
        by_id[spec.bot_id] = spec
        specs.append(spec)
    return specs


def _bot(index: int, table: object) -> BotSpec:
    if not isinstance(table, dict):
        raise BotSpecError(f"bots[#{index}]: expected a table, got {type(table).__name__}")
    bot_id = _string(f"bots[#{index}].bot_id", table.get("bot_id", None))
    name = f"bots[{bot_id}]"
    try:
        check_bot_id(bot_id)
    except ValueError as exc:
        raise BotSpecError(f"{name}.{exc}") from None
    if bot_id.split("-")[0] == RESERVED_PREFIX:
        raise BotSpecError(f"{name}.bot_id: {bot_id!r} is reserved: client order ids starting "
                           f"with '{RESERVED_PREFIX}-' are the signals' orders")
    kind = table.get("kind")
    if kind == "funding-arb":
        return _arb(name, bot_id, table)
    if kind not in _KINDS:
        raise BotSpecError(f"{name}.kind: expected one of {', '.join(KIND_NAMES)}, got "
                           f"{kind!r}")
    cls, fields = _KINDS[kind]
    exchange, symbol, rules, values = _common(name, kind, table, fields, ())
    for f in dataclasses.fields(cls):
        if (f.name not in ("bot_id", "rules") and f.name not in values
                and f.default is dataclasses.MISSING):
            raise BotSpecError(f"{name}.{f.name}: required for a {kind} bot")
    try:
        params = cls(bot_id=bot_id, rules=rules, **values)
    except ValueError as exc:
        raise BotSpecError(f"{name}.{exc}") from None
    return BotSpec(kind, exchange, symbol, params, _start(name, table.get("start")))


def _common(name: str, kind: str, table: Mapping[str, object], fields: Mapping[str, Parse],
            extra: tuple[str, ...]) -> tuple[str, str, MarketRules, dict[str, Any]]:
    """What every kind reads the same way: no unknown key, the market, its rules, and the
    kind's parameter fields (parsed, those present only)."""
    known = (*COMMON_FIELDS, *RULE_FIELDS, *fields, *extra)
    unknown = sorted(k for k in table if k not in known)
    if unknown:
        raise BotSpecError(f"{name}: unknown key {unknown[0]!r} (a {kind} bot reads: "
                           f"{', '.join(known)})")
    exchange = _market_part(name, "exchange", table.get("exchange"))
    symbol = _market_part(name, "symbol", table.get("symbol"))
    rules = _rules(name, table)
    values = {k: parse_value(f"{name}.{k}", table[k]) for k, parse_value in fields.items()
              if k in table}
    return exchange, symbol, rules, values


def _arb(name: str, bot_id: str, table: Mapping[str, object]) -> BotSpec:
    """A funding-arb pair: FundingArbParams' fields by name, its `capital` (required: the
    base of its drawdown steps) and optionally `perp_exchange`. Both legs trade under the
    same tick/lot/min rules."""
    exchange, symbol, rules, values = _common(name, "funding-arb", table, ARB_FIELDS,
                                              ARB_EXTRA)
    perp = table.get("perp_exchange")
    perp_exchange = "" if perp is None else _market_part(name, "perp_exchange", perp)
    if "capital" not in table:
        raise BotSpecError(f"{name}.capital: required for a funding-arb bot (the equity its "
                           "drawdown steps are measured on)")
    capital = _decimal(f"{name}.capital", table["capital"])
    try:
        params = FundingArbBotParams(FundingArbParams(**values), rules, rules, capital)
    except ValueError as exc:
        raise BotSpecError(f"{name}: {exc}") from None
    spec = BotSpec("funding-arb", exchange, symbol, params, _start(name, table.get("start")),
                   bot_id=bot_id, perp_exchange=perp_exchange)
    if spec.keys[0] == spec.keys[1]:
        raise BotSpecError(f"{name}.perp_exchange: the perpetual leg must be another market "
                           f"than the spot leg ({spec.key})")
    return spec


def _market_part(name: str, field: str, value: object) -> str:
    text = _string(f"{name}.{field}", value)
    if not text or ":" in text or text != text.strip():
        raise BotSpecError(f"{name}.{field}: {text!r} must be non-empty, without ':' or "
                           "surrounding spaces (the bus key is exchange:symbol)")
    return text


def _rules(name: str, table: Mapping[str, object]) -> MarketRules:
    for required in ("tick", "lot"):
        if required not in table:
            raise BotSpecError(f"{name}.{required}: required (the market's "
                               f"{'price' if required == 'tick' else 'quantity'} step)")
    values = {k: _decimal(f"{name}.{k}", table[k]) for k in RULE_FIELDS if k in table}
    try:
        return MarketRules(**values)
    except ValueError as exc:
        raise BotSpecError(f"{name}.{exc}") from None


def _start(name: str, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:
            raise BotSpecError(f"{name}.start: {value.isoformat()} has no UTC offset; write "
                               "e.g. 2026-12-08T00:00:00Z")
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BotSpecError(f"{name}.start: expected a date-time with its UTC offset or epoch "
                           f"milliseconds >= 0, got {value!r}")
    return value
