"""Model-registry webhooks → Prefect events: the receiver behind `elastic-inference registry-webhook`.

Prefect's own webhooks exist only in Prefect Cloud, so a self-hosted server needs something to turn a registry's
HTTP callback into a Prefect event. This service accepts MLflow (3.3+) model registry webhooks::

    POST /webhooks/mlflow
    X-MLflow-Delivery-Id: <uuid4>          X-MLflow-Timestamp: <unix seconds>
    X-MLflow-Signature: v1,<base64(HMAC-SHA256(secret, f"{delivery_id}.{timestamp}.{raw_body}"))>
    {"entity": "model_version", "action": "created", "timestamp": "...", "data": {"name", "version", "source", ...}}

checks the signature (constant-time), refuses stale timestamps (401) and replayed delivery ids (409), keeps only
the registry events configured to deploy (event types, aliases such as ``champion``, a model allowlist, tags),
resolves where the model's files are, and posts one Prefect event to ``{PREFECT_API_URL}/events``::

    event     model.version.registered
    resource  {"prefect.resource.id": "mlflow.model.<name>.<version>", "prefect.resource.name": "<name> v<version>"}
    payload   {"name", "version", "source", "alias", "run_id", "tags", "registry_event", "registry_source"}

The ``on-model-registered`` deployment of ``prefect.yaml`` is triggered by it. ``payload.source`` is where the
deploy flow can read the model: a local path (``model.local_dir``) or ``oss://bucket/prefix`` (``model.source_uri``,
copied inside OSS); MLflow URIs (``models:/``, ``runs:/``, ``file://``, ...) are resolved to one of those with the
MLflow client (when it is installed); the registry's own string stays in ``registry_source``.

The event is posted over HTTP, not with ``prefect.events.emit_event``: emit_event hands the event to a background
thread and returns before the server has it, so a server process could not tell the registry to retry. A 2xx from
``/events`` can; any failure answers 502 and MLflow redelivers (its session retries 5xx).

Secrets (the webhook secret, the Prefect API key) are held as ``SecretStr`` and never logged; neither is the
signature header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

log = logging.getLogger("elastic_inference.registry_webhook")

EVENT_NAME = "model.version.registered"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_VERSION = "v1"

# A registry delivery is a few hundred bytes (MLflow's payload: entity, action, timestamp and one version's
# fields); bodies above this are refused with 413 before they are read, and before the signature is checked.
MAX_BODY_BYTES = 256 * 1024
# Nesting beyond this is refused (400) rather than left to the JSON parser's recursion limit.
MAX_JSON_DEPTH = 32
# The freshness window: MLflow's documentation verifies deliveries with a 5-minute tolerance; more than an hour
# would make the replay window (twice the tolerance) meaningless.
MAX_TOLERANCE_S = 3600.0
TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658

RegistryEvent = Literal["model_version.created", "model_version_alias.created", "model_version_tag.set"]
DEFAULT_EVENT_TYPES: frozenset[str] = frozenset({"model_version.created", "model_version_alias.created"})


# --- shapes -------------------------------------------------------------------------------------------------------
class ModelVersionEvent(BaseModel):
    """One registered model version that should be deployed: the payload of the Prefect event."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Registered model name")
    version: str = Field(min_length=1, description="Registry version of the model")
    source: str = Field(min_length=1, description="Where the deploy flow reads the model: a local path or oss://")
    alias: str | None = Field(default=None, description="The alias that was set, for alias events")
    run_id: str | None = Field(default=None, description="Training run that produced the version")
    tags: dict[str, str] = Field(default_factory=dict, description="The version's tags")
    registry: str = Field(default="mlflow", pattern=r"^[a-z0-9][a-z0-9-]*$", description="Registry kind")
    registry_event: str = Field(default="manual", description="What happened in the registry")
    registry_source: str | None = Field(default=None, description="The source as the registry gave it")

    @property
    def resource_id(self) -> str:
        return f"{self.registry}.model.{self.name}.{self.version}"

    def to_prefect_event(self, event_id: uuid.UUID | None = None, occurred: datetime | None = None) -> dict[str, Any]:
        """The event as ``POST /api/events`` takes it."""
        return {
            "id": str(event_id or uuid.uuid4()),
            "occurred": (occurred or datetime.now(UTC)).isoformat(),
            "event": EVENT_NAME,
            "resource": {
                "prefect.resource.id": self.resource_id,
                "prefect.resource.name": f"{self.name} v{self.version}",
                "elastic-inference.registry": self.registry,
            },
            "related": [],
            "payload": self.model_dump(mode="json", exclude={"registry"}),
        }


class ReceiverConfig(BaseModel):
    """Settings of the receiver; the CLI builds it from its options."""

    model_config = ConfigDict(extra="forbid")

    secret: SecretStr = Field(description="Webhook secret shared with MLflow (HMAC-SHA256 key)")
    prefect_api_url: str = Field(description="Prefect API URL, e.g. http://127.0.0.1:4200/api")
    prefect_api_key: SecretStr | None = Field(default=None, description="Prefect Cloud API key (Bearer)")
    prefect_auth_string: SecretStr | None = Field(default=None, description="Self-hosted basic auth user:pass")
    tolerance_s: float = Field(
        default=300, gt=0, le=MAX_TOLERANCE_S, allow_inf_nan=False,
        description="Largest accepted |now - X-MLflow-Timestamp|",
    )
    replay_ttl_s: float | None = Field(
        default=None, gt=0, le=2 * MAX_TOLERANCE_S, allow_inf_nan=False,
        description="How long a delivery id is remembered; default twice the tolerance",
    )
    replay_file: Path | None = Field(default=None, description="Persist seen delivery ids here across restarts")
    event_types: frozenset[RegistryEvent] = Field(
        default=DEFAULT_EVENT_TYPES, description="Registry events that deploy"
    )
    aliases: frozenset[str] = Field(default=frozenset(), description="Alias events deploy only for these (empty: any)")
    models: frozenset[str] = Field(default=frozenset(), description="Only these registered models deploy (empty: any)")
    deploy_tags: dict[str, str] = Field(
        default_factory=dict, description="Tag events deploy only when the tag set is one of these key=value"
    )
    mlflow_tracking_uri: str | None = Field(default=None, description="MLflow tracking server for lookups")
    download_dir: Path | None = Field(
        default=None, description="Download artifacts that are neither local nor on OSS here (else refuse them)"
    )

    @property
    def replay_ttl(self) -> float:
        return self.replay_ttl_s or 2 * self.tolerance_s


class WebhookRefused(Exception):
    """A delivery answered with an HTTP error; ``reason`` is safe to log (no secret, no signature)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SourceError(ValueError):
    """The model source cannot be turned into something the deploy flow reads."""


# --- signature, freshness, replay ---------------------------------------------------------------------------------
def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """MLflow's ``X-MLflow-Signature`` value for a delivery (mlflow/webhooks/delivery.py)."""
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def signature_valid(secret: str, delivery_id: str, timestamp: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of the signature header; any malformed header is simply invalid."""
    if not header:
        return False
    version, _, given = header.partition(",")
    if version.strip() != SIGNATURE_VERSION or not given:
        return False
    try:
        given_mac = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return hmac.compare_digest(mac, given_mac)


class ReplayGuard:
    """Delivery ids seen in the last ``ttl`` seconds (optionally persisted as JSON {id: expiry})."""

    def __init__(self, ttl: float, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        if path is not None and path.is_file():
            try:
                self._seen = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
            except (OSError, ValueError, AttributeError, RecursionError):
                log.warning("replay file %s unreadable; starting empty", path)
        if path is not None:
            try:
                self._save()  # a file that cannot be written is refused now, not at every delivery
            except OSError as exc:
                raise ValueError(f"replay file {path}: cannot be written: {exc.strerror or exc}") from None

    def claim(self, delivery_id: str) -> bool:
        """Record ``delivery_id``; False if it was already seen (a replay)."""
        now = self.clock()
        with self._lock:
            self._seen = {k: exp for k, exp in self._seen.items() if exp > now}
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now + self.ttl
            self._save_or_log()
            return True

    def release(self, delivery_id: str) -> None:
        """Forget a claim whose processing failed, so that the registry's retry is accepted."""
        with self._lock:
            self._seen.pop(delivery_id, None)
            self._save_or_log()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self._seen))
        tmp.replace(self.path)

    def _save_or_log(self) -> None:
        """Persist; if the file became unwritable since the start (disk full, removed directory) the ids stay
        remembered in memory and the failure is logged, so deliveries are still answered."""
        try:
            self._save()
        except OSError as exc:
            log.error("replay file %s cannot be written (%s); delivery ids kept in memory only", self.path,
                      exc.strerror or exc)


# --- model source -------------------------------------------------------------------------------------------------
def _mlflow_client(tracking_uri: str | None):
    if not tracking_uri:
        # MLflow's own default is a sqlite database in the current directory (mlruns / mlflow.db): looking a
        # version up there would create it and find nothing
        raise SourceError("resolving an MLflow source needs the tracking server: set --mlflow-tracking-uri or "
                          "MLFLOW_TRACKING_URI")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise SourceError("resolving an MLflow source needs the mlflow package (pip install mlflow)") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_source(
    source: str,
    *,
    name: str | None = None,
    version: str | None = None,
    tracking_uri: str | None = None,
    download_dir: Path | None = None,
) -> str:
    """Where the deploy flow reads the model: a local directory path or an ``oss://bucket/prefix`` URI.

    ``oss://`` stays as it is (the flow copies it inside OSS); a local path or ``file://`` URI becomes a path;
    ``models:/`` and ``runs:/`` URIs are looked up with the MLflow client and their artifact location resolved
    the same way; anything else (``s3://``, ``mlflow-artifacts:/``, ...) is downloaded into ``download_dir`` when
    one is configured, and refused otherwise.
    """
    parsed = urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme == "oss":
        return source
    if scheme == "file":
        return unquote(parsed.path)
    if scheme == "" or (len(scheme) == 1 and source[1:3] in (":\\", ":/")):  # a path (or a Windows drive)
        return source
    if scheme in ("models", "runs"):
        return resolve_source(
            _mlflow_location(source, name, version, tracking_uri),
            tracking_uri=tracking_uri,
            download_dir=download_dir,
        )
    if download_dir is None:
        raise SourceError(
            f"model source {source!r} is neither a local path nor oss://; start the receiver with a download "
            "directory to fetch such artifacts, or register the model from OSS or a shared path"
        )
    try:
        import mlflow.artifacts
    except ImportError:
        raise SourceError(f"downloading {source!r} needs the mlflow package") from None
    dest = Path(download_dir) / hashlib.sha256(source.encode()).hexdigest()[:16]
    dest.mkdir(parents=True, exist_ok=True)
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dest), tracking_uri=tracking_uri)


def _mlflow_location(uri: str, name: str | None, version: str | None, tracking_uri: str | None) -> str:
    client = _mlflow_client(tracking_uri)
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        return RunsArtifactRepository.get_underlying_uri(uri, tracking_uri=tracking_uri)
    ref = uri.removeprefix("models:/").strip("/")
    if ref.startswith("m-") and "/" not in ref:  # an MLflow 3 logged model id
        return client.get_logged_model(ref).artifact_location
    if "@" in ref:
        model, alias = ref.split("@", 1)
        ref = f"{model}/{client.get_model_version_by_alias(model, alias).version}"
    model, _, ver = ref.rpartition("/")
    if not model:
        if name is None or version is None:
            raise SourceError(f"cannot resolve {uri!r}: expected models:/<name>/<version>")
        model, ver = name, version
    return client.get_model_version_download_uri(model, ver)


def version_from_registry(name: str, version: str, tracking_uri: str | None) -> dict[str, Any]:
    """Source, run id and tags of one model version, read from the MLflow registry."""
    mv = _mlflow_client(tracking_uri).get_model_version(name, version)
    return {"source": mv.source, "run_id": mv.run_id or None, "tags": dict(mv.tags or {})}


def urlparse_scheme(source: str) -> str:
    try:
        return urlparse(source).scheme.lower()
    except ValueError:
        return ""


# --- mapping a delivery to the event --------------------------------------------------------------------------------
def map_delivery(body: dict[str, Any], config: ReceiverConfig) -> ModelVersionEvent | str:
    """The event to emit for one verified delivery, or the reason it is ignored (a string)."""
    entity, action = body.get("entity"), body.get("action")
    if not isinstance(entity, str) or not isinstance(action, str):
        raise WebhookRefused(400, "the delivery has no entity and action strings")
    kind = f"{entity}.{action}"
    data = body.get("data")
    if not isinstance(data, dict):
        raise WebhookRefused(400, "the delivery has no data object")
    if kind not in config.event_types:
        return f"registry event {kind[:200]} does not deploy"
    name, version = data.get("name"), data.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version:
        raise WebhookRefused(400, f"{kind} without a model name and version (strings)")
    for field in ("alias", "key", "value", "source", "run_id"):
        if data.get(field) is not None and not isinstance(data.get(field), str):
            raise WebhookRefused(400, f"{kind}: data.{field} must be a string")
    if data.get("tags") is not None and not isinstance(data.get("tags"), dict):
        raise WebhookRefused(400, f"{kind}: data.tags must be an object")
    if config.models and name not in config.models:
        return f"model {name!r} is not in the allowlist"
    alias = None
    if kind == "model_version_alias.created":
        alias = data.get("alias")
        if config.aliases and alias not in config.aliases:
            return f"alias {alias!r} does not deploy"
    if kind == "model_version_tag.set":
        key, value = data.get("key"), data.get("value")
        if config.deploy_tags.get(str(key)) != value:
            return f"tag {key}={value} does not deploy"
    source, run_id, tags = data.get("source"), data.get("run_id"), data.get("tags")
    if not source:
        # Alias and tag deliveries name the version only: read it from the registry.
        if not config.mlflow_tracking_uri:
            raise WebhookRefused(
                422, f"{kind} carries no model source and no MLflow tracking URI is configured to look it up"
            )
        try:
            found = version_from_registry(name, version, config.mlflow_tracking_uri)
        except SourceError as exc:
            raise WebhookRefused(422, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the registry's error type varies; its message names the cause
            raise WebhookRefused(502, f"MLflow lookup of {name} v{version} failed: {type(exc).__name__}") from None
        source, run_id, tags = found["source"], found["run_id"], found["tags"] if tags is None else tags
    if urlparse_scheme(str(source)) in ("models", "runs") and not config.mlflow_tracking_uri:
        raise WebhookRefused(422, f"source {str(source)[:200]!r} is an MLflow URI and no MLflow tracking URI is "
                                  "configured to resolve it")
    try:
        where = resolve_source(
            str(source), name=name, version=version,
            tracking_uri=config.mlflow_tracking_uri, download_dir=config.download_dir,
        )
    except SourceError as exc:
        raise WebhookRefused(422, str(exc)) from None
    except ValueError as exc:  # urlparse refuses some strings (an unbalanced IPv6 bracket)
        raise WebhookRefused(422, f"model source is not a path or URI: {exc}") from None
    try:
        return ModelVersionEvent(
            name=name, version=version, source=where, alias=alias, run_id=run_id or None,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            registry="mlflow", registry_event=kind, registry_source=str(source),
        )
    except ValidationError as exc:
        raise WebhookRefused(400, f"cannot map the delivery: {exc.errors()[0]['msg']}") from None


# --- posting to Prefect ---------------------------------------------------------------------------------------------
def prefect_headers(api_key: SecretStr | None, auth_string: SecretStr | None) -> dict[str, str]:
    if api_key is not None:
        return {"Authorization": f"Bearer {api_key.get_secret_value()}"}
    if auth_string is not None:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.get_secret_value().encode()).decode()}
    return {}


def prefect_settings() -> tuple[str | None, SecretStr | None, SecretStr | None]:
    """API URL, API key and auth string of the active Prefect profile/environment."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    return (
        api.url,
        api.key if api.key is None or isinstance(api.key, SecretStr) else SecretStr(str(api.key)),
        api.auth_string if api.auth_string is None or isinstance(api.auth_string, SecretStr)
        else SecretStr(str(api.auth_string)),
    )


def post_event(
    event: dict[str, Any], api_url: str, api_key: SecretStr | None = None, auth_string: SecretStr | None = None,
    timeout: float = 30,
) -> None:
    """``POST {api_url}/events`` (synchronously: the caller knows the server has it)."""
    response = httpx.post(
        api_url.rstrip("/") + "/events", json=[event], headers=prefect_headers(api_key, auth_string), timeout=timeout
    )
    response.raise_for_status()


def emit_model_event(
    name: str, version: str, source: str, *, alias: str | None = None, run_id: str | None = None,
    tags: dict[str, str] | None = None, registry: str = "mlflow", tracking_uri: str | None = None,
    download_dir: Path | None = None, api_url: str | None = None,
) -> dict[str, Any]:
    """Emit ``model.version.registered`` for one model version (CI jobs, registries without webhooks)."""
    url, key, auth = prefect_settings()
    api_url = api_url or url
    if not api_url:
        raise ValueError("no Prefect API configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    where = resolve_source(source, name=name, version=version, tracking_uri=tracking_uri, download_dir=download_dir)
    event = ModelVersionEvent(
        name=name, version=version, source=where, alias=alias, run_id=run_id, tags=tags or {},
        registry=registry, registry_event="manual", registry_source=source,
    ).to_prefect_event()
    post_event(event, api_url, key, auth)
    return event


# --- the HTTP service -----------------------------------------------------------------------------------------------
def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return False


def loggable(text: str, limit: int = 80) -> str:
    """``text`` for one log line: control characters (newline, NUL, ESC, ...) escaped, so a signed field cannot
    start a forged line, and cut to ``limit`` characters."""
    text = str(text)
    if text.isprintable():
        return text[:limit]
    return text.encode("unicode_escape").decode("ascii")[:limit]


def create_app(config: ReceiverConfig, replay: ReplayGuard | None = None):
    """The Starlette application: ``POST /webhooks/mlflow`` and ``GET /healthz``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    guard = replay or ReplayGuard(config.replay_ttl, config.replay_file)
    secret = config.secret.get_secret_value()
    headers = prefect_headers(config.prefect_api_key, config.prefect_auth_string)
    events_url = config.prefect_api_url.rstrip("/") + "/events"

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def mlflow_webhook(request: Request) -> JSONResponse:
        delivery_id = request.headers.get(DELIVERY_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        try:
            # MLflow posts JSON with "Content-Type: application/json" (mlflow/webhooks/delivery.py); anything else
            # is not a delivery, refused before the body is read
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise WebhookRefused(415, "Content-Type must be application/json")
            body = await _bounded_body(request)
            outcome = await _handle(body, delivery_id, timestamp, request.headers.get(SIGNATURE_HEADER))
        except WebhookRefused as exc:
            log.warning("delivery %s refused (%d): %s", loggable(delivery_id) or "-", exc.status,
                        loggable(exc.reason, 300))
            return JSONResponse({"status": "refused", "reason": exc.reason}, status_code=exc.status)
        return JSONResponse(outcome)

    async def _bounded_body(request: Request) -> bytes:
        """The body, refused with 413 before it is read when its declared length is too big, or as soon as
        the bytes received pass the limit (a chunked body declares none)."""
        declared = request.headers.get("content-length")
        if declared is not None and (not (declared.isascii() and declared.isdigit()) or len(declared) > 12
                                     or int(declared) > MAX_BODY_BYTES):
            raise WebhookRefused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise WebhookRefused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(body: bytes, delivery_id: str, timestamp: str, signature: str | None) -> dict[str, Any]:
        if not delivery_id or not timestamp:
            raise WebhookRefused(400, f"missing {DELIVERY_HEADER} or {TIMESTAMP_HEADER}")
        # MLflow sends str(int(time.time())): digits only. "nan", "1e9", "+1", " 1" are refused before any
        # arithmetic (a NaN timestamp compares false with everything, so it would pass the freshness check).
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= TIMESTAMP_DIGITS):
            raise WebhookRefused(400, f"{TIMESTAMP_HEADER} must be unix seconds: an integer of at most "
                                      f"{TIMESTAMP_DIGITS} digits")
        if not signature_valid(secret, delivery_id, timestamp, body, signature):
            raise WebhookRefused(401, "bad or missing signature")
        sent = int(timestamp)
        if not abs(time.time() - sent) <= config.tolerance_s:
            raise WebhookRefused(401, f"stale delivery: timestamp outside {config.tolerance_s:g} s")
        if not guard.claim(delivery_id):
            raise WebhookRefused(409, "delivery id already seen (replay)")
        try:
            try:
                payload = json.loads(body)
            except RecursionError:
                raise WebhookRefused(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
            except ValueError:  # includes UnicodeDecodeError
                raise WebhookRefused(400, "the body is not UTF-8 JSON") from None
            if _too_deep(payload):
                raise WebhookRefused(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels")
            if not isinstance(payload, dict):
                raise WebhookRefused(400, "the body is not a JSON object")
            mapped = await run_in_threadpool(map_delivery, payload, config)
            if isinstance(mapped, str):
                log.info("delivery %s ignored: %s", loggable(delivery_id), loggable(mapped, 300))
                return {"status": "ignored", "reason": mapped}
            # One event id per delivery: Prefect de-duplicates events by id, so a retried post is harmless.
            event = mapped.to_prefect_event(event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"mlflow-delivery:{delivery_id}"))
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    response = await http.post(events_url, json=[event], headers=headers)
                    response.raise_for_status()
            except httpx.HTTPError as exc:
                raise WebhookRefused(502, f"posting the event to Prefect failed: {type(exc).__name__}") from None
        except BaseException:
            guard.release(delivery_id)  # let the registry's retry through
            raise
        log.info(
            "delivery %s: %s → %s %s (source %s)",
            loggable(delivery_id), mapped.registry_event, EVENT_NAME, loggable(mapped.resource_id, 300),
            loggable(mapped.source, 300),
        )
        return {"status": "emitted", "event_id": event["id"], "resource_id": mapped.resource_id}

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/webhooks/mlflow", mlflow_webhook, methods=["POST"]),
        ]
    )


def serve(config: ReceiverConfig, host: str = "127.0.0.1", port: int = 8787, log_level: str = "info",
          replay: ReplayGuard | None = None) -> None:
    import uvicorn

    log.info(
        "receiving MLflow webhooks on http://%s:%d/webhooks/mlflow → %s/events (events %s%s%s)",
        host, port, config.prefect_api_url.rstrip("/"), ",".join(sorted(config.event_types)),
        f"; aliases {','.join(sorted(config.aliases))}" if config.aliases else "",
        f"; models {','.join(sorted(config.models))}" if config.models else "",
    )
    uvicorn.run(create_app(config, replay), host=host, port=port, log_level=log_level)


def secret_from_env(var: str) -> SecretStr:
    value = os.environ.get(var)
    if not value:
        raise ValueError(f"the webhook secret is read from ${var}, which is not set")
    return SecretStr(value)
