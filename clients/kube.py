"""The one way the steps talk to Kubernetes: server-side apply and watch-based waits over the official client.

Clients. :class:`KubeClients` is built from a kubeconfig (ACK's DescribeClusterUserKubeconfig text, or a file)
with ``kubernetes.config.new_client_from_config_dict(..., persist_config=False)``: nothing is written back to the
kubeconfig. The client library itself writes embedded certificate data (CA, and a client certificate/key when the
kubeconfig carries one, as ACK's does) to ``tempfile.mkstemp`` files, which are 0600 and removed at exit
(``kubernetes/config/kube_config.py`` ``_create_temp_file_with_content``); a bearer token is never written.

Server-side apply, through the TYPED API with ``_content_type``. Each kind we apply maps to its generated
``patch_*`` method (``CoreV1Api.patch_namespaced_secret``, ``AppsV1Api.patch_namespaced_deployment``, ...) called
with ``_content_type="application/apply-patch+yaml"``, ``field_manager``, ``force`` and ``field_validation=Strict``.
The client sends a dict body of that type as JSON (JSON is YAML; ``kubernetes/client/rest.py``). We chose it over
``dynamic.DynamicClient`` because the DynamicClient discovers every group first (``/version``, ``/apis``,
``/api/v1``, each ``/apis/{g}/{v}``) and caches that in a file under ``$TMPDIR``: extra round trips and state on
disk for a fixed set of kinds that the typed API already knows. The same table drives ``get``, ``list`` and
``watch``. Responses are read raw (``_preload_content=False``) and returned as the server's JSON dicts, so
predicates see exactly what the server sent. A PATCH of ``application/apply-patch+yaml`` creates the object when
it does not exist (Kubernetes "Server-Side Apply"), so one call is create-or-update; applying the same manifest
again changes nothing (no new resourceVersion, no generation bump).

Errors and retries (``tenacity``). Throttling (429), 5xx and connection errors/timeouts are retried with
exponential backoff and jitter (a ``Retry-After`` header is honoured); apply is idempotent, so retrying it is
safe. Every other 4xx surfaces at once as :class:`KubeApiError` carrying the server's Status ``reason``,
``message`` and ``details.causes`` (e.g. 422 Invalid with the offending fields). Error texts never contain the
values of a Secret being applied.

Waits. :meth:`KubeClients.wait_for` lists the object (``fieldSelector=metadata.name=<name>``), then watches from
the list's resourceVersion (``allowWatchBookmarks``), resuming from the last resourceVersion seen when the stream
ends and re-listing on ``410 Expired``, like ``kubectl wait``. On timeout, :class:`WaitTimeout` says what was last
seen (phase, replica counts, conditions, load balancer) and the object's recent Events
(``involvedObject.kind/name`` field selectors), plus those of its pods and ReplicaSets when a pod selector is given
(that is where FailedScheduling and FailedMount are reported).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from clients.logs import run_logger
from clients.waiting import poll_until

log = logging.getLogger(__name__)


FIELD_MANAGER = "elastic-inference"
APPLY_PATCH = "application/apply-patch+yaml"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


Propagation = Literal["Foreground", "Background", "Orphan"]


class Kind(NamedTuple):
    api_version: str
    kind: str
    api: type
    suffix: str  # the generated method suffix: patch_<suffix>, read_<suffix>, list_<suffix>
    namespaced: bool


KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind("v1", "Namespace", k8s.CoreV1Api, "namespace", False),
        Kind("v1", "Secret", k8s.CoreV1Api, "namespaced_secret", True),
        Kind("v1", "ConfigMap", k8s.CoreV1Api, "namespaced_config_map", True),
        Kind("v1", "Service", k8s.CoreV1Api, "namespaced_service", True),
        Kind("v1", "Pod", k8s.CoreV1Api, "namespaced_pod", True),
        Kind("v1", "Node", k8s.CoreV1Api, "node", False),
        Kind("v1", "Event", k8s.CoreV1Api, "namespaced_event", True),
        Kind("v1", "PersistentVolume", k8s.CoreV1Api, "persistent_volume", False),
        Kind("v1", "PersistentVolumeClaim", k8s.CoreV1Api, "namespaced_persistent_volume_claim", True),
        Kind("apps/v1", "Deployment", k8s.AppsV1Api, "namespaced_deployment", True),
        Kind("apps/v1", "ReplicaSet", k8s.AppsV1Api, "namespaced_replica_set", True),
        Kind(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            k8s.AutoscalingV2Api,
            "namespaced_horizontal_pod_autoscaler",
            True,
        ),
        Kind("networking.k8s.io/v1", "Ingress", k8s.NetworkingV1Api, "namespaced_ingress", True),
        Kind("networking.k8s.io/v1", "IngressClass", k8s.NetworkingV1Api, "ingress_class", False),
        Kind("storage.k8s.io/v1", "CSIDriver", k8s.StorageV1Api, "csi_driver", False),
        Kind("apiregistration.k8s.io/v1", "APIService", k8s.ApiregistrationV1Api, "api_service", False),
        Kind("coordination.k8s.io/v1", "Lease", k8s.CoordinationV1Api, "namespaced_lease", True),
    )
}


def kind_of(kind_or_manifest: str | dict[str, Any]) -> Kind:
    if isinstance(kind_or_manifest, dict):
        kind, api_version = kind_or_manifest.get("kind"), kind_or_manifest.get("apiVersion")
    else:
        kind, api_version = kind_or_manifest, None
    k = KINDS.get(str(kind))
    if k is None or (api_version is not None and api_version != k.api_version):
        known = ", ".join(f"{v.api_version} {v.kind}" for v in KINDS.values())
        raise ValueError(f"unsupported kind {api_version or ''} {kind}: this helper knows {known}")
    return k


def _where(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


# --- errors ---------------------------------------------------------------------------------------------------
class KubeApiError(Exception):
    """A request the API server refused (or that never got an answer), with the server's own words."""

    def __init__(
        self,
        action: str,
        status: int | None,
        reason: str,
        message: str,
        causes: list[dict[str, Any]] | None = None,
    ) -> None:
        self.action = action
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes or []
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.action}: {self.status or 'no answer'} {self.reason}: {self.message}"
        lines = [head]
        for c in self.causes:
            field = c.get("field")
            lines.append(f"  - {field + ': ' if field else ''}{c.get('message', '')} ({c.get('reason', '')})")
        return "\n".join(lines)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: AlreadyExists on create, Conflict on an update from a stale resourceVersion."""
        return self.status == 409

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @classmethod
    def from_api_exception(cls, action: str, exc: ApiException, hide: Iterable[str] = ()) -> KubeApiError:
        status = exc.status
        reason, message, causes = str(exc.reason or ""), "", []
        body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else exc.body
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            reason = doc.get("reason") or reason
            message = doc.get("message") or ""
            causes = list((doc.get("details") or {}).get("causes") or [])
        elif body:
            message = body[:500]
        err = cls(action, status, reason, message, causes)
        return err.redacted(hide)

    def redacted(self, hide: Iterable[str]) -> KubeApiError:
        values = [h for h in hide if h and len(h) >= 4]
        if not values:
            return self

        def scrub(text: str) -> str:
            for v in values:
                text = text.replace(v, "<redacted>")
            return text

        causes = [{k: scrub(v) if isinstance(v, str) else v for k, v in c.items()} for c in self.causes]
        return KubeApiError(scrub(self.action), self.status, self.reason, scrub(self.message), causes)


class WaitTimeout(TimeoutError):
    """The object did not reach the awaited state in time; says what was last seen and the recent Events."""

    def __init__(self, message: str, last: dict[str, Any] | None, events: list[str]) -> None:
        super().__init__(message)
        self.last = last
        self.events = events


class WaitFailed(RuntimeError):
    """The object reached a state it cannot recover from (e.g. ProgressDeadlineExceeded)."""

    def __init__(self, message: str, last: dict[str, Any] | None, events: list[str]) -> None:
        super().__init__(message)
        self.last = last
        self.events = events


# --- retries --------------------------------------------------------------------------------------------------
def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in RETRYABLE_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError)


class _Wait:
    """Exponential backoff with full jitter, or the server's Retry-After when it sends one (capped)."""

    def __init__(self, base: float, cap: float) -> None:
        self._exp = wait_random_exponential(multiplier=base, max=cap)
        self._cap = cap

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        headers = getattr(exc, "headers", None) or {}
        retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
        if retry_after:
            try:
                return min(float(retry_after), self._cap)
            except ValueError:
                pass
        return self._exp(state)


# --- results --------------------------------------------------------------------------------------------------
class ApplyResult(BaseModel):
    """What one server-side apply did. ``object`` is the server's answer (Secret data removed)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    namespace: str | None
    action: Literal["created", "configured", "unchanged"]
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None
    dry_run: bool = False
    object: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)

    def __str__(self) -> str:
        return f"{_where(self.kind, self.name, self.namespace)} {self.action}" + (
            " (dry run)" if self.dry_run else ""
        )


def _strip_secret(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("kind") == "Secret" or "stringData" in obj or ("data" in obj and "type" in obj):
        obj = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
        meta = dict(obj.get("metadata") or {})
        meta.pop("managedFields", None)
        obj["metadata"] = meta
    return obj


def _secret_values(manifest: dict[str, Any]) -> list[str]:
    if manifest.get("kind") != "Secret":
        return []
    out: list[str] = []
    for field in ("data", "stringData"):
        out += [str(v) for v in (manifest.get(field) or {}).values()]
    return out


# --- summaries for wait messages ------------------------------------------------------------------------------
def summarize(obj: dict[str, Any] | None) -> str:
    """One line on the state of an object: generation, phase, replica counts, conditions, load balancer."""
    if obj is None:
        return "the object does not exist"
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    parts: list[str] = []
    if meta.get("deletionTimestamp"):
        parts.append(f"being deleted since {meta['deletionTimestamp']}")
    gen, observed = meta.get("generation"), status.get("observedGeneration")
    if gen is not None and observed is not None:
        parts.append(f"generation {gen}, observedGeneration {observed}")
    if status.get("phase"):
        parts.append(f"phase {status['phase']}")
    counts = [
        f"{k} {status[k]}"
        for k in (
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "currentReplicas",
            "desiredReplicas",
        )
        if k in status
    ]
    if "replicas" in (obj.get("spec") or {}):
        counts.insert(0, f"spec.replicas {obj['spec']['replicas']}")
    if counts:
        parts.append(", ".join(counts))
    conditions = status.get("conditions") or []
    if conditions:
        rendered = []
        for c in conditions:
            detail = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            rendered.append(f"{c.get('type')}={c.get('status')}" + (f" ({detail})" if detail else ""))
        parts.append("conditions " + "; ".join(rendered))
    lb = status.get("loadBalancer")
    if lb is not None:
        parts.append(f"loadBalancer {json.dumps(lb, sort_keys=True)}")
    if not status:
        parts.append("no status reported yet (no controller has acted on it)")
    elif not parts:
        parts.append(f"status {json.dumps(status, sort_keys=True)}")
    return "; ".join(parts)


def _event_time(e: dict[str, Any]) -> str:
    return str(
        e.get("lastTimestamp")
        or e.get("eventTime")
        or e.get("firstTimestamp")
        or (e.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def format_event(e: dict[str, Any]) -> str:
    inv = e.get("involvedObject") or {}
    count = e.get("count") or ((e.get("series") or {}).get("count"))
    return (
        f"{e.get('type', '')} {e.get('reason', '')} {inv.get('kind', '')}/{inv.get('name', '')}: "
        f"{e.get('message', '')}" + (f" (x{count})" if count and count > 1 else "")
    ).strip()


# --- the clients ----------------------------------------------------------------------------------------------
class KubeClients:
    """Typed Kubernetes APIs over one ``ApiClient``, with apply/get/list/wait helpers returning raw JSON dicts."""

    def __init__(
        self, api_client: k8s.ApiClient, attempts: int = 6, backoff_s: float = 0.2, backoff_max_s: float = 5.0
    ) -> None:
        self.api_client = api_client
        self._apis: dict[type, Any] = {}
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._renew: Callable[[], str] | None = None
        self._renew_lock = threading.Lock()

    def renewing(self, fetch: Callable[[], str]) -> KubeClients:
        """Fetch a new kubeconfig with ``fetch()`` when the API server answers 401 (an ACK temporary kubeconfig
        expires after its ``TemporaryDurationMinutes``; a rollout with long analysis windows outlives it), then
        retry the call once with it. The kubeconfig stays in memory."""
        self._renew = fetch
        return self

    def _renewed(self, failed_client: k8s.ApiClient) -> bool:
        """Swap in a client from a fresh kubeconfig (once per expired one, whichever thread sees the 401 first)."""
        if self._renew is None:
            return False
        with self._renew_lock:
            if self.api_client is failed_client:
                fresh = KubeClients.from_kubeconfig_text(self._renew())
                old, self.api_client, self._apis = self.api_client, fresh.api_client, {}
                old.close()
                run_logger().info("the kubeconfig expired: fetched a new one")
        return True

    # ---- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig_dict(
        cls, config: dict[str, Any], context: str | None = None, **kw: Any
    ) -> KubeClients:
        try:
            api_client = k8s_config.new_client_from_config_dict(config, context=context, persist_config=False)
        except ConfigException as exc:
            # The library's messages name fields, not their values; keep them, drop the traceback chain.
            raise ValueError(f"invalid kubeconfig: {exc}") from None
        return cls(api_client, **kw)

    @classmethod
    def from_kubeconfig_text(cls, text: str, context: str | None = None, **kw: Any) -> KubeClients:
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError("the kubeconfig is not valid YAML") from None
        if not isinstance(config, dict):
            raise ValueError("the kubeconfig must be a YAML mapping")
        return cls.from_kubeconfig_dict(config, context=context, **kw)

    @classmethod
    def from_kubeconfig_file(cls, path: str | Path, context: str | None = None, **kw: Any) -> KubeClients:
        return cls.from_kubeconfig_text(Path(path).read_text(), context=context, **kw)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def __repr__(self) -> str:
        return f"KubeClients(host={self.host!r})"

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> KubeClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def api(self, api_cls: type) -> Any:
        if api_cls not in self._apis:
            self._apis[api_cls] = api_cls(self.api_client)
        return self._apis[api_cls]

    @property
    def core(self) -> k8s.CoreV1Api:
        return self.api(k8s.CoreV1Api)

    def server_version(self) -> dict[str, Any]:
        return self._call("GET /version", self.api(k8s.VersionApi).get_code)

    # ---- raw calls -------------------------------------------------------------------------------------------
    def _call(
        self, action: str, fn: Callable[..., Any], *args: Any, hide: Iterable[str] = (), renewed: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call a typed API method, read the raw JSON answer, retry what is worth retrying (and a 401 once with a
        fresh kubeconfig, see :meth:`renewing`)."""
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.attempts),
            wait=_Wait(self.backoff_s, self.backoff_max_s),
            reraise=True,
            before_sleep=lambda s: run_logger().warning(
                "%s: %s; retry %d of %d",
                action,
                _short(s.outcome.exception() if s.outcome else None),
                s.attempt_number,
                self.attempts - 1,
            ),
        )
        hide = list(hide)
        client = self.api_client
        try:
            for attempt in retrying:
                with attempt:
                    resp = fn(*args, _preload_content=False, **kwargs)
                    try:
                        data = resp.data
                    finally:
                        resp.release_conn()
                    return json.loads(data) if data else {}
        except ApiException as exc:
            api = getattr(fn, "__self__", None)
            if exc.status == 401 and api is not None and not renewed and self._renewed(client):
                again = getattr(self.api(type(api)), fn.__name__)
                return self._call(action, again, *args, hide=hide, renewed=True, **kwargs)
            raise KubeApiError.from_api_exception(action, exc, hide) from None
        except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise KubeApiError(action, None, type(exc).__name__, _short(exc)).redacted(hide) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _method(self, verb: str, k: Kind) -> Callable[..., Any]:
        return getattr(self.api(k.api), f"{verb}_{k.suffix}")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        k = kind_of(kind)
        args = (name, namespace) if k.namespaced else (name,)
        try:
            obj = self._call(f"GET {_where(k.kind, name, namespace)}", self._method("read", k), *args)
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise
        return _strip_secret(obj)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST the object; 409 AlreadyExists surfaces as :class:`KubeApiError` (``conflict``)."""
        k = kind_of(manifest)
        meta = manifest.get("metadata") or {}
        args = (meta.get("namespace"), manifest) if k.namespaced else (manifest,)
        return self._call(f"CREATE {_where(k.kind, meta.get('name', ''), meta.get('namespace'))}",
                          self._method("create", k), *args)

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """PUT the object; with ``metadata.resourceVersion`` set, a concurrent change answers 409 Conflict
        (optimistic concurrency, what a lock built on a Lease relies on)."""
        k = kind_of(manifest)
        meta = manifest.get("metadata") or {}
        args = (meta["name"], meta.get("namespace"), manifest) if k.namespaced else (meta["name"], manifest)
        return self._call(f"REPLACE {_where(k.kind, meta['name'], meta.get('namespace'))}",
                          self._method("replace", k), *args)

    def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        propagation: Propagation = "Background",
        timeout_s: float = 300.0,
    ) -> Literal["deleted", "absent"]:
        """DELETE one object and wait until it is gone (finalizers done); ``absent`` when it did not exist."""
        k = kind_of(kind)
        where = _where(k.kind, name, namespace)
        args = (name, namespace) if k.namespaced else (name,)
        try:
            self._call(f"DELETE {where}", self._method("delete", k), *args,
                       body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation})
        except KubeApiError as exc:
            if exc.not_found:
                return "absent"
            raise
        left: list[dict[str, Any] | None] = []

        def gone() -> bool | None:
            left[:] = [self.get(k.kind, name, namespace)]
            return True if left[0] is None else None

        if poll_until(gone, timeout_s, interval=0.1, max_interval=2.0) is None:
            meta = (left[0] or {}).get("metadata") or {}
            state = (f"deletionTimestamp {meta.get('deletionTimestamp')}, finalizers {meta.get('finalizers') or []}"
                     if meta.get("deletionTimestamp") else "not being deleted")
            raise TimeoutError(f"{where} still there after {timeout_s:.0f}s: {state}")
        return "deleted"

    def scale(self, name: str, namespace: str, replicas: int) -> dict[str, Any]:
        """PATCH a Deployment's ``scale`` subresource (what ``kubectl scale`` does)."""
        return self._call(f"SCALE {_where('Deployment', name, namespace)} to {replicas}",
                          self.api(k8s.AppsV1Api).patch_namespaced_deployment_scale, name, namespace,
                          body={"spec": {"replicas": replicas}})

    def list(self, kind: str, namespace: str | None = None, **selectors: Any) -> dict[str, Any]:
        """The list object (``items`` + ``metadata.resourceVersion``); ``label_selector``/``field_selector``."""
        k = kind_of(kind)
        fn, args = self._list_fn(k, namespace)
        return self._call(f"LIST {k.kind}", fn, *args, **selectors)

    def _list_fn(self, k: Kind, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if k.namespaced and namespace:
            return self._method("list", k), (namespace,)
        if k.namespaced:
            return getattr(
                self.api(k.api), f"list_{k.suffix.removeprefix('namespaced_')}_for_all_namespaces"
            ), ()
        return self._method("list", k), ()

    # ---- apply -----------------------------------------------------------------------------------------------
    def apply(
        self,
        manifest: dict[str, Any],
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
        dry_run: bool = False,
    ) -> ApplyResult:
        """Server-side apply (create or update) of one manifest; see the module docstring."""
        k = kind_of(manifest)
        meta = manifest.get("metadata") or {}
        name = meta.get("name")
        namespace = meta.get("namespace") if k.namespaced else None
        if not name or (k.namespaced and not namespace):
            raise ValueError(
                f"{k.kind} manifest needs metadata.name" + (" and metadata.namespace" if k.namespaced else "")
            )
        where = _where(k.kind, name, namespace)
        before = self.get(k.kind, name, namespace)
        args = (name, namespace) if k.namespaced else (name,)
        obj = self._call(
            f"APPLY {where}",
            self._method("patch", k),
            *args,
            body=manifest,
            field_manager=field_manager,
            force=force,
            field_validation="Strict",
            dry_run="All" if dry_run else None,
            _content_type=APPLY_PATCH,
            hide=_secret_values(manifest),
        )
        after_meta = obj.get("metadata") or {}
        if before is None:
            action = "created"
        elif (before.get("metadata") or {}).get("resourceVersion") == after_meta.get("resourceVersion"):
            action = "unchanged"
        else:
            action = "configured"
        result = ApplyResult(
            kind=k.kind,
            name=name,
            namespace=namespace,
            action=action,
            generation=after_meta.get("generation"),
            resource_version=after_meta.get("resourceVersion"),
            uid=after_meta.get("uid"),
            dry_run=dry_run,
            object=_strip_secret(obj),
        )
        run_logger().info("%s", result)
        return result

    # ---- events ----------------------------------------------------------------------------------------------
    def events_for(
        self, kind: str, name: str, namespace: str | None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """Recent core/v1 Events about one object, oldest first."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        if namespace:
            items = (
                self._call(
                    f"LIST Events of {kind} {name}",
                    self.core.list_namespaced_event,
                    namespace,
                    field_selector=selector,
                ).get("items")
                or []
            )
        else:
            items = (
                self._call(
                    f"LIST Events of {kind} {name}",
                    self.core.list_event_for_all_namespaces,
                    field_selector=selector,
                ).get("items")
                or []
            )
        return sorted(items, key=_event_time)[-limit:]

    def _recent_events(
        self, kind: str, name: str, namespace: str | None, pod_selector: str | None
    ) -> list[str]:
        try:
            events = self.events_for(kind, name, namespace)
            if pod_selector and namespace:
                for sub in ("ReplicaSet", "Pod"):
                    items = self.list(sub, namespace, label_selector=pod_selector).get("items") or []
                    for item in items[:5]:
                        events += self.events_for(sub, item["metadata"]["name"], namespace, limit=5)
        except KubeApiError as exc:
            return [f"(events unavailable: {exc.status} {exc.reason})"]
        return [format_event(e) for e in sorted(events, key=_event_time)[-15:]]

    # ---- waits -----------------------------------------------------------------------------------------------
    def wait_for(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        predicate: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        *,
        failed: Callable[[dict[str, Any]], str | None] | None = None,
        describe: Callable[[dict[str, Any] | None], str] = summarize,
        what: str | None = None,
        pod_selector: str | None = None,
    ) -> dict[str, Any]:
        """Wait (list + watch) until ``predicate(object)`` holds; return that object.

        ``what`` completes "waiting for <object> to ..." in messages (default "be ready").
        ``failed`` returns a reason when the object can no longer get there (raises :class:`WaitFailed` at once).
        On timeout raises :class:`WaitTimeout` with ``describe(last seen)`` and the recent Events.
        """
        k = kind_of(kind)
        where = _where(k.kind, name, namespace)
        goal = what or "be ready"
        deadline = time.monotonic() + timeout_s
        list_fn, list_args = self._list_fn(k, namespace)
        field_selector = f"metadata.name={name}"
        last: dict[str, Any] | None = None

        def _list(*a: Any, **kw: Any) -> Any:
            # Unannotated on purpose: Watch then yields the raw JSON events instead of typed models.
            return list_fn(*a, **kw)

        def check(obj: dict[str, Any] | None) -> dict[str, Any] | None:
            if obj is None:
                return None
            if predicate(obj):
                return obj
            if failed is not None and (reason := failed(obj)):
                events = self._recent_events(k.kind, name, namespace, pod_selector)
                raise WaitFailed(
                    _wait_message(f"{where} will not {goal}: {reason}", describe(obj), events),
                    obj,
                    events,
                )
            return None

        while True:
            listed = self._call(f"LIST {where}", list_fn, *list_args, field_selector=field_selector)
            items = listed.get("items") or []
            last = items[0] if items else None
            if (done := check(last)) is not None:
                return done
            rv = (listed.get("metadata") or {}).get("resourceVersion")
            relist = False
            while not relist:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    events = self._recent_events(k.kind, name, namespace, pod_selector)
                    raise WaitTimeout(
                        _wait_message(
                            f"timed out after {timeout_s:g}s waiting for {where} to {goal}",
                            describe(last),
                            events,
                        ),
                        last,
                        events,
                    )
                window = max(1, min(int(remaining + 0.999), 60))
                w = k8s_watch.Watch()
                kwargs: dict[str, Any] = {
                    "field_selector": field_selector,
                    "allow_watch_bookmarks": True,
                    "timeout_seconds": window,
                    "_request_timeout": (10, window + 5),
                }
                if rv:
                    kwargs["resource_version"] = rv
                try:
                    for event in w.stream(_list, *list_args, **kwargs):
                        etype, obj = event.get("type"), event.get("raw_object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if etype == "BOOKMARK":
                            continue
                        if etype == "DELETED":
                            last = None
                            continue
                        last = obj
                        if (done := check(obj)) is not None:
                            w.stop()
                            return done
                        if time.monotonic() >= deadline:
                            w.stop()
                            break
                except ApiException as exc:
                    if exc.status == 410:  # Expired: our resourceVersion is too old; list again.
                        relist = True
                    elif _retryable(exc):
                        run_logger().warning("watch %s: %s %s; re-listing", where, exc.status, exc.reason)
                        relist = True
                    else:
                        raise KubeApiError.from_api_exception(f"WATCH {where}", exc) from None
                except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
                    # A read timeout on a quiet stream, or a dropped connection: resume from the last RV.
                    log.debug("watch %s ended: %s", where, _short(exc))


def _wait_message(head: str, last_seen: str, events: list[str]) -> str:
    lines = [head, f"Last seen: {last_seen}"]
    if events:
        lines.append("Recent events:")
        lines += [f"  {e}" for e in events]
    else:
        lines.append("Recent events: none")
    return "\n".join(lines)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
