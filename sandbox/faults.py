"""Fault injection: API throttling and 5xx per service, spot stock-outs, launch failures, spot reclaim notices,
slow OSS parts. From a YAML file (``sandbox up --faults FILE`` -> ``ctx.options["faults"]``) or the admin endpoint
(``PUT /faults`` on ``admin_endpoint``, see :mod:`sandbox.admin.service`).

File format (every field optional; unknown fields are rejected, errors name the field)::

    seed: 7                      # the random draws are seeded: the same requests in the same order fail the same way
    oss:                         # also: ack (the CS OpenAPI, service "cs"), kube (the Kubernetes API server),
                                 # sls (Log Service GetLogs, and the metrics adapter's queries through it)
      throttle_rate: 0.0         # share of requests refused as throttled (0..1)
      error_rate: 0.0            # share of requests answered with a 5xx (0..1)
      error_status: 500          # 500 | 502 | 503 | 504
      latency_s: 0.0             # real seconds added before the request is served
      rules:                     # the first rule that matches replaces the service-level values for that request
        - operation: UploadPart  # glob on the operation name (below); method / path: globs too
          latency_s: 0.5
    spot_stockouts:              # FleetService.set_spot_stock (restored when a new configuration drops the entry)
      - {instance_type: ecs.gn6i-c4g1.xlarge, zone: cn-hangzhou-i, available: 0}   # zone omitted: every zone
    boot_failures:               # launches that fail (ESS activity Failed/Warning, the group retries later)
      - {instance_type: "ecs.gn6i-*", zone: null, rate: 1.0, count: 2}             # count: stop after N failures
    reclaims:                    # spot interruption notices, `at` simulated seconds after the faults were applied
      - {at: 120, nodepool_id: np..., count: 1}                                    # or instance_id: i-...
    reclaim_rate: 0.0            # notices per running spot instance per simulated hour (Poisson), optional pool:
    reclaim_nodepool_id: null

Operation names (each service names its own: :class:`FaultTarget`): OSS as its API reference names them (``PutObject``, ``GetObject``, ``HeadObject``,
``GetObjectMeta``, ``DeleteObject``, ``CopyObject``, ``InitiateMultipartUpload``, ``UploadPart``,
``UploadPartCopy``, ``CompleteMultipartUpload``, ``AbortMultipartUpload``, ``ListParts``, ``ListObjects``,
``ListObjectsV2``, ``PutBucket``, ``DeleteBucket``, ``GetBucketInfo``, ``DeleteMultipleObjects``, ``ListBuckets``);
ACK by its OpenAPI action (``CreateClusterNodePool``, ``DescribeClusterNodePools``,
``DescribeClusterNodePoolDetail``, ``ScaleClusterNodePool``, ``ModifyClusterNodePool``, ``DeleteClusterNodepool``,
``DescribeClusterNodes``, ``DescribeClusterUserKubeconfig``, ``DescribeTaskInfo``, ``DescribeClusterDetail``);
SLS as ``GetLogs``; Kubernetes as ``<verb> <resource>[/<subresource>]`` like the audit log (``create deployments``, ``list pods``,
``watch pods``, ``patch deployments/scale``, ``get namespaces``; ``discovery`` for /api, /apis, /version,
/openapi).

Error shapes (what a client of the real service sees; each service renders its own: :mod:`sandbox.oss.operations`,
:func:`sandbox.ack.errors.injected_error`, :mod:`sandbox.kube.operations`):

- OSS: throttled -> 429 ``QpsLimitExceeded`` "Please reduce your request rate." (OSS "HTTP status code 429"
  page); 5xx -> 500 ``InternalError`` / 502 ``BadGateway`` / 503 ``ServiceUnavailable`` ("Thread pool is almost
  full, please retry later", OSS "HTTP status code 503" page) / 504 ``GatewayTimeout``, as the XML ``<Error>``
  document with ``x-oss-request-id`` (HEAD: no body, the document base64 in ``x-oss-err``).
- ACK: throttled -> 400 ``Throttling.User`` "Request was denied due to user flow control." (the POP gateway's
  flow-control error, listed with HTTP 400 in Alibaba Cloud's API error center); 5xx -> 500 ``InternalError`` /
  503 ``ServiceUnavailable`` "The request has failed due to a temporary failure of the server." (JSON with both
  spellings of code/message/requestId, as :mod:`sandbox.ack.errors`).
- SLS: throttled -> 503 ``ServerBusy``; 5xx -> ``InternalServerError`` with the status, JSON ``errorCode`` /
  ``errorMessage`` (SLS "Error codes"), :mod:`sandbox.sls.errors`. The metrics adapter's own GetLogs draws from
  the same configuration; its error becomes the external metrics API's 500 (:mod:`sandbox.metrics.service`).
- Kubernetes: throttled -> 429 ``Status`` reason ``TooManyRequests`` with ``Retry-After: 1`` and
  ``details.retryAfterSeconds`` (apimachinery ``NewTooManyRequests``, what the API server's max-in-flight filter
  answers); 5xx -> 500 ``InternalError`` / 503 ``ServiceUnavailable`` / 504 ``Timeout`` ``Status``.

The HTTP faults are an ASGI middleware (:func:`wrap_app`) the runner puts around the app of every service that is a
:class:`FaultTarget`; it asks the service which operation a request is, looks the active configuration up on each
request (so ``PUT /faults`` takes effect at once) and has the service render the error.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import random
import threading
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qs

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.spec import load_yaml, read_small_file

SERVICES = {"oss": "oss", "ack": "cs", "kube": "kube", "sls": "sls"}  # file key -> sandbox service name


# ---- schema --------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rates(_Strict):
    throttle_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of requests throttled")
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="share of requests answered with a 5xx")
    error_status: Literal[500, 502, 503, 504] = 500
    latency_s: float = Field(default=0.0, ge=0.0, le=300.0, description="real seconds added to each request")

    @model_validator(mode="after")
    def _sum(self) -> Rates:
        if self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("throttle_rate + error_rate must not exceed 1")
        return self


class Rule(Rates):
    operation: str | None = Field(default=None, description="glob on the operation name, e.g. UploadPart")
    method: str | None = Field(default=None, description="HTTP method (glob, case-insensitive)")
    path: str | None = Field(default=None, description="glob on the URL path")


class ServiceFaults(Rates):
    rules: list[Rule] = Field(default_factory=list)

    def active(self) -> bool:
        return bool(self.throttle_rate or self.error_rate or self.latency_s or self.rules)


class SpotStockout(_Strict):
    instance_type: str
    zone: str | None = None
    available: int = Field(default=0, ge=0)


class BootFailure(_Strict):
    instance_type: str = "*"
    zone: str | None = None
    spot: bool | None = None
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1, description="stop after this many failures")
    message: str = "InstanceLaunchFailed: the instance failed to start (injected fault)"


class ReclaimNotice(_Strict):
    at: float = Field(ge=0.0, description="simulated seconds after the faults were applied")
    instance_id: str | None = None
    nodepool_id: str | None = None
    count: int = Field(default=1, ge=1)


class FaultsSpec(_Strict):
    seed: int = 0
    oss: ServiceFaults = Field(default_factory=ServiceFaults)
    ack: ServiceFaults = Field(default_factory=ServiceFaults)
    kube: ServiceFaults = Field(default_factory=ServiceFaults)
    sls: ServiceFaults = Field(default_factory=ServiceFaults)
    spot_stockouts: list[SpotStockout] = Field(default_factory=list)
    boot_failures: list[BootFailure] = Field(default_factory=list)
    reclaims: list[ReclaimNotice] = Field(default_factory=list)
    reclaim_rate: float = Field(default=0.0, ge=0.0, description="notices per spot instance per simulated hour")
    reclaim_nodepool_id: str | None = None

    def for_service(self, name: str) -> ServiceFaults:
        key = next((k for k, svc in SERVICES.items() if svc == name), None)
        return getattr(self, key) if key else ServiceFaults()


def describe_validation_error(err: ValidationError, source: str) -> str:
    """``faults file x.yaml: oss.rules.0.throttle_rate: Input should be less than or equal to 1``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) if str(x).isprintable() and len(str(x)) <= 60 else repr(x)[:60]
                       for x in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {' '.join(e['msg'].split())}")
    return f"{source}: " + "; ".join(parts[:5]) + (f"; and {len(parts) - 5} more" if len(parts) > 5 else "")


def parse_spec(data: Any, source: str = "faults") -> FaultsSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return FaultsSpec.model_validate(data)
    except ValidationError as err:
        raise ValueError(describe_validation_error(err, source)) from None


# A faults file is a few KiB; the bounds keep /dev/zero, a FIFO, an alias bomb or thousands of nested brackets from
# hanging or exhausting the sandbox (the same bounds as a spec file, core.spec).
MAX_FAULTS_BYTES = 1024 * 1024


def load_text(raw: bytes, source: str) -> FaultsSpec:
    """A faults document (YAML or JSON) from bytes; ValueError naming ``source`` and what is wrong, in one line."""
    if len(raw) > MAX_FAULTS_BYTES:
        raise ValueError(f"{source}: larger than {MAX_FAULTS_BYTES} bytes; a faults file is a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source}: not UTF-8 text (byte {e.start})") from None
    try:
        data = load_yaml(text) if text.strip() else {}
    except RecursionError:
        raise ValueError(f"{source}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: not valid YAML: {' '.join(str(e).split())[:300]}") from None
    return parse_spec(data, source)


def load_file(path: str | Path) -> FaultsSpec:
    p = Path(path)
    try:
        raw = read_small_file(p, MAX_FAULTS_BYTES)
    except OSError as e:
        raise ValueError(f"faults file {p}: {e.strerror or e}") from None
    return load_text(raw, f"faults file {p}")


# ---- the services' side -------------------------------------------------------------------------------------------
Injected = tuple[int, list[tuple[bytes, bytes]], bytes]  # (status, headers, body) of an injected error


@runtime_checkable
class FaultTarget(Protocol):
    """A service faults can be injected into: it names each request's operation and renders the errors.

    ``name`` is the service's name (``oss``, ``cs``, ``kube``: the counters' key, and through :data:`SERVICES` the
    key of its section in the faults file); ``fault_operation`` names what a request is (``UploadPart``,
    ``ScaleClusterNodePool``, ``patch deployments/scale``), matched by the rules' ``operation`` globs;
    ``fault_error`` is what a client of the real service sees when it is throttled (``kind`` ``throttle``) or gets
    a 5xx (``kind`` ``error``, ``status`` 500..504).
    """

    name: str

    def fault_operation(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        ...

    def fault_error(self, kind: str, status: int, method: str, host: str) -> Injected: ...


# ---- the engine ----------------------------------------------------------------------------------------------------
class Decision(BaseModel):
    kind: Literal["pass", "throttle", "error"] = "pass"
    status: int = 0
    latency_s: float = 0.0
    operation: str = ""


class FaultEngine:
    """The active configuration, its seeded random streams and counters. Thread-safe."""

    def __init__(self, spec: FaultsSpec | None = None) -> None:
        self.lock = threading.Lock()
        self.spec = FaultsSpec()
        self.rngs: dict[str, random.Random] = {}
        self.counters: dict[str, dict[str, int]] = {}
        self.boot_failures_done: list[int] = []
        self.applied_at: float | None = None
        self.reclaims_done: list[bool] = []
        self.log: list[dict[str, Any]] = []
        self.set(spec or FaultsSpec())

    def set(self, spec: FaultsSpec, now: float | None = None) -> None:
        with self.lock:
            self.spec = spec
            self.rngs = {name: random.Random(f"{spec.seed}/{name}") for name in ("oss", "cs", "kube", "sls",
                                                                                  "boot", "reclaim")}
            self.counters = {name: {"requests": 0, "throttled": 0, "errors": 0, "delayed": 0}
                             for name in ("oss", "cs", "kube", "sls")}
            self.boot_failures_done = [0] * len(spec.boot_failures)
            self.reclaims_done = [False] * len(spec.reclaims)
            self.applied_at = now

    # HTTP -----------------------------------------------------------------------------------------------------------
    def active(self, service: str) -> bool:
        return self.spec.for_service(service).active()

    def decide(self, service: str, method: str, path: str, operation: str) -> Decision:
        sf = self.spec.for_service(service)
        rates: Rates = sf
        for rule in sf.rules:
            if rule.operation is not None and not fnmatch.fnmatchcase(operation, rule.operation):
                continue
            if rule.method is not None and not fnmatch.fnmatchcase(method.upper(), rule.method.upper()):
                continue
            if rule.path is not None and not fnmatch.fnmatchcase(path, rule.path):
                continue
            rates = rule
            break
        with self.lock:
            c = self.counters.setdefault(service, {"requests": 0, "throttled": 0, "errors": 0, "delayed": 0})
            c["requests"] += 1
            u = self.rngs[service].random() if (rates.throttle_rate or rates.error_rate) else 1.0
            if rates.latency_s:
                c["delayed"] += 1
            if u < rates.throttle_rate:
                c["throttled"] += 1
                return Decision(kind="throttle", status=429, latency_s=rates.latency_s, operation=operation)
            if u < rates.throttle_rate + rates.error_rate:
                c["errors"] += 1
                return Decision(kind="error", status=rates.error_status, latency_s=rates.latency_s,
                                operation=operation)
        return Decision(latency_s=rates.latency_s, operation=operation)

    # fleet ----------------------------------------------------------------------------------------------------------
    def launch_fault(self, instance_type: str, zone: str, spot: bool) -> str | None:
        """The fleet's ``launch_fault`` hook: an error message when this launch must fail."""
        with self.lock:
            for i, bf in enumerate(self.spec.boot_failures):
                if not fnmatch.fnmatchcase(instance_type, bf.instance_type):
                    continue
                if bf.zone is not None and bf.zone != zone:
                    continue
                if bf.spot is not None and bf.spot != spot:
                    continue
                if bf.count is not None and self.boot_failures_done[i] >= bf.count:
                    continue
                if self.rngs["boot"].random() < bf.rate:
                    self.boot_failures_done[i] += 1
                    self.log.append({"fault": "boot_failure", "instance_type": instance_type, "zone": zone})
                    return bf.message
        return None

    def due_reclaims(self, now: float) -> list[ReclaimNotice]:
        """Scheduled notices whose time has come (each returned once)."""
        out = []
        with self.lock:
            if self.applied_at is None:
                return []
            for i, r in enumerate(self.spec.reclaims):
                if not self.reclaims_done[i] and now >= self.applied_at + r.at:
                    self.reclaims_done[i] = True
                    out.append(r)
        return out

    def draw(self, stream: str = "reclaim") -> float:
        with self.lock:
            return self.rngs[stream].random()

    def reclaim_probability(self, dt: float) -> float:
        return 1.0 - math.exp(-self.spec.reclaim_rate * dt / 3600.0) if self.spec.reclaim_rate else 0.0

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"faults": self.spec.model_dump(mode="json"),
                    "counters": json.loads(json.dumps(self.counters)),
                    "boot_failures_done": list(self.boot_failures_done),
                    "reclaims_done": list(self.reclaims_done),
                    "injected": list(self.log[-100:])}


# ---- ASGI middleware -----------------------------------------------------------------------------------------------
class FaultMiddleware:
    """Wraps one service's ASGI app; injects that service's faults (see the module docstring)."""

    def __init__(self, app: Any, service: FaultTarget, engine: FaultEngine) -> None:
        self.app = app
        self.service = service
        self.engine = engine

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        engine, service = self.engine, self.service
        if scope.get("type") != "http" or not engine.active(service.name):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET").upper()
        path = scope.get("path", "/")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        d = engine.decide(service.name, method, path, service.fault_operation(method, path, query, headers))
        if d.latency_s:
            await asyncio.sleep(d.latency_s)
        if d.kind == "pass":
            await self.app(scope, receive, send)
            return
        # read the request body first, so the client is not cut off mid-upload
        while True:
            msg = await receive()
            if msg.get("type") != "http.request" or not msg.get("more_body"):
                break
        status, hdrs, body = service.fault_error(d.kind, d.status, method, headers.get("host", ""))
        hdrs.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})


def wrap_app(app: Any, service: Any, engine: FaultEngine) -> Any:
    """The runner's hook: wrap the apps of the services that name their operations (oss, cs, kube)."""
    if isinstance(service, FaultTarget):
        return FaultMiddleware(app, service, engine)
    return app
