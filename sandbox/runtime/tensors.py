"""TF Serving's JSON <-> tensor mapping for the REST API (tensorflow/serving ``tensorflow_serving/util/json_tensor.cc``).

Requests: ``FillPredictRequestFromJson``: the body must be a JSON object; optional string ``signature_name``;
exactly one of ``instances`` (row format: a non-empty list; list of objects keyed by input name when the signature has
several inputs, all with the same keys; items batched along a new 0-th dimension, every item of one input with the
same shape) or ``inputs`` (columnar: one value for a single input, else an object holding every input). Each tensor
is dense: its shape comes from the first element at every level, every list must have that size, scalars sit at
the last level only, and each scalar must be of the input's dtype (``DT_INT32``: a JSON integer ...). Errors carry
upstream's wording (``JSON Value: <value> Type: Number is not of expected type: int32``, ``Missing 'inputs' or
'instances' key`` ...) with status INVALID_ARGUMENT.

Responses: ``MakeJsonFromTensors``: row format -> ``{"predictions": [...]}`` (one output: its per-item values;
several: one object per item), columnar -> ``{"outputs": ...}`` (one output: the tensor; several: an object).
``DT_FLOAT`` values are written as float32 with six significant digits, or nine when six do not round-trip (``WriteDecimal``), whole numbers
with a trailing ``.0``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

_DTYPE_NAMES = {"DT_FLOAT": "float", "DT_DOUBLE": "double", "DT_INT32": "int32", "DT_INT16": "int16",
                "DT_INT8": "int8", "DT_UINT8": "uint8", "DT_STRING": "string", "DT_INT64": "int64",
                "DT_BOOL": "bool", "DT_UINT32": "uint32", "DT_UINT64": "uint64"}
_INT_RANGES = {"DT_INT32": (-(2**31), 2**31 - 1), "DT_INT16": (-(2**31), 2**31 - 1), "DT_INT8": (-(2**31), 2**31 - 1),
               "DT_UINT8": (-(2**31), 2**31 - 1), "DT_INT64": (-(2**63), 2**63 - 1), "DT_UINT32": (0, 2**32 - 1),
               "DT_UINT64": (0, 2**64 - 1)}
MAX_DEBUG_BYTES = 256


class ApiError(Exception):
    """A request that fails with a TF status code (``INVALID_ARGUMENT`` ...) and message."""

    HTTP = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
            "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
            "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
            "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        """``Status::ToString()``: ``Invalid argument: <message>``."""
        return f"{self.code.replace('_', ' ').capitalize()}: {self.message}"

    @property
    def http_status(self) -> int:
        """``ToHTTPStatusCode`` in ``model_servers/http_server.cc``."""
        return self.HTTP.get(self.code, 500)


def invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


# ---- debug strings -----------------------------------------------------------------------------------------------
def _debug(val: Any, indent: int = 0) -> str:
    if isinstance(val, dict):
        if not val:
            return "{}"
        pad = "    " * (indent + 1)
        items = [f"{pad}{json.dumps(k)}: {_debug(v, indent + 1)}" for k, v in val.items()]
        return "{\n" + ",\n".join(items) + "\n" + "    " * indent + "}"
    if isinstance(val, list):
        return "[" + ", ".join(_debug(v, indent) for v in val) + "]"
    if isinstance(val, float) and not math.isfinite(val):
        return "NaN" if math.isnan(val) else ("Infinity" if val > 0 else "-Infinity")
    return json.dumps(val)


def debug_string(val: Any) -> str:
    """``JsonValueToDebugString``: pretty objects, single-line arrays, cut after ~256 bytes."""
    return _debug(val)[:MAX_DEBUG_BYTES]


def json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def parse_body(body: bytes) -> dict[str, Any]:
    """``ParseJson``: the request document, which must be an object."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise invalid("JSON Parse error: Invalid encoding in string. at offset: 0") from None
    except json.JSONDecodeError as e:
        raise invalid(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug_string(doc)} Is not object")
    return doc


# ---- JSON -> tensors ---------------------------------------------------------------------------------------------
def _type_error(val: Any, dtype: str) -> ApiError:
    return invalid(f"JSON Value: {debug_string(val)} Type: {json_type(val)} is not of expected type: "
                   f"{_DTYPE_NAMES.get(dtype, dtype.removeprefix('DT_').lower())}")


def _check_scalar(val: Any, dtype: str) -> None:
    if dtype in ("DT_FLOAT", "DT_DOUBLE"):
        ok = isinstance(val, (int, float)) and not isinstance(val, bool)
    elif dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        ok = isinstance(val, int) and not isinstance(val, bool) and lo <= val <= hi
    elif dtype == "DT_STRING":
        ok = isinstance(val, str) or (isinstance(val, dict) and set(val) == {"b64"} and isinstance(val["b64"], str))
    elif dtype == "DT_BOOL":
        ok = isinstance(val, bool)
    else:
        raise ApiError("UNIMPLEMENTED", f"Conversion of JSON Value: {debug_string(val)} to type: "
                                        f"{dtype.removeprefix('DT_').lower()}")
    if not ok:
        raise _type_error(val, dtype)


def dense_shape(val: Any) -> list[int]:
    """``GetDenseTensorShape``: sizes of the first element at every level."""
    shape: list[int] = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _fill(val: Any, level: int, shape: list[int], dtype: str) -> int:
    """``FillTensorProto``: validate a dense nested value; returns the number of scalars."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(f"JSON Value: {debug_string(val)} found at incorrect level: {level + 1} in the JSON DOM. "
                          f"Expected at level: {rank}")
        if isinstance(val, dict) and not (dtype == "DT_STRING"):
            raise _type_error(val, dtype)
        _check_scalar(val, dtype)
        return 1
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: "
                      f"{shape[level]}")
    return sum(_fill(v, level + 1, shape, dtype) for v in val)


def _is_object(val: Any) -> bool:
    return isinstance(val, dict) and not (set(val) == {"b64"} and isinstance(val.get("b64"), str))


def _shape_str(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def tensors_from_instances(instances: list[Any], infos: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """``FillTensorMapFromInstancesList``: row format -> one batched tensor per input."""
    if not _is_object(instances[0]) and len(infos) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors required "
                      "as per tensorinfo_map")
    objects = _is_object(instances[0])
    names = sorted(infos)
    out: dict[str, list[Any]] = {}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}

    def add(item: Any, name: str) -> None:
        if name not in infos:
            raise invalid(f"JSON object: does not have named input: {name}")
        shape = dense_shape(item)
        size = _fill(item, 0, shape, infos[name].get("dtype", ""))
        if name not in sizes:
            sizes[name], shapes[name] = size, shape
        elif sizes[name] != size:
            raise invalid(f"Expecting tensor size: {sizes[name]} but got: {size}")
        elif shapes[name] != shape:
            raise invalid(f"Expecting shape {_shape_str(shapes[name])} but got: {_shape_str(shape)}")
        out.setdefault(name, []).append(item)

    for n, elem in enumerate(instances):
        if objects:
            if not _is_object(elem):
                raise invalid(f"Expecting object but got list at item {n} of input list")
            for key, value in elem.items():
                try:
                    add(value, key)
                except ApiError as e:
                    raise invalid(f"Failed to process element: {n} key: {key} of 'instances' list. Error: "
                                  f"{e}") from None
            if set(elem) != set(names):
                raise invalid(f"Failed to process element: {n} of 'instances' list. JSON object: "
                              f"{debug_string(elem)} keys must be equal to: {','.join(names)}")
        else:
            if _is_object(elem):
                raise invalid(f"Expecting value/list but got object at item {n} of input list")
            try:
                add(elem, names[0])
            except ApiError as e:
                raise invalid(f"Failed to process element: {n} of 'instances' list. Error: "
                              f"{e}") from None
    return out


def tensors_from_inputs(inputs: Any, infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``FillTensorMapFromInputsMap``: columnar format (inputs the signature does not name are ignored)."""
    if not _is_object(inputs):
        if len(infos) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required "
                          "as per tensorinfo_map")
        name = sorted(infos)[0]
        _fill(inputs, 0, dense_shape(inputs), infos[name].get("dtype", ""))
        return {name: inputs}
    out: dict[str, Any] = {}
    for name in sorted(infos):
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        _fill(inputs[name], 0, dense_shape(inputs[name]), infos[name].get("dtype", ""))
        out[name] = inputs[name]
    return out


def parse_predict(doc: dict[str, Any], infos_for: Any) -> tuple[str, str, dict[str, Any]]:
    """(format ``row``|``columnar``, signature name, tensors) from a predict body (``FillPredictRequestFromJson``).

    ``infos_for(signature_name) -> {input: tensor info}`` raises :class:`ApiError` for an unknown signature.
    """
    sig = doc.get("signature_name", "")
    if "signature_name" in doc and not isinstance(sig, str):
        raise invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a "
                      "string value.")
    infos = infos_for(sig)
    if not infos:
        raise invalid(f"Failed to get input map for signature: {sig or 'DEFAULT'}")
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid(f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' "
                          "or 'instances' keys to exist ")
        if not isinstance(doc["instances"], list):
            raise invalid(f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array")
        if not doc["instances"]:
            raise invalid(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return "row", sig, tensors_from_instances(doc["instances"], infos)
    if "inputs" in doc:
        return "columnar", sig, tensors_from_inputs(doc["inputs"], infos)
    raise invalid("Missing 'inputs' or 'instances' key")


def check_shapes(tensors: dict[str, Any], infos: dict[str, dict[str, Any]]) -> None:
    """The signature's static shape (``-1`` = any) against each fed tensor, as the graph would enforce it."""
    for name, value in tensors.items():
        dims = [int(d.get("size", -1)) for d in ((infos[name].get("tensor_shape") or {}).get("dim") or [])]
        if (infos[name].get("tensor_shape") or {}).get("unknown_rank"):
            continue
        shape = dense_shape(value)
        if len(shape) != len(dims) or any(w not in (-1, g) for w, g in zip(dims, shape, strict=False)):
            raise invalid(f"input tensor {name}: shape {_shape_str(shape)} is not compatible with the signature's "
                          f"shape {_shape_str(dims)} ({infos[name].get('name', name)})")


# ---- tensors -> JSON -----------------------------------------------------------------------------------------------
def float32(x: float) -> float:
    """The float32 value of ``x`` in its shortest round-tripping decimal form (``WriteDecimal``)."""
    if not math.isfinite(x):
        return x
    f = struct.unpack("f", struct.pack("f", x))[0]
    s = f"{f:.6g}"  # absl::StrCat's %g, else max_digits10 (9) when six digits do not round-trip
    if struct.unpack("f", struct.pack("f", float(s)))[0] != f:
        s = f"{f:.9g}"
    return float(s)


def _cast(value: Any, dtype: str) -> Any:
    if isinstance(value, list):
        return [_cast(v, dtype) for v in value]
    if dtype == "DT_FLOAT" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float32(float(value))
    if dtype == "DT_DOUBLE" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def make_response(fmt: str, outputs: dict[str, Any], out_infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``MakeJsonFromTensors``."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    cast = {k: _cast(v, (out_infos.get(k) or {}).get("dtype", "")) for k, v in sorted(outputs.items())}
    if fmt == "columnar":
        if len(cast) == 1:
            return {"outputs": next(iter(cast.values()))}
        return {"outputs": cast}
    batch = -1
    for name, v in cast.items():
        if not isinstance(v, list):
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and len(v) != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {len(v)} expecting: {batch}")
        batch = len(v)
    if len(cast) == 1:
        return {"predictions": next(iter(cast.values()))}
    return {"predictions": [{k: v[i] for k, v in cast.items()} for i in range(batch)]}


# ---- classify / regress: JSON -> tf.Example features (``FillClassifyRegressRequestFromJson``) ------------------------
_FLOAT32_MAX_INT = (1 << 24) - 1
_FLOAT32_MAX = 3.4028234663852886e38


def _add_feature_value(val: Any, name: str, feature: list[Any]) -> None:
    """``AddValueToFeature``: ``feature`` is ``[kind, values]`` (kind None until the first value fixes it)."""
    def kind(want: str) -> None:
        if feature[0] not in (None, want):
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {feature[0]}")
        feature[0] = want

    if val is None or isinstance(val, list) or (isinstance(val, dict) and not _is_b64(val)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(val)}")
    if isinstance(val, bool):
        kind("int64")
        feature[1].append(1 if val else 0)
    elif isinstance(val, dict):
        kind("bytes")
        import base64
        import binascii

        try:
            feature[1].append(base64.b64decode(val["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None
    elif isinstance(val, str):
        kind("bytes")
        feature[1].append(val.encode("utf-8"))
    elif isinstance(val, float):
        kind("float")
        if math.isfinite(val) and abs(val) > _FLOAT32_MAX:
            raise invalid(f"Cannot convert JSON value: {debug_string(val)} to float without loss of precision.")
        feature[1].append(val)
    else:
        kind("int64")
        if val >= 2**63:
            raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if val < -(2**63):
            raise _type_error(val, "DT_INT64")
        feature[1].append(val)


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and set(val) == {"b64"} and isinstance(val["b64"], str)


def example_from_json(val: Any) -> dict[str, tuple[str, list[Any]]]:
    """``MakeExampleFromJsonObject``: ``{feature: (kind bytes|float|int64, values)}``."""
    if not isinstance(val, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(val)}")
    out: dict[str, tuple[str, list[Any]]] = {}
    for name, content in val.items():
        feature: list[Any] = [None, []]
        for v in content if isinstance(content, list) else [content]:
            _add_feature_value(v, name, feature)
        out[name] = (feature[0] or "bytes", feature[1])
    return out


def parse_classify_regress(doc: dict[str, Any], method: str) -> tuple[str, dict[str, Any] | None, list[Any]]:
    """(signature name, context example or None, examples) of a ``:classify``/``:regress`` body."""
    if "signature_name" in doc and not isinstance(doc["signature_name"], str):
        raise invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a "
                      "string value.")
    context = example_from_json(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        # upstream says "When method is classify" for both methods (one template for the two requests)
        raise invalid(f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is expected and "
                      "was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    return doc.get("signature_name", ""), context, [example_from_json(e) for e in examples]


def make_classify_response(results: list[list[tuple[str, float]]]) -> dict[str, Any]:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    if not results:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[label, float32(score)] for label, score in row] for row in results]}


def make_regress_response(values: list[float]) -> dict[str, Any]:
    """``MakeJsonFromRegressionResult``: ``{"results": [value, ...]}``."""
    if not values:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    return {"results": [float32(v) for v in values]}
