"""Funding-rate messages: one function turns an exchange settlement into md.funding.v1."""

from __future__ import annotations

from meridian.v1 import common_pb2, funding_pb2
from meridian_common.ids import digest


def make_funding(exchange: str, symbol: str, funding_time_ms: int, rate: str, producer: str,
                 revision: int = 0) -> funding_pb2.FundingRate:
    return funding_pb2.FundingRate(
        meta=common_pb2.Meta(
            id=digest("funding", exchange, symbol, funding_time_ms, revision),
            event_time_ms=funding_time_ms,
            producer=producer,
        ),
        exchange=exchange,
        symbol=symbol,
        funding_time_ms=funding_time_ms,
        rate=rate,
        revision=revision,
    )
