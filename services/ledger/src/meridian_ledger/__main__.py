"""`python -m meridian_ledger`: the ledger over Kafka (needs MERIDIAN_DATABASE_URL)."""

from __future__ import annotations

from meridian_common import config, db, service
from meridian_ledger.handler import LedgerHandler
from meridian_ledger.settings import LedgerSettings
from meridian_ledger.store import SqlLedgerStore


async def build(common: config.CommonSettings) -> LedgerHandler:
    settings = config.load(LedgerSettings)
    if common.database_url is None:
        raise config.ConfigError("MERIDIAN_DATABASE_URL is required by the ledger")
    url = common.database_url.get_secret_value()
    db.migrate(url)
    return LedgerHandler(settings, SqlLedgerStore(db.create_engine(url)))


def main() -> None:
    service.main("ledger", build)


if __name__ == "__main__":
    main()
