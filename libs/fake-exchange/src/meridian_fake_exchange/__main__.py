"""Run the fake exchange on its own, for benchmarks and manual runs:

    python -m meridian_fake_exchange --port 8765 --symbols BTCUSDT,ETHUSDT \
        --start 2021-01-01 --speed 3600

It prints its base URL on the first line of stdout (so a parent process can read it, also with
--port 0) and runs until SIGINT/SIGTERM. Faults and the clock are driven via /_admin/... , and
the trading truth is read from GET /_admin/orders (executions, positions, wallet).
Trading accounts: --api-key KEY:SECRET (repeatable; default the package's TEST_API_KEY /
TEST_API_SECRET), each a Bybit account and a separate Binance USDT-M account starting with
--usdt USDT; --no-timestamp-check accepts signed requests
whatever their timestamp (for clients that cannot follow a jumping fake clock).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from meridian_fake_exchange.auth import TEST_API_KEY, TEST_API_SECRET
from meridian_fake_exchange.clock import FakeClock
from meridian_fake_exchange.server import FakeExchange


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO date/datetime (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _key_pair(text: str) -> tuple[str, str]:
    key, sep, secret = text.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError("expected KEY:SECRET")
    return key, secret


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m meridian_fake_exchange",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--symbols", type=_csv, default=("BTCUSDT", "ETHUSDT"))
    parser.add_argument("--timeframes", type=_csv, default=("1m", "1h"))
    parser.add_argument("--start", type=parse_time_ms, default=parse_time_ms("2021-01-01"),
                        help="fake start time: epoch ms or ISO date (UTC)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="fake seconds per real second (3600: one hour per second)")
    parser.add_argument("--paused", action="store_true", help="start with the clock paused")
    parser.add_argument("--data-dir", default=None, help="default: the shared data directory")
    parser.add_argument("--rate-limit-per-s", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", type=_key_pair, action="append", dest="api_keys",
                        metavar="KEY:SECRET", help="a trading account (repeatable); default: "
                        "the package's TEST_API_KEY:TEST_API_SECRET")
    parser.add_argument("--usdt", type=_amount, default=Decimal(100_000),
                        help="starting USDT of every account (default 100000)")
    parser.add_argument("--no-timestamp-check", action="store_true",
                        help="accept signed requests whatever their X-BAPI-TIMESTAMP")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    clock = FakeClock(args.start, args.speed, paused=args.paused)
    server = FakeExchange(args.symbols, args.timeframes, clock, args.data_dir, host=args.host,
                          port=args.port, rate_limit_per_s=args.rate_limit_per_s,
                          seed=args.seed,
                          api_keys=dict(args.api_keys or [(TEST_API_KEY, TEST_API_SECRET)]),
                          balances={"USDT": args.usdt},
                          check_timestamp=not args.no_timestamp_check)
    await server.start()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"meridian_fake_exchange: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
