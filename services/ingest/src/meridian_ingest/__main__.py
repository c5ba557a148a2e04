"""`python -m meridian_ingest [replay|live|backfill|gaps|repair|load-csv]`.

Without a command it runs MERIDIAN_INGEST_MODE (replay by default, live in deployments).
Every command reads the same settings (MERIDIAN_INGEST_*); `meridian config` lists them.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from meridian_common import config, logs, tracing
from meridian_ingest import commands
from meridian_ingest.backfill import log_progress
from meridian_ingest.exchange.client import ConfigurationError, ExchangeCallError
from meridian_ingest.settings import IngestSettings

log = logging.getLogger("meridian_ingest")

COMMANDS = ("replay", "live", "backfill", "gaps", "repair", "load-csv")


def _run(command: str, common: config.CommonSettings, settings: IngestSettings) -> None:
    if command == "replay":
        asyncio.run(commands.run_replay(common, settings))
    elif command == "live":
        asyncio.run(commands.run_live(common, settings))
    elif command == "backfill":
        asyncio.run(commands.run_backfill(common, settings, progress=log_progress))
    elif command == "gaps":
        for gap in commands.find_gaps(common, settings):
            print(f"{gap.symbol}\tafter {gap.after_ms}\tmissing {gap.missing}")
    elif command == "repair":
        for fixed in asyncio.run(commands.run_repair(common, settings)):
            print(f"{fixed.gap.symbol}\tafter {fixed.gap.after_ms}\trecovered {fixed.recovered}"
                  f"\tstill missing {fixed.still_missing}")
    else:
        rows = commands.load_csv(common, settings)
        log.info("candles loaded", extra={"rows": rows})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] not in COMMANDS:
        print(f"meridian-ingest: unknown command {args[0]!r} (one of {', '.join(COMMANDS)})",
              file=sys.stderr)
        raise SystemExit(2)
    try:
        common = config.load(config.CommonSettings)
        settings = config.load(IngestSettings)
    except config.ConfigError as exc:
        print(f"meridian-ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup("ingest", common.log_level)
    try:
        tracing.configure("ingest")  # each published candle is the root of its trace
        _run(args[0] if args else settings.mode, common, settings)
    except (config.ConfigError, ConfigurationError, ExchangeCallError) as exc:
        log.error("ingest failed: %s", exc)
        print(f"meridian-ingest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
