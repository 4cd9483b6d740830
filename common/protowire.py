"""A protobuf `bytes` field written from, or read into, buffers without copying them.

Protobuf (upb) only takes `bytes` for a bytes field, so a 200 MB tensor put into a message is
copied into the message and again when it is serialized; parsing copies it twice more. But a
message on the wire is the concatenation of its fields, and a repeated field's entries may
appear anywhere in it: the small fields go through protobuf as usual and the tensors are
written (one join) or sliced (memoryviews, no copy) beside them.
"""

from __future__ import annotations

from collections.abc import Iterable

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _entries(field_number: int, buffers: Iterable) -> list:
    """Each buffer as an entry of a repeated bytes field: tag, length, the buffer itself."""
    tag = _varint(field_number << 3 | _LENGTH_DELIMITED)
    parts: list = []
    for buffer in buffers:
        raw = memoryview(buffer).cast("B")
        parts += [tag, _varint(len(raw)), raw]
    return parts


def join_bytes_field(message: bytes, field_number: int, buffers: Iterable) -> bytes:
    """`message` (serialized) with each buffer appended as an entry of a repeated bytes field."""
    return b"".join([message, *_entries(field_number, buffers)])


def length_delimited(field_number: int, data: bytes) -> bytes:
    """One length-delimited field (a string, bytes or message field) on its own."""
    return b"".join([_varint(field_number << 3 | _LENGTH_DELIMITED), _varint(len(data)), data])


def join_nested(outer_field: int, message: bytes, field_number: int, buffers: Iterable) -> bytes:
    """A message whose only field, `outer_field`, is what `join_bytes_field(message,
    field_number, buffers)` would give: written in the same single join, buffers not copied
    before it (a wrapper such as ModelStreamInferResponse around a ModelInferResponse)."""
    parts = _entries(field_number, buffers)
    length = len(message) + sum(len(part) for part in parts)  # the views are cast to bytes
    tag = _varint(outer_field << 3 | _LENGTH_DELIMITED)
    return b"".join([tag, _varint(length), message, *parts])


def split_bytes_field(data: bytes, field_number: int) -> tuple[bytes, list[memoryview]]:
    """(the message without the field, for protobuf to parse; the field's entries as views)."""
    view = memoryview(data)
    rest: list[memoryview] = []
    entries: list[memoryview] = []
    pos = 0
    while pos < len(view):
        start = pos
        key, pos = _read_varint(view, pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = _read_varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise ValueError("truncated message")
            if key >> 3 == field_number:
                entries.append(view[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise ValueError(f"unexpected protobuf wire type {wire_type}")
        if pos > len(view):
            raise ValueError("truncated message")
        rest.append(view[start:pos])
    return b"".join(rest), entries
