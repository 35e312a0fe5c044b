"""A TensorFlow SavedModel loaded with real TensorFlow and run as TF Serving runs it (the optional extra).

``pip install 'elastic-inference[tensorflow]'`` installs ``tensorflow-cpu``; nothing imports TensorFlow before a
SavedModel is loaded (the demo model never needs it). What follows TF Serving (tensorflow/serving):

- **load** (``servables/tensorflow/saved_model_bundle_factory.cc`` -> ``LoadSavedModel`` with the tag set
  ``{serve}``): the MetaGraphDef tagged ``serve`` is the one served; none -> ``Not found: Could not find meta graph
  def matching supplied tags: { serve } ...``;
- **metadata** (``model_servers/get_model_metadata_impl.cc``): every entry of the MetaGraphDef's ``signature_def``
  map (``__saved_model_init_op`` included), rendered by ``http_rest_api_handler.cc`` with protobuf's
  ``MessageToJsonString`` and the options ``always_print_primitive_fields`` and ``preserve_proto_field_names``: here
  protobuf's Python ``MessageToDict`` with the same two options on the very same message. ``SignatureDef.defaults``
  (a field added in TF 2.x) is left out: the sandbox's model server is TF Serving 1.15, whose ``SignatureDef`` has
  only ``inputs``, ``outputs`` and ``method_name``;
- **predict** (``servables/tensorflow/predict_util.cc``): each input fed as a tensor of its signature dtype (JSON
  strings as UTF-8 bytes, ``{"b64": ...}`` decoded), every signature output fetched; TF's own errors come back
  with their status code (a shape the graph rejects is INVALID_ARGUMENT);
- **classify / regress** (``classifier.cc`` / ``regressor.cc`` with ``util/json_tensor.cc``): the examples become
  serialized ``tf.train.Example`` protos fed to the signature's single ``inputs`` tensor (the ``context`` merged
  into each, as ``InputToSerializedExampleTensor`` does); ``classes``/``scores`` ``[batch, n]`` become per-example
  ``[label, score]`` pairs, the regression ``outputs`` ``[batch]`` or ``[batch, 1]`` one value per example.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from .tensors import ApiError, invalid

SERVE_TAG = "serve"
CLASSIFY_INPUTS = "inputs"  # tensorflow/cc/saved_model/signature_constants.h kClassifyInputs
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"


def import_tensorflow() -> Any:
    """``import tensorflow`` (slow: seconds), or ImportError."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no oneDNN/CPU-feature banners in the sandbox's log
    import tensorflow as tf  # type: ignore[import-not-found]

    return tf


def read_meta_graph(export_dir: Path, tag: str = SERVE_TAG) -> Any:
    """The MetaGraphDef tagged ``tag`` of ``saved_model.pb`` (or ``.pbtxt``), as TensorFlow's own proto."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2  # type: ignore[import-not-found]

    sm = saved_model_pb2.SavedModel()
    pb = export_dir / "saved_model.pb"
    if pb.exists():
        sm.ParseFromString(pb.read_bytes())
    else:
        text_format.Parse((export_dir / "saved_model.pbtxt").read_text(), sm)
    for mg in sm.meta_graphs:
        if tag in mg.meta_info_def.tags:
            return mg
    raise LookupError(f"Could not find meta graph def matching supplied tags: {{ {tag} }}. To inspect available "
                      "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")


def render_signature_defs(meta_graph: Any) -> dict[str, Any]:
    """The ``signature_def`` map as TF Serving's REST metadata renders it (see the module docstring)."""
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any] = {}
    for name, sig in meta_graph.signature_def.items():
        d = MessageToDict(sig, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        d.pop("defaults", None)
        out[name] = d
    return out


def _status_code(e: Exception) -> str:
    """The canonical name (``INVALID_ARGUMENT`` ...) of a ``tf.errors.OpError``'s code."""
    from tensorflow.core.protobuf import error_codes_pb2  # type: ignore[import-not-found]

    try:
        return error_codes_pb2.Code.Name(int(e.error_code))  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return "UNKNOWN"


def _bytes_of(value: Any) -> Any:
    """JSON strings -> UTF-8 bytes, ``{"b64": ...}`` -> the decoded bytes, nested lists kept."""
    if isinstance(value, list):
        return [_bytes_of(v) for v in value]
    if isinstance(value, dict):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise invalid("Unable to base64 decode") from None
    return str(value).encode("utf-8")


def _json_of(value: Any, as_b64: bool) -> Any:
    """numpy -> JSON values; string tensors as text, or ``{"b64": ...}`` for outputs named ``*_bytes``."""
    if isinstance(value, list):
        return [_json_of(v, as_b64) for v in value]
    if isinstance(value, bytes):
        if as_b64:
            return {"b64": base64.b64encode(value).decode()}
        return value.decode("utf-8", errors="replace")
    return value


class SavedModelServable:
    kind = "saved_model"
    blocking = True  # runs TensorFlow: the REST API calls it in a worker thread

    def __init__(self, export_dir: Path, tf: Any | None = None) -> None:
        self.tf = tf or import_tensorflow()
        self.export_dir = Path(export_dir)
        self.meta_graph = read_meta_graph(self.export_dir)
        self._signatures = render_signature_defs(self.meta_graph)
        self.loaded = self.tf.saved_model.load(str(self.export_dir), tags=[SERVE_TAG])

    def signature_def(self) -> dict[str, Any]:
        return self._signatures

    # ---- running a signature -------------------------------------------------------------------------------------
    def _call(self, signature_name: str, feed: dict[str, Any]) -> dict[str, Any]:
        tf = self.tf
        fn = self.loaded.signatures.get(signature_name)
        if fn is None:
            raise invalid(f'Serving signature name: "{signature_name}" not found in signature def')
        try:
            out = fn(**feed)
        except tf.errors.OpError as e:
            raise ApiError(_status_code(e), e.message) from None
        except (TypeError, ValueError) as e:  # binding the feed to the function's TensorSpecs
            raise invalid(str(e).strip()) from None
        return {k: v.numpy() for k, v in out.items()}

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        tf = self.tf
        infos = self._signatures[signature_name].get("inputs") or {}
        feed = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(_dtype_enum(infos[key]["dtype"]))
            try:
                feed[key] = tf.constant(_bytes_of(value) if dtype == tf.string else value, dtype=dtype)
            except (TypeError, ValueError) as e:
                raise invalid(f"input {key}: {e}") from None
        outputs = self._call(signature_name, feed)
        return {k: _json_of(v.tolist(), k.endswith("_bytes") and v.dtype.kind in "OSU") for k, v in outputs.items()}

    def _examples_tensor(self, examples: list[dict[str, Any]], context: dict[str, Any] | None) -> Any:
        tf = self.tf
        serialized = []
        for ex in examples:
            merged = dict(context or {})
            merged.update(ex)
            feature = {}
            for name, (kind, values) in merged.items():
                if kind == "bytes":
                    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
                elif kind == "float":
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
                else:
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
            serialized.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        return tf.constant(serialized, dtype=tf.string)

    def _example_feed(self, signature_name: str, examples: list[dict[str, Any]],
                      context: dict[str, Any] | None, what: str) -> dict[str, Any]:
        inputs = self._signatures[signature_name].get("inputs") or {}
        if len(inputs) != 1 or CLASSIFY_INPUTS not in inputs:
            raise invalid(f"Expected one input Tensor named {CLASSIFY_INPUTS!r} in the {what} signature")
        if inputs[CLASSIFY_INPUTS].get("dtype") != "DT_STRING":
            raise invalid(f"Expected input Tensor {CLASSIFY_INPUTS!r} of the {what} signature to be DT_STRING")
        return {CLASSIFY_INPUTS: self._examples_tensor(examples, context)}

    def classify(self, signature_name: str, examples: list[dict[str, Any]],
                 context: dict[str, Any] | None) -> list[list[tuple[str, float]]]:
        out = self._call(signature_name, self._example_feed(signature_name, examples, context, "classification"))
        classes, scores = out.get(CLASSIFY_OUTPUT_CLASSES), out.get(CLASSIFY_OUTPUT_SCORES)
        if classes is None and scores is None:
            raise invalid(f"Expected classification signature outputs to contain at least one of "
                          f"{CLASSIFY_OUTPUT_CLASSES!r} or {CLASSIFY_OUTPUT_SCORES!r}")
        n = len(examples)
        for name, t in ((CLASSIFY_OUTPUT_CLASSES, classes), (CLASSIFY_OUTPUT_SCORES, scores)):
            if t is not None and (t.ndim != 2 or t.shape[0] != n):
                raise invalid(f"Expected Tensor shape: [{n} num_classes] but got {list(t.shape)} ({name})")
        width = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(n):
            row = []
            for j in range(width):
                label = classes[i][j].decode("utf-8", errors="replace") if classes is not None else ""
                row.append((label, float(scores[i][j]) if scores is not None else 0.0))
            results.append(row)
        return results

    def regress(self, signature_name: str, examples: list[dict[str, Any]],
                context: dict[str, Any] | None) -> list[float]:
        out = self._call(signature_name, self._example_feed(signature_name, examples, context, "regression"))
        t = out.get(REGRESS_OUTPUTS)
        if t is None:
            raise invalid(f"No regression outputs found in the signature: expected {REGRESS_OUTPUTS!r}")
        n = len(examples)
        if not (t.shape == (n,) or t.shape == (n, 1)):
            raise invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                          f"{list(t.shape)}")
        return [float(v) for v in t.reshape(n)]


def _dtype_enum(name: str) -> int:
    from tensorflow.core.framework import types_pb2  # type: ignore[import-not-found]

    return types_pb2.DataType.Value(name)
