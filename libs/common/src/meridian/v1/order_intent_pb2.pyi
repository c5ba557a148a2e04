from meridian.v1 import common_pb2 as _common_pb2
from meridian.v1 import order_approved_pb2 as _order_approved_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderIntent(_message.Message):
    __slots__ = ("meta", "exchange", "symbol", "strategy", "client_order_id", "action", "side", "order_type", "quantity", "limit_price", "reduce_only", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    REDUCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    exchange: str
    symbol: str
    strategy: str
    client_order_id: str
    action: _order_approved_pb2.OrderAction
    side: _common_pb2.Side
    order_type: _order_approved_pb2.OrderType
    quantity: str
    limit_price: str
    reduce_only: bool
    reason: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., strategy: _Optional[str] = ..., client_order_id: _Optional[str] = ..., action: _Optional[_Union[_order_approved_pb2.OrderAction, str]] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., order_type: _Optional[_Union[_order_approved_pb2.OrderType, str]] = ..., quantity: _Optional[str] = ..., limit_price: _Optional[str] = ..., reduce_only: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
