from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PositionUpdate(_message.Message):
    __slots__ = ("meta", "account", "exchange", "symbol", "as_of_ms", "quantity", "average_price", "mark_price", "realized_pnl", "unrealized_pnl", "fees_paid", "net_pnl", "trades_closed", "funding_paid")
    META_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    AS_OF_MS_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    MARK_PRICE_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    UNREALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    FEES_PAID_FIELD_NUMBER: _ClassVar[int]
    NET_PNL_FIELD_NUMBER: _ClassVar[int]
    TRADES_CLOSED_FIELD_NUMBER: _ClassVar[int]
    FUNDING_PAID_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    account: str
    exchange: str
    symbol: str
    as_of_ms: int
    quantity: str
    average_price: str
    mark_price: str
    realized_pnl: str
    unrealized_pnl: str
    fees_paid: str
    net_pnl: str
    trades_closed: int
    funding_paid: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., account: _Optional[str] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., as_of_ms: _Optional[int] = ..., quantity: _Optional[str] = ..., average_price: _Optional[str] = ..., mark_price: _Optional[str] = ..., realized_pnl: _Optional[str] = ..., unrealized_pnl: _Optional[str] = ..., fees_paid: _Optional[str] = ..., net_pnl: _Optional[str] = ..., trades_closed: _Optional[int] = ..., funding_paid: _Optional[str] = ...) -> None: ...
