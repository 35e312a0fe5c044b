"""Request bodies in ``application/vnd.kubernetes.protobuf``, decoded to the JSON wire form.

client-go's generated clients for built-in types force protobuf on every request (``gentype`` ->
``Request.UseProtobufAsDefault``: ``Content-Type: application/vnd.kubernetes.protobuf``, ``Accept:
application/vnd.kubernetes.protobuf,application/json``), whatever discovery says, so ``kubectl create configmap``,
``create secret``, ``create namespace`` and ``create serviceaccount`` send protobuf. A real server decodes it; the
response may be JSON (the client accepts it). Only those kinds are decoded here (field numbers from
``k8s.io/api/core/v1/generated.proto`` and ``k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto``); any other
kind is answered 415 as before.

The envelope (``apimachinery/pkg/runtime/serializer/protobuf``): the magic ``k8s\\x00`` then a ``runtime.Unknown``
message ``{typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3, contentType=4}`` whose ``raw`` is the object.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from .errors import bad_request, unsupported_media_type

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# field number -> (JSON name, type); a type is "string", "bytes", "int", "bool", "time", "strings" (repeated),
# "map" (string -> string), "bmap" (string -> bytes, base64 in JSON), "json" (FieldsV1 raw), a schema dict
# (message) or a one-element list holding a schema (repeated message).
_TIME = "time"
_OWNER_REF = {5: ("apiVersion", "string"), 1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
              6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
_MANAGED = {1: ("manager", "string"), 2: ("operation", "string"), 3: ("apiVersion", "string"), 4: ("time", _TIME),
            6: ("fieldsType", "string"), 7: ("fieldsV1", {1: ("", "json")}), 8: ("subresource", "string")}
_OBJECT_META = {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                4: ("selfLink", "string"), 5: ("uid", "string"), 6: ("resourceVersion", "string"),
                7: ("generation", "int"), 8: ("creationTimestamp", _TIME), 9: ("deletionTimestamp", _TIME),
                10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", "map"), 12: ("annotations", "map"),
                13: ("ownerReferences", [_OWNER_REF]), 14: ("finalizers", "strings"),
                17: ("managedFields", [_MANAGED])}
_OBJECT_REF = {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"), 4: ("uid", "string"),
               5: ("apiVersion", "string"), 6: ("resourceVersion", "string"), 7: ("fieldPath", "string")}
KINDS: dict[tuple[str, str], dict] = {
    ("v1", "ConfigMap"): {1: ("metadata", _OBJECT_META), 4: ("immutable", "bool"), 2: ("data", "map"),
                          3: ("binaryData", "bmap")},
    ("v1", "Secret"): {1: ("metadata", _OBJECT_META), 5: ("immutable", "bool"), 2: ("data", "bmap"),
                       4: ("stringData", "map"), 3: ("type", "string")},
    ("v1", "Namespace"): {1: ("metadata", _OBJECT_META), 2: ("spec", {1: ("finalizers", "strings")}),
                          3: ("status", {1: ("phase", "string")})},
    ("v1", "ServiceAccount"): {1: ("metadata", _OBJECT_META), 2: ("secrets", [_OBJECT_REF]),
                               3: ("imagePullSecrets", [{1: ("name", "string")}]),
                               4: ("automountServiceAccountToken", "bool")},
}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
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


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a message: varints as int, length-delimited as bytes; fixed skipped."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
            out.append((num, v))
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            out.append((num, buf[i:i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _message(buf: bytes, schema: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, v in _fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if typ == "string":
            if v:
                out[name] = bytes(v).decode()
        elif typ == "bytes":
            out[name] = base64.b64encode(bytes(v)).decode()
        elif typ == "int":
            n = int(v)  # type: ignore[arg-type]
            n = n - (1 << 64) if n >= 1 << 63 else n
            if n:
                out[name] = n
        elif typ == "bool":
            out[name] = bool(v)
        elif typ == _TIME:
            t = {k: int(x) for k, x in _fields(bytes(v))}  # type: ignore[arg-type]
            if t.get(1):
                out[name] = datetime.fromtimestamp(t[1], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif typ == "json":
            return json.loads(bytes(v)) if v else {}
        elif typ == "strings":
            out.setdefault(name, []).append(bytes(v).decode())
        elif typ in ("map", "bmap"):
            entry = dict(_fields(bytes(v)))
            val = bytes(entry.get(2, b""))  # type: ignore[arg-type]
            out.setdefault(name, {})[bytes(entry.get(1, b"")).decode()] = (  # type: ignore[arg-type]
                val.decode() if typ == "map" else base64.b64encode(val).decode())
        elif isinstance(typ, list):
            out.setdefault(name, []).append(_message(bytes(v), typ[0]))
        else:
            out[name] = _message(bytes(v), typ)
    return out


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of a kind in :data:`KINDS` (415 for other kinds)."""
    if not raw.startswith(MAGIC):
        raise bad_request("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")
    try:
        unknown = dict(_fields(raw[len(MAGIC):]))
        type_meta = {k: bytes(x).decode() for k, x in _fields(bytes(unknown.get(1, b"")))}  # type: ignore[arg-type]
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        schema = KINDS.get((api_version, kind))
        if schema is None:
            raise unsupported_media_type(f"{CONTENT_TYPE} ({kind or 'unknown kind'})")
        obj = _message(bytes(unknown.get(2, b"")), schema)  # type: ignore[arg-type]
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"unable to decode protobuf body: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
