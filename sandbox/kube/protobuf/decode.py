"""Generic decoding of a protobuf message to its Kubernetes JSON form, driven by :mod:`.descriptors`."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from typing import Any

from . import wire
from .descriptors import MESSAGES

_NUMERIC = {"int32", "int64", "bool"}
_ZERO: dict[str, Any] = {"string": "", "bytes": "", "int32": 0, "int64": 0, "bool": False, "double": 0.0,
                         "float": 0.0}


def _expect(typ: str, wt: int, want: int) -> None:
    if wt != want:
        raise ValueError(f"field of type {typ} sent with wire type {wt}")


def _scalar(typ: str, wt: int, v: int | bytes) -> Any:
    if typ in _NUMERIC:
        _expect(typ, wt, wire.VARINT)
        return bool(v) if typ == "bool" else wire.signed(int(v))
    if typ == "double":
        _expect(typ, wt, wire.I64)
        return struct.unpack("<d", v)[0]  # type: ignore[arg-type]
    if typ == "float":
        _expect(typ, wt, wire.I32)
        return struct.unpack("<f", v)[0]  # type: ignore[arg-type]
    _expect(typ, wt, wire.LEN)
    raw = bytes(v)  # type: ignore[arg-type]
    return raw.decode() if typ == "string" else base64.b64encode(raw).decode()


def _time(buf: bytes, micro: bool) -> str | None:
    """``metav1.Time``/``MicroTime`` ({seconds=1, nanos=2}) in their JSON form; the zero time is ``null``."""
    seconds = nanos = 0
    for num, wt, v in wire.fields(buf):
        if wt == wire.VARINT and num == 1:
            seconds = wire.signed(int(v))  # type: ignore[arg-type]
        elif wt == wire.VARINT and num == 2:
            nanos = wire.signed(int(v))  # type: ignore[arg-type]
    if not seconds and not nanos:
        return None
    t = datetime.fromtimestamp(seconds, UTC)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(buf: bytes) -> int | str:
    """``intstr.IntOrString`` {type=1 (0 Int, 1 String), intVal=2, strVal=3} as JSON: a number or a string."""
    f = {num: v for num, _, v in wire.fields(buf)}
    if f.get(1):
        return bytes(f.get(3, b"")).decode()  # type: ignore[arg-type]
    return wire.signed(int(f.get(2, 0)))  # type: ignore[arg-type]


def _raw_json(buf: bytes) -> Any:
    """``FieldsV1``/``RawExtension`` ({raw=1}): JSON bytes, decoded."""
    raw = b"".join(bytes(v) for num, _, v in wire.fields(buf) if num == 1)  # type: ignore[arg-type]
    return json.loads(raw) if raw else {}


def _value(typ: str, wt: int, v: int | bytes) -> Any:
    """One value of ``typ`` (no ``*``/``[]``/``{}``/``^`` prefix) off the wire."""
    if typ in _ZERO:
        return _scalar(typ, wt, v)
    _expect(typ, wt, wire.LEN)
    buf = bytes(v)  # type: ignore[arg-type]
    if typ in ("time", "microtime"):
        return _time(buf, typ == "microtime")
    if typ == "intorstr":
        return _int_or_string(buf)
    if typ == "quantity":
        return "".join(bytes(x).decode() for num, _, x in wire.fields(buf) if num == 1)  # type: ignore[arg-type]
    if typ in ("fieldsv1", "rawext"):
        return _raw_json(buf)
    return message(buf, typ)


def _map_entry(typ: str, buf: bytes) -> tuple[str, Any]:
    key, val = "", _ZERO.get(typ)
    for num, wt, v in wire.fields(buf):
        if num == 1:
            key = _scalar("string", wt, v)
        elif num == 2:
            val = _value(typ, wt, v)
    if val is None and typ not in ("time", "microtime"):
        val = _value(typ, wire.LEN, b"")  # a message value sent empty
    return key, val


def message(buf: bytes, name: str) -> dict[str, Any]:
    """The JSON object of message ``name`` (a key of :data:`MESSAGES`) encoded in ``buf``.

    Presence follows what Go's ``encoding/json`` writes for the same struct: a scalar without ``*`` is dropped
    when zero (gogo writes every non-pointer field, JSON ``omitempty`` leaves it out), a ``*`` scalar and any
    message sent are kept, a zero ``Time`` is left out, unknown field numbers are skipped.
    """
    desc = MESSAGES[name]
    out: dict[str, Any] = {}
    for num, wt, v in wire.fields(buf):
        field = desc.get(num)
        if field is None:
            continue
        key, typ = field
        if typ.startswith("[]"):
            elem = typ[2:]
            items = out.setdefault(key, [])
            if wt == wire.LEN and elem in _NUMERIC:  # packed
                items.extend(_scalar(elem, wire.VARINT, x) for x in wire.packed_varints(bytes(v)))  # type: ignore[arg-type]
            else:
                items.append(_value(elem, wt, v))
        elif typ.startswith("{}"):
            _expect(typ, wt, wire.LEN)
            k, val = _map_entry(typ[2:], bytes(v))  # type: ignore[arg-type]
            out.setdefault(key, {})[k] = val
        elif typ.startswith("^"):
            _expect(typ, wt, wire.LEN)
            out.update(message(bytes(v), typ[1:]))  # type: ignore[arg-type]
        elif typ.startswith("*"):
            out[key] = _value(typ[1:], wt, v)
        else:
            val = _value(typ, wt, v)
            if val is None or (typ in _ZERO and val == _ZERO[typ]):
                out.pop(key, None)
            else:
                out[key] = val
    return out
