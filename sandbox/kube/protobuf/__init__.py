"""Request bodies in ``application/vnd.kubernetes.protobuf``, decoded to the JSON wire form.

client-go's generated clients for built-in types force protobuf on every request (``gentype`` ->
``Request.UseProtobufAsDefault``: ``Content-Type: application/vnd.kubernetes.protobuf``, ``Accept:
application/vnd.kubernetes.protobuf,application/json``), whatever discovery says. So ``kubectl create
configmap|secret|namespace|serviceaccount|deployment|service|job|cronjob|pdb|priorityclass|quota|role|
rolebinding|clusterrole|clusterrolebinding|ingress|token``, ``kubectl autoscale`` (autoscaling/v2, then v1) and
``kubectl drain`` (policy/v1 Eviction) send protobuf; ``kubectl run``, ``expose``, ``apply`` and ``create -f`` go
through the dynamic/unstructured client and send JSON. A real server decodes every built-in kind; the kinds in
:data:`.descriptors.KINDS` are decoded here, generically, from message descriptors (:mod:`.descriptors`, the
field numbers of Kubernetes' ``generated.proto`` files) over the wire format (:mod:`.wire`) into the same dict
the JSON body would have parsed to (:mod:`.decode`). Any other kind is answered 415 the way a real server
answers a body its serializers cannot read (e.g. protobuf for a custom resource).

No ``google.protobuf`` here: it would need the ``.proto`` files compiled (protoc and the whole Kubernetes proto
tree) and still give neither the JSON names of inlined structs, nor Go's ``omitempty``/pointer presence, nor the
JSON forms of Time, IntOrString and Quantity; the wire format itself is a few lines.

The envelope (``apimachinery/pkg/runtime/serializer/protobuf``): the magic ``k8s\\x00`` then a ``runtime.Unknown``
message ``{typeMeta{apiVersion=1, kind=2}=1, raw=2, contentEncoding=3, contentType=4}`` whose ``raw`` is the
object.
"""

from __future__ import annotations

from typing import Any

from ..errors import KubeError, bad_request
from . import wire
from .decode import message
from .descriptors import KINDS, MESSAGES

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

__all__ = ["CONTENT_TYPE", "KINDS", "MAGIC", "MESSAGES", "decode", "message"]


def _unsupported() -> KubeError:
    """What the API server answers for a body none of the resource's serializers takes
    (``negotiation.NewUnsupportedMediaTypeError`` with a custom resource's JSON and YAML serializers)."""
    return KubeError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                     "accepted media types include: application/json, application/yaml")


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of a kind in :data:`KINDS` (415 for other kinds)."""
    if not raw.startswith(MAGIC):
        raise bad_request("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")
    try:
        unknown = {num: v for num, _, v in wire.fields(raw[len(MAGIC):])}
        type_meta = {num: bytes(v).decode() for num, _, v in wire.fields(bytes(unknown.get(1, b"")))}  # type: ignore[arg-type]
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        name = KINDS.get((api_version, kind))
        if name is None:
            raise _unsupported()
        if unknown.get(3):
            raise bad_request(f"unsupported protobuf contentEncoding {bytes(unknown[3]).decode()!r}")  # type: ignore[arg-type]
        obj = message(bytes(unknown.get(2, b"")), name)  # type: ignore[arg-type]
    except (ValueError, UnicodeDecodeError, TypeError) as e:
        raise bad_request(f"unable to decode protobuf body: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
