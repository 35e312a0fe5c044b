"""TF Serving's model-status REST shape as its protos define it, parsed by protobuf's own JSON parser.

``GET /v1/models/<m>[/versions/<v>]`` answers "a JSON representation of ``GetModelStatusResponse``"
(tensorflow/serving ``g3doc/api_rest.md``, printed by ``MessageToJsonString`` in ``model_servers/
http_rest_api_util.cc``). The messages below are transcribed field by field (names, numbers, types, json_names,
enum values) from tensorflow/serving ``tensorflow_serving/apis/get_model_status.proto`` and ``apis/status.proto``
and TensorFlow's ``error_codes.proto`` (package ``tensorflow.error``, the canonical gRPC codes); the JSON rules
(int64 as a string, enums by name, json_name, unknown fields refused) are those of ``google.protobuf.json_format``,
not ours. The ``tensorflow-protobuf`` wheel would ship the generated modules, but it also installs a top-level
``tensorflow`` package that would shadow a real TensorFlow, so the schema is built here from descriptors.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

F = descriptor_pb2.FieldDescriptorProto

ERROR_CODES = {  # tensorflow.error.Code
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16, "DO_NOT_USE_RESERVED_FOR_FUTURE_EXPANSION_USE_DEFAULT_IN_SWITCH_INSTEAD_": 20,
}
STATES = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def _field(msg: Any, name: str, number: int, ftype: int, label: int = F.LABEL_OPTIONAL,
           type_name: str | None = None, json_name: str | None = None) -> None:
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if json_name:
        f.json_name = json_name


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    errors = descriptor_pb2.FileDescriptorProto(name="error_codes.proto", package="tensorflow.error", syntax="proto3")
    code = errors.enum_type.add(name="Code")
    for n, v in ERROR_CODES.items():
        code.value.add(name=n, number=v)
    pool.Add(errors)

    status = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/apis/status.proto",
                                                package="tensorflow.serving", syntax="proto3",
                                                dependency=["error_codes.proto"])
    sp = status.message_type.add(name="StatusProto")
    _field(sp, "error_code", 1, F.TYPE_ENUM, type_name=".tensorflow.error.Code", json_name="error_code")
    _field(sp, "error_message", 2, F.TYPE_STRING, json_name="error_message")
    pool.Add(status)

    gms = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/apis/get_model_status.proto",
                                             package="tensorflow.serving", syntax="proto3",
                                             dependency=["tensorflow_serving/apis/status.proto"])
    mvs = gms.message_type.add(name="ModelVersionStatus")
    st = mvs.enum_type.add(name="State")
    for n, v in STATES.items():
        st.value.add(name=n, number=v)
    _field(mvs, "version", 1, F.TYPE_INT64)
    _field(mvs, "state", 2, F.TYPE_ENUM, type_name=".tensorflow.serving.ModelVersionStatus.State")
    _field(mvs, "status", 3, F.TYPE_MESSAGE, type_name=".tensorflow.serving.StatusProto")
    resp = gms.message_type.add(name="GetModelStatusResponse")
    _field(resp, "model_version_status", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED,
           ".tensorflow.serving.ModelVersionStatus", json_name="model_version_status")
    pool.Add(gms)
    return pool


_POOL = _pool()
GetModelStatusResponse = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.GetModelStatusResponse"))


def parse_model_status(text: str | bytes) -> Any:
    """Parse a status answer as the proto; raises ``json_format.ParseError`` on any unknown field or bad value."""
    return json_format.Parse(text, GetModelStatusResponse(), ignore_unknown_fields=False)


def render_model_status(msg: Any) -> dict[str, Any]:
    """What TF Serving prints for ``msg`` (``always_print_fields_with_no_presence``: defaults included)."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
