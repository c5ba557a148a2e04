from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_LONG: _ClassVar[Direction]
    DIRECTION_SHORT: _ClassVar[Direction]
    DIRECTION_FLAT: _ClassVar[Direction]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
DIRECTION_UNSPECIFIED: Direction
DIRECTION_LONG: Direction
DIRECTION_SHORT: Direction
DIRECTION_FLAT: Direction

class Meta(_message.Message):
    __slots__ = ("id", "cause_id", "event_time_ms", "producer")
    ID_FIELD_NUMBER: _ClassVar[int]
    CAUSE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    id: str
    cause_id: str
    event_time_ms: int
    producer: str
    def __init__(self, id: _Optional[str] = ..., cause_id: _Optional[str] = ..., event_time_ms: _Optional[int] = ..., producer: _Optional[str] = ...) -> None: ...

class Watermark(_message.Message):
    __slots__ = ("key", "event_time_ms", "producer")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    key: str
    event_time_ms: int
    producer: str
    def __init__(self, key: _Optional[str] = ..., event_time_ms: _Optional[int] = ..., producer: _Optional[str] = ...) -> None: ...
