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
