from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KillSwitch(_message.Message):
    __slots__ = ("engaged", "reason", "actor")
    ENGAGED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    engaged: bool
    reason: str
    actor: str
    def __init__(self, engaged: _Optional[bool] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class Halt(_message.Message):
    __slots__ = ("service", "halted", "reason")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HALTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    service: str
    halted: bool
    reason: str
    def __init__(self, service: _Optional[str] = ..., halted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelPromotion(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ConfigPromotion(_message.Message):
    __slots__ = ("config_name", "config_version")
    CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    config_name: str
    config_version: str
    def __init__(self, config_name: _Optional[str] = ..., config_version: _Optional[str] = ...) -> None: ...

class BreakerState(_message.Message):
    __slots__ = ("level", "until_ms", "reason")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    level: str
    until_ms: int
    reason: str
    def __init__(self, level: _Optional[str] = ..., until_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("meta", "kill_switch", "halt", "model_promotion", "config_promotion", "breaker")
    META_FIELD_NUMBER: _ClassVar[int]
    KILL_SWITCH_FIELD_NUMBER: _ClassVar[int]
    HALT_FIELD_NUMBER: _ClassVar[int]
    MODEL_PROMOTION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PROMOTION_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    kill_switch: KillSwitch
    halt: Halt
    model_promotion: ModelPromotion
    config_promotion: ConfigPromotion
    breaker: BreakerState
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., kill_switch: _Optional[_Union[KillSwitch, _Mapping]] = ..., halt: _Optional[_Union[Halt, _Mapping]] = ..., model_promotion: _Optional[_Union[ModelPromotion, _Mapping]] = ..., config_promotion: _Optional[_Union[ConfigPromotion, _Mapping]] = ..., breaker: _Optional[_Union[BreakerState, _Mapping]] = ...) -> None: ...
