from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Signal(_message.Message):
    __slots__ = ("meta", "exchange", "symbol", "strategy", "direction", "strength", "confidence", "model_version", "reference_price", "stop_loss", "take_profit", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_LOSS_FIELD_NUMBER: _ClassVar[int]
    TAKE_PROFIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    exchange: str
    symbol: str
    strategy: str
    direction: _common_pb2.Direction
    strength: float
    confidence: float
    model_version: str
    reference_price: str
    stop_loss: str
    take_profit: str
    reason: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., strategy: _Optional[str] = ..., direction: _Optional[_Union[_common_pb2.Direction, str]] = ..., strength: _Optional[float] = ..., confidence: _Optional[float] = ..., model_version: _Optional[str] = ..., reference_price: _Optional[str] = ..., stop_loss: _Optional[str] = ..., take_profit: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
