from meridian.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuleResult(_message.Message):
    __slots__ = ("rule", "passed", "detail")
    RULE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule: str
    passed: bool
    detail: str
    def __init__(self, rule: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RiskDecision(_message.Message):
    __slots__ = ("meta", "exchange", "symbol", "approved", "rules", "client_order_id", "side", "quantity", "reference_price", "reduce_only")
    META_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PRICE_FIELD_NUMBER: _ClassVar[int]
    REDUCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.Meta
    exchange: str
    symbol: str
    approved: bool
    rules: _containers.RepeatedCompositeFieldContainer[RuleResult]
    client_order_id: str
    side: _common_pb2.Side
    quantity: str
    reference_price: str
    reduce_only: bool
    def __init__(self, meta: _Optional[_Union[_common_pb2.Meta, _Mapping]] = ..., exchange: _Optional[str] = ..., symbol: _Optional[str] = ..., approved: _Optional[bool] = ..., rules: _Optional[_Iterable[_Union[RuleResult, _Mapping]]] = ..., client_order_id: _Optional[str] = ..., side: _Optional[_Union[_common_pb2.Side, str]] = ..., quantity: _Optional[str] = ..., reference_price: _Optional[str] = ..., reduce_only: _Optional[bool] = ...) -> None: ...
