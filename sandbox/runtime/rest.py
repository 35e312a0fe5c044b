"""TF Serving's HTTP/REST API as an ASGI app (one per model-server container).

Routing and errors follow tensorflow/serving ``model_servers/http_server.cc`` (only paths matching ``(?i)/v1/.*`` are
handled, anything else is a bare 404), ``http_rest_api_util.cc`` (the two path regexes below, URL-decoding of the
model name and label) and ``http_rest_api_handler.cc``:

- ``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` -> ``GetModelStatusResponse`` JSON;
- ``GET .../metadata`` -> ``{"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {...}}}}``;
- ``POST /v1/models/{m}[/versions/{v}|/labels/{l}]:(predict|classify|regress)``;
- any other GET/POST under ``/v1/`` (and other methods) -> 400 ``Malformed request: <METHOD> <path>``.

Every error is ``{"error": "<message>"}`` with the HTTP status of its TF code (``ToHTTPStatusCode``: INVALID_ARGUMENT
and FAILED_PRECONDITION 400, NOT_FOUND 404, UNIMPLEMENTED 501, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503 ...).
The public behaviour is documented in ``tensorflow_serving/g3doc/api_rest.md``.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote

from .capacity import Capacity, Overloaded
from .core import ServerCore
from .servables import RunError
from .tensors import (
    ApiError,
    check_shapes,
    invalid,
    make_classify_response,
    make_regress_response,
    make_response,
    parse_body,
    parse_classify_regress,
    parse_predict,
)

_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
                      re.IGNORECASE)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
                     re.IGNORECASE)
_HANDLED = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
JSON_HEADERS = [(b"content-type", b"application/json")]
CORS_HEADERS = [(b"access-control-allow-origin", b"*"), (b"access-control-allow-methods", b"POST, GET"),
                (b"access-control-allow-headers", b"Content-Type")]


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, indent=4).encode() + b"\n"


def error_body(message: str) -> bytes:
    return _dump({"error": message})


class RestApi:
    def __init__(self, core: ServerCore, capacity: Capacity, cors: bool = False) -> None:
        self.core = core
        self.capacity = capacity
        self.cors = cors
        self.requests = 0

    # ---- ASGI --------------------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        status, body = await self.dispatch(scope["method"], scope["path"], b"".join(chunks))
        headers = list(JSON_HEADERS) if body else []
        if self.cors:
            headers += CORS_HEADERS
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if not _HANDLED.fullmatch(path):
            return 404, b""
        self.requests += 1
        try:
            if method == "POST":
                m = _PREDICT.fullmatch(path)
                if m:
                    out = await self.post(m, body)
                    return 200, _dump(out)
            elif method in ("GET", "HEAD"):
                return self.get(path)
            raise invalid(f"Malformed request: {method} {path}")
        except ApiError as e:
            return e.http_status, error_body(e.message)

    # ---- GET ---------------------------------------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, bytes]:
        """Status or metadata (synchronous: the kubelet's readiness probe calls it too)."""
        try:
            m = _STATUS.fullmatch(path)
            if not m:
                raise invalid(f"Malformed request: GET {path}")
            name, version, label = self._spec(m.group(1), m.group(2), m.group(3))
            if not name:
                raise invalid("Missing model name in request.")
            if m.group(4):
                return 200, _dump(self.metadata(name, version, label))
            return 200, _dump(self.core.status(name, version, label))
        except ApiError as e:
            return e.http_status, error_body(e.message)

    @staticmethod
    def _spec(name: str | None, version: str | None, label: str | None) -> tuple[str, int | None, str | None]:
        v = None
        if version:
            try:
                v = int(version)
            except ValueError:
                raise invalid(f"Failed to convert version: {version} to numeric.") from None
            if v >= 2**63:
                raise invalid(f"Failed to convert version: {version} to numeric.")
        return unquote(name or ""), v, (unquote(label) if label else None)

    def metadata(self, name: str, version: int | None, label: str | None) -> dict[str, Any]:
        v, servable = self.core.handle(name, version, label)
        return {"model_spec": {"name": name, "signature_name": "", "version": str(v)},
                "metadata": {"signature_def": {"signature_def": servable.signature_def()}}}

    # ---- POST --------------------------------------------------------------------------------------------------------
    async def post(self, m: re.Match[str], body: bytes) -> dict[str, Any]:
        name, version, label = self._spec(m.group(1), m.group(2), m.group(3))
        method = m.group(4).lower()
        if method == "predict":
            return await self.predict(name, version, label, body)
        return await self.classify_regress(method, name, version, label, body)

    def _signature(self, servable: Any, sig_name: str) -> dict[str, Any]:
        sigs = servable.signature_def()
        sig = sigs.get(sig_name or "serving_default")
        if sig is None:
            raise invalid(f'Serving signature name: "{sig_name or "serving_default"}" not found in signature def')
        return sig

    async def predict(self, name: str, version: int | None, label: str | None, body: bytes) -> dict[str, Any]:
        doc = parse_body(body)
        found: dict[str, Any] = {}

        def infos_for(sig_name: str) -> dict[str, Any]:
            v, servable = self.core.handle(name, version, label)
            found.update(version=v, servable=servable, sig=self._signature(servable, sig_name))
            return found["sig"].get("inputs") or {}

        fmt, sig_name, tensors = parse_predict(doc, infos_for)
        sig, servable = found["sig"], found["servable"]
        if sig.get("method_name") not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ApiError("INTERNAL", f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                                       f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {sig.get('method_name')}")
        inputs = sig.get("inputs") or {}
        check_shapes(tensors, inputs)
        batch = max((len(t) for t in tensors.values() if isinstance(t, list)), default=1)
        try:
            async with self.capacity.serve(batch, getattr(servable, "extra_service_seconds", 0.0)):
                try:
                    if getattr(servable, "blocking", False):  # real TensorFlow: off the sandbox's event loop
                        outputs = await asyncio.to_thread(servable.run, sig_name or "serving_default", tensors)
                    else:
                        outputs = servable.run(sig_name or "serving_default", tensors)
                except ValueError as e:
                    raise invalid(str(e)) from None
                except RunError as e:
                    raise ApiError(e.code, e.message) from None
        except Overloaded as e:
            raise ApiError("RESOURCE_EXHAUSTED", str(e)) from None
        return make_response(fmt, outputs, sig.get("outputs") or {})

    async def classify_regress(self, method: str, name: str, version: int | None, label: str | None,
                               body: bytes) -> dict[str, Any]:
        """``:classify``/``:regress``: tf.Example input to a signature of the matching method (a SavedModel's)."""
        doc = parse_body(body)
        sig_name, context, examples = parse_classify_regress(doc, method)
        _, servable = self.core.handle(name, version, label)
        sig_name = sig_name or "serving_default"
        sig = servable.signature_def().get(sig_name)
        if sig is None:
            raise invalid(f"No signature was found with the name: {sig_name}")
        want, what = (CLASSIFY_METHOD, "classification") if method == "classify" else (REGRESS_METHOD, "regression")
        if sig.get("method_name") != want:
            raise invalid(f"Expected {what} signature method_name to be {want}. Was: {sig.get('method_name')}")
        run = getattr(servable, method, None)
        if run is None:
            raise ApiError("UNIMPLEMENTED", f"{method} on tf.Example input is not implemented by the sandbox's "
                                            f"model server ({servable.kind} servable)")
        try:
            async with self.capacity.serve(len(examples)):
                results = await asyncio.to_thread(run, sig_name, examples, context)
        except Overloaded as e:
            raise ApiError("RESOURCE_EXHAUSTED", str(e)) from None
        return make_classify_response(results) if method == "classify" else make_regress_response(results)
