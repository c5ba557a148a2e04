"""Protobuf codec for bus records, with validation that names what is wrong.

A record's value is the serialized message; its type travels in the `mtype` header (the
message's full name), so a topic can also carry Watermark records. A record without the header is
read as the topic's own message type, so external producers can publish bare protobuf.
Anything that does not decode or validate raises MalformedMessage with a reason, which the host
turns into a dead-letter record.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from google.protobuf.message import DecodeError, Message

from meridian_common import topics

TYPE_HEADER = "mtype"

# Decimal-string fields that must parse, per message type (required ones must also be non-empty).
_DECIMAL_FIELDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "meridian.v1.Candle": tuple((f, True) for f in ("open", "high", "low", "close", "volume")),
    "meridian.v1.FundingRate": (("rate", True),),
    "meridian.v1.Features": (("close", True),),
    "meridian.v1.Signal": (("reference_price", True), ("stop_loss", False), ("take_profit", False)),
    "meridian.v1.ApprovedOrder": (("quantity", True), ("limit_price", False)),
    "meridian.v1.Fill": (("quantity", True), ("price", True), ("fee", True)),
    "meridian.v1.PositionUpdate": (("quantity", True), ("net_pnl", True)),
}
_TYPES: dict[str, type[Message]] = {
    s.message.DESCRIPTOR.full_name: s.message for s in topics.TOPICS.values()
}
_TYPES[topics.WATERMARK.DESCRIPTOR.full_name] = topics.WATERMARK


class MalformedMessage(ValueError):
    """A record that cannot be decoded or fails validation; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def type_name(message: Message) -> str:
    return message.DESCRIPTOR.full_name


def encode(message: Message) -> tuple[bytes, bytes]:
    """Serialize deterministically; return (value, type header value)."""
    return message.SerializeToString(deterministic=True), type_name(message).encode()


def decode(topic: str, value: bytes | None, mtype: bytes | None) -> Message:
    """Decode and validate a record of a logical topic."""
    spec = topics.spec(topic)
    if value is None:
        raise MalformedMessage("empty value (tombstone) where a message was expected")
    if mtype is None:
        cls: type[Message] = spec.message
    else:
        name = mtype.decode("utf-8", "replace")
        cls = _TYPES.get(name)  # type: ignore[assignment]
        if cls is None:
            raise MalformedMessage(f"unknown message type {name!r} in header {TYPE_HEADER!r}")
        if cls is not spec.message and cls is not topics.WATERMARK:
            raise MalformedMessage(
                f"message type {name!r} does not belong on topic {topic!r} "
                f"(expected {spec.message.DESCRIPTOR.full_name})"
            )
    message = cls()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise MalformedMessage(f"cannot parse as {cls.DESCRIPTOR.full_name}: {exc}") from None
    validate(message)
    return message


def validate(message: Message) -> None:
    """Check the fields consumers rely on; raise MalformedMessage naming the first bad one."""
    name = type_name(message)
    if message.DESCRIPTOR.full_name == "meridian.v1.Watermark":
        if not message.key:  # type: ignore[attr-defined]
            raise MalformedMessage("Watermark.key is empty")
        if message.event_time_ms <= 0:  # type: ignore[attr-defined]
            raise MalformedMessage("Watermark.event_time_ms must be > 0")
        return
    meta = message.meta  # type: ignore[attr-defined]
    if not meta.id:
        raise MalformedMessage(f"{name}.meta.id is empty")
    if meta.event_time_ms <= 0:
        raise MalformedMessage(f"{name}.meta.event_time_ms must be > 0, got {meta.event_time_ms}")
    for field, required in _DECIMAL_FIELDS.get(name, ()):
        text = getattr(message, field)
        if not text:
            if required:
                raise MalformedMessage(f"{name}.{field} is empty")
            continue
        try:
            ok = Decimal(text).is_finite()
        except InvalidOperation:
            ok = False
        if not ok:
            raise MalformedMessage(f"{name}.{field} is not a decimal number: {text[:40]!r}")
