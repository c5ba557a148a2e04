"""The bots file: TOML to validated bot specs; every error names the bot and the key."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from meridian_common import config, ids
from meridian_common.strategy.dca import DcaBot, DcaParams
from meridian_common.strategy.funding_arb import FundingArbParams
from meridian_common.strategy.funding_arb_bot import FundingArbBot, FundingArbBotParams
from meridian_common.strategy.grid import GridBot, GridParams
from meridian_signals.bots import spec
from meridian_signals.bots.__main__ import load_specs
from meridian_signals.bots.settings import BotsSettings

GRID = """
[[bots]]
bot_id = "g1"
kind = "grid"
exchange = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.00001"
min_notional = 5
lower = "33000"
upper = "34200"
levels = 4
quantity = "0.01"
"""


def parse(text: str) -> list[spec.BotSpec]:
    return spec.parse(tomllib.loads(text))


def docstring_example() -> str:
    """The TOML example of spec's docstring (its indented block)."""
    doc = spec.__doc__ or ""
    block = re.search(r"\n\n((?:    .*\n|\n)+)", doc)
    assert block is not None
    return textwrap.dedent(block.group(1))


def test_the_documented_example_is_a_valid_file() -> None:
    grid, dca = parse(docstring_example())
    assert (grid.bot_id, grid.kind, grid.key) == ("grid-btc", "grid", "binance:BTCUSDT")
    assert grid.start_ms == 1_796_688_000_000  # 2026-12-08T00:00:00Z
    assert isinstance(grid.params, GridParams)
    assert grid.params.rules.min_notional == Decimal(5)
    assert grid.params.quantity == Decimal("0.01")
    assert isinstance(grid.make_bot().bot, GridBot)  # type: ignore[attr-defined]
    assert (dca.bot_id, dca.key, dca.start_ms) == ("dca-eth", "binance:ETHUSDT", 0)
    assert isinstance(dca.params, DcaParams)
    assert dca.params.stop_loss == Decimal("0.1")
    assert dca.params.max_cycles == 10
    assert dca.params.rules.lot == Decimal("0.0001")
    assert isinstance(dca.make_bot().bot, DcaBot)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("cls", "fields"), [(GridParams, spec.GRID_FIELDS),
                                             (DcaParams, spec.DCA_FIELDS)])
def test_every_parameter_is_reachable(cls: type, fields: dict[str, object]) -> None:
    assert {f.name for f in dataclasses.fields(cls)} - {"bot_id", "rules"} == set(fields)


def test_every_grid_field_reaches_the_params() -> None:
    text = GRID.replace('quantity = "0.01"', textwrap.dedent("""\
        quote = "400"
        spacing = "geometric"
        initial_buy = false
        trailing_up = true
        trailing_down = true
        max_shifts = 3
        min_qty = "0.0001"
        start = 1796688000000"""))
    (s,) = parse(text)
    assert s.start_ms == 1_796_688_000_000
    p = s.params
    assert isinstance(p, GridParams)
    assert (p.quote, p.quantity, p.spacing, p.initial_buy) == (Decimal(400), None, "geometric",
                                                               False)
    assert (p.trailing_up, p.trailing_down, p.max_shifts) == (True, True, 3)
    assert p.rules.min_qty == Decimal("0.0001")


def _with(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(("text", "message"), [
    (_with(GRID, "levels = 4", "levels = 4\nlowr = 1"), "bots[g1]: unknown key 'lowr'"),
    (_with(GRID, 'lower = "33000"', "lower = 33000.5"),
     'bots[g1].lower: 33000.5 is a TOML float; write decimals as strings ("33000.5")'),
    (_with(GRID, 'tick = "0.01"', "tick = 0.01"), "bots[g1].tick: 0.01 is a TOML float"),
    (_with(GRID, 'lower = "33000"', 'lower = "33k"'), "bots[g1].lower: '33k' is not a decimal"),
    (_with(GRID, "levels = 4", 'levels = "4"'), "bots[g1].levels: expected an integer"),
    (_with(GRID, "levels = 4", "levels = 4.0"), "bots[g1].levels: expected an integer"),
    (_with(GRID, "levels = 4", "levels = 4\ninitial_buy = 1"),
     "bots[g1].initial_buy: expected true or false"),
    # the parameters' own errors, prefixed
    (_with(GRID, 'upper = "34200"', 'upper = "33000"'),
     "bots[g1].upper (33000) must be above lower (33000)"),
    (_with(GRID, "levels = 4", "levels = 1"), "bots[g1].levels must be in [2, 500], got 1"),
    (_with(GRID, 'quantity = "0.01"', 'quantity = "0.0001"'), "bots[g1].quantity: the slot"),
    (_with(GRID, 'quantity = "0.01"', 'quantity = "0.01"\nquote = "100"'),
     "bots[g1].quantity or quote: set exactly one of them"),
    (_with(GRID, 'tick = "0.01"', 'tick = "0"'), "bots[g1].tick must be positive"),
    (_with(GRID, 'lot = "0.00001"\n', ""), "bots[g1].lot: required"),
    (_with(GRID, "levels = 4\n", ""), "bots[g1].levels: required for a grid bot"),
    (_with(GRID, 'bot_id = "g1"', 'bot_id = "Grid_1"'), "bots[Grid_1].bot_id: 'Grid_1' must be"),
    (_with(GRID, 'bot_id = "g1"', 'bot_id = "mrd"'), "bots[mrd].bot_id: 'mrd' is reserved"),
    (_with(GRID, 'bot_id = "g1"\n', ""), "bots[#0].bot_id: expected a string"),
    (_with(GRID, 'kind = "grid"', 'kind = "martingale"'),
     "bots[g1].kind: expected one of grid, dca, funding-arb"),
    (_with(GRID, 'symbol = "BTCUSDT"', 'symbol = ""'), "bots[g1].symbol: '' must be non-empty"),
    (_with(GRID, 'exchange = "binance"', 'exchange = "a:b"'), "bots[g1].exchange: 'a:b'"),
    (_with(GRID, 'symbol = "BTCUSDT"', 'symbol = "BTCUSDT"\nstart = 2026-12-08T00:00:00'),
     "bots[g1].start: 2026-12-08T00:00:00 has no UTC offset"),
    (_with(GRID, 'symbol = "BTCUSDT"', 'symbol = "BTCUSDT"\nstart = -1'), "bots[g1].start"),
    # a DCA key on a grid bot is unknown there
    (_with(GRID, "levels = 4", "levels = 4\ntake_profit = \"0.01\""),
     "bots[g1]: unknown key 'take_profit' (a grid bot reads"),
    (GRID + GRID.replace('symbol = "BTCUSDT"', 'symbol = "ETHUSDT"'),
     "bots[g1]: bot_id 'g1' is used by two bots"),
    (GRID + GRID.replace('bot_id = "g1"', 'bot_id = "g2"'),
     "bots[g2]: binance:BTCUSDT already has bot 'g1'; one bot per exchange:symbol"),
    ("[bot]\nx = 1\n", "unknown top-level key 'bot'"),
    ("bots = 3\n", "bots: expected an array of tables"),
])
def test_errors_name_the_bot_and_the_field(text: str, message: str) -> None:
    with pytest.raises(spec.BotSpecError) as err:
        parse(text)
    assert str(err.value).startswith(message), str(err.value)


def test_dca_errors_and_defaults() -> None:
    text = textwrap.dedent("""\
        [[bots]]
        bot_id = "d1"
        kind = "dca"
        exchange = "binance"
        symbol = "BTCUSDT"
        tick = "0.01"
        lot = "0.00001"
        base_quote = 1000
        safety_quote = "1000"
        deviation = "0.005"
        take_profit = "0.01"
        max_safety_orders = 2
        """)
    (s,) = parse(text)
    assert isinstance(s.params, DcaParams)
    assert (s.params.step_scale, s.params.stop_loss, s.params.max_cycles) == (1, None, None)
    with pytest.raises(spec.BotSpecError, match=re.escape(
            "bots[d1].take_profit must be a fraction in (0, 1), got 1")):
        parse(text.replace('take_profit = "0.01"', "take_profit = 1"))
    with pytest.raises(spec.BotSpecError, match=re.escape("bots[d1].deviation: required")):
        parse(text.replace('deviation = "0.005"\n', ""))


def test_reserved_prefix_is_the_signals_client_id_prefix() -> None:
    assert ids.client_order_id("sig:1").startswith(spec.RESERVED_PREFIX + "-")


def test_load_reads_a_file_and_names_it_on_errors(tmp_path: Path) -> None:
    path = tmp_path / "bots.toml"
    path.write_text(GRID, encoding="utf-8")
    (s,) = spec.load(path)
    assert s.key == "binance:BTCUSDT"
    path.write_text(GRID + "levels = [", encoding="utf-8")
    with pytest.raises(spec.BotSpecError, match=r"bots\.toml: not valid TOML"):
        spec.load(path)
    with pytest.raises(spec.BotSpecError, match="cannot read the bots file"):
        spec.load(tmp_path / "missing.toml")


def test_service_refuses_to_start_without_bots(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="MERIDIAN_BOTS_CONFIG is empty"):
        load_specs(config.load(BotsSettings, environ={}))
    empty = tmp_path / "none.toml"
    empty.write_text("# no bots yet\n", encoding="utf-8")
    settings = config.load(BotsSettings, environ={"MERIDIAN_BOTS_CONFIG": str(empty)})
    with pytest.raises(config.ConfigError, match=r"has no \[\[bots\]\] table"):
        load_specs(settings)
    bad = tmp_path / "bad.toml"
    bad.write_text(GRID.replace("levels = 4", "levels = 1"), encoding="utf-8")
    with pytest.raises(config.ConfigError, match=re.escape(
            "MERIDIAN_BOTS_CONFIG: bots[g1].levels must be in")):
        load_specs(config.load(BotsSettings, environ={"MERIDIAN_BOTS_CONFIG": str(bad)}))
    good = tmp_path / "good.toml"
    good.write_text(GRID, encoding="utf-8")
    (s,) = load_specs(config.load(BotsSettings, environ={"MERIDIAN_BOTS_CONFIG": str(good)}))
    assert s.bot_id == "g1"
    with pytest.raises(config.ConfigError, match="MERIDIAN_BOTS_CONFG"):
        config.load(BotsSettings, environ={"MERIDIAN_BOTS_CONFG": str(good)})


ARB = """
[[bots]]
bot_id = "arb-btc"
kind = "funding-arb"
exchange = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.001"
min_notional = "5"
capital = "50000"
entry_rate = "0.0001"
exit_rate = "0.00003"
improved = true
fast_span = 4
notional = "12000.5"
exposure_cap = "30000"
drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]
"""


def test_a_funding_arb_pair_parses() -> None:
    (s,) = parse(ARB)
    assert (s.kind, s.bot_id, s.exchange, s.symbol) == ("funding-arb", "arb-btc", "binance",
                                                        "BTCUSDT")
    assert s.perp_exchange == "binance-linear"
    assert s.key == "binance:BTCUSDT"
    assert s.keys == ("binance:BTCUSDT", "binance-linear:BTCUSDT")
    assert s.start_ms == 0
    assert isinstance(s.params, FundingArbBotParams)
    rules = s.params.rules
    assert isinstance(rules.entry_rate, float)
    assert rules.entry_rate == 0.0001
    assert isinstance(rules.exit_rate, float)
    assert rules.exit_rate == 0.00003
    assert (rules.improved, rules.fast_span, rules.allow_reverse) == (True, 4, False)
    assert isinstance(rules.notional, Decimal)
    assert rules.notional == Decimal("12000.5")
    assert rules.exposure_cap == Decimal(30000)
    assert rules.drawdown_steps == ((Decimal("0.05"), Decimal("0.5")),
                                    (Decimal("0.1"), Decimal(0)))
    assert all(isinstance(x, Decimal) for step in rules.drawdown_steps for x in step)
    # unset fields keep FundingArbParams' defaults
    default = FundingArbParams()
    assert (rules.slow_span, rules.entry_score, rules.min_scale) == (
        default.slow_span, default.entry_score, default.min_scale)
    assert s.params.capital == Decimal(50000)
    # one set of market rules for both legs
    assert s.params.spot == s.params.perp
    assert (s.params.spot.tick, s.params.spot.lot, s.params.spot.min_notional) == (
        Decimal("0.01"), Decimal("0.001"), Decimal(5))


def test_perp_exchange_moves_the_perpetual_leg() -> None:
    (s,) = parse(_with(ARB, 'symbol = "BTCUSDT"',
                       'symbol = "BTCUSDT"\nperp_exchange = "bybit-linear"\n'
                       "start = 2026-12-08T00:00:00Z"))
    assert s.perp_exchange == "bybit-linear"
    assert s.keys == ("binance:BTCUSDT", "bybit-linear:BTCUSDT")
    assert s.start_ms == 1_796_688_000_000
    bot = s.make_bot()
    assert isinstance(bot, FundingArbBot)
    assert (bot.spot_key, bot.perp_key) == s.keys


def test_a_funding_arb_pair_makes_its_two_key_bot() -> None:
    (s,) = parse(ARB)
    bot = s.make_bot()
    assert isinstance(bot, FundingArbBot)
    assert bot.bot_id == "arb-btc"
    assert bot.keys == ("binance:BTCUSDT", "binance-linear:BTCUSDT")
    assert bot.funding_keys == ("binance-linear:BTCUSDT",)
    assert bot.params is s.params
    assert bot.equity() == Decimal(50000)
    assert s.make_bot() is not bot  # a fresh bot each time


def test_every_funding_arb_parameter_is_reachable() -> None:
    assert {f.name for f in dataclasses.fields(FundingArbParams)} == set(spec.ARB_FIELDS)
    assert not set(spec.ARB_EXTRA) & set(spec.ARB_FIELDS)
    # each field is read into the type of its default (floats for the rules' rates)
    readers = {float: spec._rate, bool: spec._boolean, int: spec._integer,
               Decimal: spec._decimal, tuple: spec._steps}
    for f in dataclasses.fields(FundingArbParams):
        assert spec.ARB_FIELDS[f.name] is readers[type(f.default)], f.name


def _toml(value: object) -> str:
    """A FundingArbParams default as the bots file writes it (decimals as strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(f'["{a}", "{b}"]' for a, b in value) + "]"
    return f'"{value}"'


def test_every_funding_arb_field_written_out_gives_the_same_params() -> None:
    default = FundingArbParams()
    lines = "\n".join(f"{f.name} = {_toml(getattr(default, f.name))}"
                      for f in dataclasses.fields(FundingArbParams))
    text = textwrap.dedent("""\
        [[bots]]
        bot_id = "arb"
        kind = "funding-arb"
        exchange = "binance"
        symbol = "ETHUSDT"
        tick = "0.01"
        lot = "0.0001"
        capital = 1000
        """) + lines + "\n"
    (s,) = parse(text)
    assert isinstance(s.params, FundingArbBotParams)
    assert s.params.rules == default
    assert s.params.capital == Decimal(1000)


GRID_ON_PERP = _with(_with(GRID, 'exchange = "binance"', 'exchange = "binance-linear"'),
                     'bot_id = "g1"', 'bot_id = "g-perp"')


@pytest.mark.parametrize(("text", "message"), [
    (_with(ARB, 'capital = "50000"\n', ""),
     "bots[arb-btc].capital: required for a funding-arb bot"),
    (_with(ARB, 'capital = "50000"', 'capital = "0"'),
     "bots[arb-btc]: capital must be positive, got 0"),
    (_with(ARB, "improved = true", "improved = true\nentry_rat = 1"),
     "bots[arb-btc]: unknown key 'entry_rat' (a funding-arb bot reads"),
    # a grid key is unknown on a pair
    (_with(ARB, "improved = true", "improved = true\nlevels = 4"),
     "bots[arb-btc]: unknown key 'levels' (a funding-arb bot reads"),
    (_with(ARB, 'entry_rate = "0.0001"', "entry_rate = 0.0001"),
     'bots[arb-btc].entry_rate: 0.0001 is a TOML float; write decimals as strings ("0.0001")'),
    (_with(ARB, 'exit_rate = "0.00003"', 'exit_rate = "3bp"'),
     "bots[arb-btc].exit_rate: '3bp' is not a decimal"),
    (_with(ARB, "improved = true", "improved = true\nallow_reverse = true"),
     "bots[arb-btc]: rules.allow_reverse: the reverse pair shorts spot, which needs a borrow"),
    (_with(ARB, "improved = true", 'improved = "yes"'),
     "bots[arb-btc].improved: expected true or false"),
    (_with(ARB, "fast_span = 4", 'fast_span = "4"'),
     "bots[arb-btc].fast_span: expected an integer"),
    # the rules' own checks, prefixed
    (_with(ARB, 'exit_rate = "0.00003"', 'exit_rate = "0.0002"'),
     "bots[arb-btc]: need 0 <= exit_rate (0.0002) < entry_rate (0.0001)"),
    (_with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
           'drawdown_steps = [["0.05", "0.5", "1"]]'),
     "bots[arb-btc].drawdown_steps: expected an array of [drawdown, multiplier] pairs"),
    (_with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
           'drawdown_steps = ["0.05", "0.5"]'),
     "bots[arb-btc].drawdown_steps: expected an array of [drawdown, multiplier] pairs"),
    (_with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
           'drawdown_steps = "0.05:0.5"'),
     "bots[arb-btc].drawdown_steps: expected an array of [drawdown, multiplier] pairs"),
    (_with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
           'drawdown_steps = [["0.05", "0.5"], ["0.1", 0.0]]'),
     "bots[arb-btc].drawdown_steps[1][1]: 0.0 is a TOML float"),
    (_with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
           'drawdown_steps = [["0.1", "0.5"], ["0.05", "0"]]'),
     "bots[arb-btc]: drawdown_steps: thresholds ascending in (0, 1)"),
    (_with(ARB, 'symbol = "BTCUSDT"', 'symbol = "BTCUSDT"\nperp_exchange = "binance"'),
     "bots[arb-btc].perp_exchange: the perpetual leg must be another market than the spot "
     "leg (binance:BTCUSDT)"),
    (_with(ARB, 'symbol = "BTCUSDT"', 'symbol = "BTCUSDT"\nperp_exchange = "a:b"'),
     "bots[arb-btc].perp_exchange: 'a:b' must be non-empty"),
    (_with(ARB, 'symbol = "BTCUSDT"', 'symbol = "BTCUSDT"\nperp_exchange = 1'),
     "bots[arb-btc].perp_exchange: expected a string"),
    (_with(ARB, 'lot = "0.001"\n', ""), "bots[arb-btc].lot: required"),
    # one bot per key, the perpetual leg included, in either order
    (ARB + GRID_ON_PERP,
     "bots[g-perp]: binance-linear:BTCUSDT already has bot 'arb-btc'; one bot per "
     "exchange:symbol"),
    (GRID_ON_PERP + ARB,
     "bots[arb-btc]: binance-linear:BTCUSDT already has bot 'g-perp'; one bot per "
     "exchange:symbol"),
    (GRID + ARB, "bots[arb-btc]: binance:BTCUSDT already has bot 'g1'"),
    (ARB + _with(ARB, 'bot_id = "arb-btc"', 'bot_id = "arb-2"'),
     "bots[arb-2]: binance:BTCUSDT already has bot 'arb-btc'"),
    (ARB + _with(ARB, 'symbol = "BTCUSDT"', 'symbol = "ETHUSDT"'),
     "bots[arb-btc]: bot_id 'arb-btc' is used by two bots"),
])
def test_funding_arb_errors_name_the_bot_and_the_field(text: str, message: str) -> None:
    with pytest.raises(spec.BotSpecError) as err:
        parse(text)
    assert str(err.value).startswith(message), str(err.value)


def test_a_malformed_drawdown_steps_error_shows_the_value() -> None:
    text = _with(ARB, 'drawdown_steps = [["0.05", "0.5"], ["0.1", "0"]]',
                 'drawdown_steps = [["0.05"]]')
    with pytest.raises(spec.BotSpecError) as err:
        parse(text)
    assert str(err.value).endswith("got [['0.05']]"), str(err.value)


def test_a_pair_next_to_a_grid_on_other_keys_parses() -> None:
    grid_eth = _with(GRID, 'symbol = "BTCUSDT"', 'symbol = "ETHUSDT"')
    arb, grid = parse(ARB + grid_eth)
    assert arb.keys == ("binance:BTCUSDT", "binance-linear:BTCUSDT")
    assert grid.keys == ("binance:ETHUSDT",)
    assert isinstance(grid.make_bot().bot, GridBot)  # type: ignore[attr-defined]
