"""Hypothesis strategies for protobuf messages, built from their descriptors.

``messages(descriptor)`` draws messages of that type with random field values: every scalar
type over its whole range (floats with NaN and infinities, unknown enum numbers), strings and
bytes and repeated fields of bounded size, maps, oneofs (at most one member set), and nested
messages down to ``max_depth`` (Struct / Value / ListValue nest without end otherwise). Each
field is set about one time in three, so a message is mostly defaults with a few values, and
``steer`` may give the strategy of scalar fields by name (a real model id, say) or by full name
(``inference.ModelReadyRequest.name``: the full name wins, for a name that means different things
in different messages), or of message fields by the message type's full name, and ``always``
name fields (by name or full name) that are always set, so that drawn requests also get past the
first check (an unknown model, an empty text) and reach the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

FD = pb_descriptor.FieldDescriptor
Steer = Mapping[str, st.SearchStrategy[Any]]

_INTS: dict[int, tuple[int, int]] = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_SET = st.sampled_from([True, False, False])  # whether an optional field is set


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    """The whole range, with the small values and the edges a validator cares about likely."""
    edges = [v for v in (low, high, -1, 0, 1, 2, 16, 64, 512, 4096) if low <= v <= high]
    return st.one_of(
        st.sampled_from(edges),
        st.integers(max(low, -10), min(high, 100)),
        st.integers(low, high),
    )


def scalars(field: pb_descriptor.FieldDescriptor, max_text: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INTS:
        return _integers(*_INTS[kind])
    if kind == FD.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FD.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind == FD.TYPE_STRING:
        return st.text(max_size=max_text)
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=max_text)
    if kind == FD.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        # proto3 enums are open: a number outside the enum parses and must be refused politely
        return st.one_of(st.sampled_from(numbers), st.integers(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field {field.full_name} of type {kind}")


def _is_real_oneof(oneof: pb_descriptor.OneofDescriptor) -> bool:
    """A proto3 ``optional`` field sits in a synthetic oneof of its own named ``_<field>``."""
    return not (len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name)


_CACHE: dict[tuple[str, int, frozenset[str], int, int, int], st.SearchStrategy[Message]] = {}
_NO_STEER: Steer = {}


def messages(
    descriptor: pb_descriptor.Descriptor,
    *,
    steer: Steer = _NO_STEER,
    always: frozenset[str] = frozenset(),
    max_depth: int = 3,
    max_items: int = 4,
    max_text: int = 40,
) -> st.SearchStrategy[Message]:
    key = (descriptor.full_name, id(steer), always, max_depth, max_items, max_text)
    if key not in _CACHE:
        _CACHE[key] = _messages(descriptor, steer, always, max_depth, max_items, max_text)
    return _CACHE[key]


def _messages(
    descriptor: pb_descriptor.Descriptor,
    steer: Steer,
    always: frozenset[str],
    max_depth: int,
    max_items: int,
    max_text: int,
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    oneofs = [oneof for oneof in descriptor.oneofs if _is_real_oneof(oneof)]

    def value(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
        steered = steer.get(field.full_name, steer.get(field.name))
        return scalars(field, max_text) if steered is None else steered

    def required(field: pb_descriptor.FieldDescriptor) -> bool:
        return field.name in always or field.full_name in always

    def nested(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Message]:
        steered = steer.get(field.message_type.full_name)
        if steered is not None:
            return steered
        # fewer items the deeper it goes, so Struct / Value trees stay small
        return messages(
            field.message_type,
            steer=steer,
            always=always,
            max_depth=max_depth - 1,
            max_items=max(1, max_items // 2),
            max_text=max_text,
        )

    def fill(draw: st.DrawFn, message: Message, field: pb_descriptor.FieldDescriptor) -> None:
        target = getattr(message, field.name)
        is_message = field.type == FD.TYPE_MESSAGE
        if is_message and max_depth <= 0:
            return
        if field.label == FD.LABEL_REPEATED:
            count = draw(st.integers(1 if required(field) else 0, max_items))
            if is_message and field.message_type.GetOptions().map_entry:
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(count):
                    key = draw(value(key_field))
                    if value_field.type == FD.TYPE_MESSAGE:
                        target[key].CopyFrom(draw(nested(value_field)))
                    else:
                        target[key] = draw(value(value_field))
            elif is_message:
                for _ in range(count):
                    target.add().CopyFrom(draw(nested(field)))
            else:
                target.extend(draw(value(field)) for _ in range(count))
        elif is_message:
            target.CopyFrom(draw(nested(field)))
        else:
            setattr(message, field.name, draw(value(field)))

    @st.composite
    def draw_message(draw: st.DrawFn) -> Message:
        message = cls()
        chosen = {oneof.name: draw(st.sampled_from([None, *oneof.fields])) for oneof in oneofs}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and oneof.name in chosen:
                if chosen[oneof.name] is not field:
                    continue
            elif not required(field) and not draw(_SET):
                continue  # left unset: the server sees the default / no presence
            fill(draw, message, field)
        return message

    return draw_message()
