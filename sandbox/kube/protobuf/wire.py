"""The protobuf wire format (https://protobuf.dev/programming-guides/encoding/): a message is a run of
``(field number << 3 | wire type)`` keys, each followed by its value."""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(buf: bytes, i: int) -> tuple[int, int]:
    """The unsigned varint at ``buf[i:]`` and the index after it."""
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """The ``(field number, wire type, value)`` triples of a message, in wire order: a varint as an int, a
    length-delimited field as bytes, a fixed64/fixed32 as its little-endian bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ValueError("field number 0")
        if wire == VARINT:
            v, i = varint(buf, i)
            yield num, wire, v
        elif wire == LEN:
            size, i = varint(buf, i)
            if i + size > n:
                raise ValueError("truncated field")
            yield num, wire, buf[i:i + size]
            i += size
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if i + size > n:
                raise ValueError("truncated fixed field")
            yield num, wire, buf[i:i + size]
            i += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


def packed_varints(buf: bytes) -> list[int]:
    """The values of a packed repeated varint field."""
    out, i = [], 0
    while i < len(buf):
        v, i = varint(buf, i)
        out.append(v)
    return out


def signed(v: int) -> int:
    """An int32/int64 varint as a signed value (negative numbers are sent as 64-bit two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v
