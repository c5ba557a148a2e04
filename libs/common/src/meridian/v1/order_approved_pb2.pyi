from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_ACTION_UNSPECIFIED: _ClassVar[OrderAction]
    ORDER_ACTION_PLACE: _ClassVar[OrderAction]
    ORDER_ACTION_CANCEL: _ClassVar[OrderAction]

class OrderType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_TYPE_UNSPECIFIED: _ClassVar[OrderType]
    ORDER_TYPE_MARKET: _ClassVar[OrderType]
    ORDER_TYPE_LIMIT: _ClassVar[OrderType]
ORDER_ACTION_UNSPECIFIED: OrderAction
ORDER_ACTION_PLACE: OrderAction
ORDER_ACTION_CANCEL: OrderAction
ORDER_TYPE_UNSPECIFIED: OrderType
ORDER_TYPE_MARKET: OrderType
ORDER_TYPE_LIMIT: OrderType

class ApprovedOrder(_message.Message):
    __slots__ = ("meta", "client_order_id", "signal_id", "exchange", "symbol", "side", "order_type", "quantity", "limit_price", "reduce_only", "stop_loss", "take_profit", "strategy", "trailing_stop", "leverage", "maintenance_margin_rate", "action")
    META_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    REDUCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TRAILING_STOP_FIELD_NUMBER: _ClassVar[int]
    LEVERAGE_FIELD_NUMBER: _ClassVar[int]
    MAINTENANCE_MARGIN_RATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    client_order_id: str
    signal_id: str
    exchange: str
    symbol: str
    side: _common_pb2.Side
    order_type: OrderType
    quantity: str
    limit_price: str
    reduce_only: bool
    stop_loss: str
    take_profit: str
    strategy: str
    trailing_stop: str
    leverage: str
    maintenance_margin_rate: str
    action: OrderAction
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., client_order_id: _Optional[str] = ..., signal_id: _Optional[str] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., order_type: _Optional[_Union[OrderType, str]] = ..., quantity: _Optional[str] = ..., limit_price: _Optional[str] = ..., reduce_only: _Optional[bool] = ..., stop_loss: _Optional[str] = ..., take_profit: _Optional[str] = ..., strategy: _Optional[str] = ..., trailing_stop: _Optional[str] = ..., leverage: _Optional[str] = ..., maintenance_margin_rate: _Optional[str] = ..., action: _Optional[_Union[OrderAction, str]] = ...) -> None: ...
