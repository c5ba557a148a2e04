from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FundingRate(_message.Message):
    __slots__ = ("meta", "exchange", "symbol", "funding_time_ms", "rate", "revision")
    META_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    FUNDING_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    exchange: str
    symbol: str
    funding_time_ms: int
    rate: str
    revision: int
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., funding_time_ms: _Optional[int] = ..., rate: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...
