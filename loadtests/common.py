"""Pure helpers shared by the locustfile (run by Locust in its own process) and the flow's parser.

Nothing here imports Locust: importing Locust monkey-patches the whole process with gevent, so the flow process
imports only this module, never ``loadtests/locustfile.py``.

* :func:`build_predict_body` turns TF Serving's REST metadata (``GET /v1/models/{m}/metadata``) into a valid
  ``:predict`` body for ANY signature: one instance, every input filled with small valid values of its dtype.
* The stage plan (:class:`StagePlan`): which stage a run time falls in, used by the load shape and to tag request
  names, so that per-stage statistics come straight out of Locust's per-name stats.
* Request names: ``predict [stage 2]`` (:func:`request_name`, :func:`parse_request_name`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Environment variables the locustfile reads (the task sets them).
ENV_MODEL = "EI_MODEL"
ENV_HOST_HEADER = "EI_HOST_HEADER"
ENV_EXTRA_HEADERS = "EI_EXTRA_HEADERS"  # JSON object of more request headers (the canary selector)
ENV_STAGES_FILE = "EI_STAGES_FILE"
ENV_STAGES = "EI_STAGES"  # the same JSON inline (when no file is given)
ENV_PAYLOAD_FILE = "EI_PAYLOAD_FILE"
ENV_WAIT_TIME = "EI_WAIT_TIME"
ENV_SIGNATURE = "EI_SIGNATURE"  # signature name; default: serving_default, else the only one
ENV_STAGE_LOG = "EI_STAGE_LOG"  # JSON lines written by the shape: when each stage began, and the end

PREDICT = "predict"
METADATA = "metadata"
_NAME = re.compile(r"^(?P<kind>[a-z]+) \[stage (?P<index>\d+)\]$")

DEFAULT_SIGNATURE = "serving_default"


# --- request names ---------------------------------------------------------------------------------------------
def request_name(kind: str, stage: int) -> str:
    return f"{kind} [stage {stage}]"


def parse_request_name(name: str) -> tuple[str, int | None]:
    """``"predict [stage 2]"`` → ``("predict", 2)``; any other name → ``(name, None)``."""
    m = _NAME.match(name)
    if not m:
        return name, None
    return m.group("kind"), int(m.group("index"))


# --- stages ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    duration_s: float
    users: int
    spawn_rate: float


class StagePlan:
    """A step load: each stage holds ``users`` for ``duration_s`` seconds (spawned at ``spawn_rate``)."""

    def __init__(self, stages: Iterable[Stage]) -> None:
        self.stages = list(stages)
        if not self.stages:
            raise ValueError("the load test needs at least one stage")
        self.ends: list[float] = []
        t = 0.0
        for s in self.stages:
            if s.duration_s <= 0 or s.users < 0 or s.spawn_rate <= 0:
                raise ValueError(f"invalid stage {s}: duration_s > 0, users >= 0 and spawn_rate > 0 are required")
            t += s.duration_s
            self.ends.append(t)

    @property
    def total_s(self) -> float:
        return self.ends[-1]

    def starts(self) -> list[float]:
        return [0.0, *self.ends[:-1]]

    def index_at(self, run_time: float) -> int | None:
        """The stage index (0-based) at ``run_time`` seconds, None once the plan is over."""
        for i, end in enumerate(self.ends):
            if run_time < end:
                return i
        return None

    @classmethod
    def from_json(cls, data: Any) -> StagePlan:
        if isinstance(data, dict):
            data = data.get("stages")
        if not isinstance(data, list):
            raise ValueError("stages must be a JSON list of {duration_s, users, spawn_rate}")
        return cls(
            Stage(float(s["duration_s"]), int(s["users"]), float(s.get("spawn_rate", 10))) for s in data
        )

    def to_json(self) -> list[dict[str, Any]]:
        return [{"duration_s": s.duration_s, "users": s.users, "spawn_rate": s.spawn_rate} for s in self.stages]


def load_stages(env: dict[str, str]) -> StagePlan:
    """The plan from ``EI_STAGES_FILE`` (a JSON file) or ``EI_STAGES`` (inline JSON)."""
    if env.get(ENV_STAGES_FILE):
        return StagePlan.from_json(json.loads(Path(env[ENV_STAGES_FILE]).read_text()))
    if env.get(ENV_STAGES):
        return StagePlan.from_json(json.loads(env[ENV_STAGES]))
    raise ValueError(f"set {ENV_STAGES_FILE} or {ENV_STAGES}: the load test has no stages")


# --- predict bodies from the signature --------------------------------------------------------------------------
INT_TYPES = {"DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16", "DT_UINT32", "DT_UINT64"}
FLOAT_TYPES = {"DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"}


class SignatureError(ValueError):
    """The metadata holds no signature we can build a ``:predict`` body for."""


def signature_defs(metadata: dict[str, Any]) -> dict[str, Any]:
    """The signature map of a metadata answer.

    TF Serving nests it twice (``metadata.signature_def.signature_def``, the JSON mapping of
    ``SignatureDefMap``); a single level is accepted too.
    """
    sig = (metadata.get("metadata") or {}).get("signature_def") or {}
    if isinstance(sig, dict) and isinstance(sig.get("signature_def"), dict):
        sig = sig["signature_def"]
    if not isinstance(sig, dict) or not sig:
        raise SignatureError("the model metadata has no signature_def")
    return sig


def choose_signature(signatures: dict[str, Any], wanted: str | None = None) -> str:
    if wanted:
        if wanted not in signatures:
            raise SignatureError(f"signature {wanted!r} not in the model's signatures {sorted(signatures)}")
        return wanted
    if DEFAULT_SIGNATURE in signatures:
        return DEFAULT_SIGNATURE
    predict = [
        n for n, s in signatures.items()
        if isinstance(s, dict) and s.get("method_name", "").endswith("/predict") and n != "__saved_model_init_op"
    ]
    if len(predict) == 1:
        return predict[0]
    raise SignatureError(
        f"cannot choose a signature among {sorted(signatures)}: set {ENV_SIGNATURE} (no serving_default)"
    )


def _dims(info: dict[str, Any]) -> list[int] | None:
    shape = info.get("tensor_shape") or {}
    if shape.get("unknown_rank"):
        return None
    return [int(d.get("size", -1)) for d in shape.get("dim") or []]


def _value(dtype: str, name: str) -> Any:
    if dtype in INT_TYPES:
        return 1
    if dtype in FLOAT_TYPES:
        return 0.5
    if dtype == "DT_BOOL":
        return True
    if dtype == "DT_STRING":
        # TF Serving: inputs whose name ends in "_bytes" carry binary data as {"b64": ...}.
        return {"b64": base64.b64encode(b"a").decode()} if name.endswith("_bytes") else "a"
    if dtype in ("DT_COMPLEX64", "DT_COMPLEX128"):
        raise SignatureError(f"input {name!r}: complex dtype {dtype} cannot be written in TF Serving's JSON")
    raise SignatureError(f"input {name!r}: unsupported dtype {dtype!r}")


def _fill(dims: list[int], value: Any) -> Any:
    if not dims:
        return value
    n = dims[0] if dims[0] >= 0 else 1
    return [_fill(dims[1:], value) for _ in range(n)]


def build_predict_body(metadata: dict[str, Any], signature: str | None = None) -> dict[str, Any]:
    """A valid ``:predict`` body for the signature: ONE example, every input filled with small valid values.

    Integers are 1 (a valid token id, mask and segment id alike), floats 0.5, booleans true, strings ``"a"``
    (``{"b64": ...}`` for ``*_bytes`` inputs). Unknown dimensions (-1) become 1. When every input has a leading
    batch dimension of -1 the row format is used (``instances``: the batch dimension dropped from each
    instance); otherwise the columnar format (``inputs``, full shapes).
    """
    signatures = signature_defs(metadata)
    name = choose_signature(signatures, signature)
    inputs = (signatures[name] or {}).get("inputs") or {}
    if not inputs:
        raise SignatureError(f"signature {name!r} has no inputs")
    shapes = {k: _dims(v) for k, v in inputs.items()}
    values = {k: _value(str(v.get("dtype", "")), k) for k, v in inputs.items()}
    row = all(d is not None and d and d[0] == -1 for d in shapes.values())
    body: dict[str, Any] = {"signature_name": name}
    if row:
        instance = {k: _fill((shapes[k] or [])[1:], values[k]) for k in inputs}
        body["instances"] = [instance]
    else:
        body["inputs"] = {k: _fill(shapes[k] if shapes[k] is not None else [1], values[k]) for k in inputs}
    return body


def predict_ok(payload: Any) -> str | None:
    """None when a ``:predict`` answer carries predictions/outputs, else what is wrong with it."""
    if not isinstance(payload, dict):
        return "the answer is not a JSON object"
    if "error" in payload:
        return f"error: {str(payload['error'])[:200]}"
    if "predictions" not in payload and "outputs" not in payload:
        return "the answer has neither predictions nor outputs"
    return None
