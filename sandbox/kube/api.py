"""The verbs of the API server, shared by the HTTP routes and by in-process controllers.

In-process contract (``s = kube.store``, ``kube`` the :class:`~sandbox.kube.service.KubeService` a service is given);
``resource`` is a storage key, plural,
kind or short name (``"pods"``, ``"deployments"``, ``"hpa"``, ``"events"``) or a :class:`ResourceType`.
Every method goes through the same validation, defaulting, resourceVersion, generation and managedFields logic as
HTTP and raises :class:`~sandbox.kube.errors.KubeError` (``.code``, ``.reason``) on failure. Objects returned are
fresh copies (plain dicts in the wire format); mutate them freely.

- ``s.get(resource, namespace, name) -> dict`` (404 KubeError if missing); ``s.try_get(...) -> dict | None``
- ``s.list(resource, namespace=None, label_selector=None, field_selector=None) -> list[dict]``
  (selectors as strings in kubectl syntax, or a ``dict`` of labels for equality)
- ``s.indexed(resource, index, values=None) -> list[Entry]``: the stored entries filed under any of ``values`` in
  one of the store's indexes (:mod:`sandbox.kube.indexes`: ``namespace``, pods by ``spec.nodeName``, ``controller``
  owner uid ...; None: all indexed), by namespace/name. READ-ONLY and uncopied, for controllers.
- ``s.create(resource, obj, namespace=None, field_manager="kube-controller-manager", dry_run=False) -> dict``
- ``s.update(resource, obj, ...)`` (409 if ``metadata.resourceVersion`` is stale; omit it to force),
  ``s.update_status(resource, obj)`` (only ``status`` is taken), ``s.update_scale(resource, ns, name, replicas)``
- ``s.patch(resource, namespace, name, patch, patch_type="merge"|"strategic"|"json"|"apply", subresource="",
  field_manager=..., force=False)``; ``s.apply(resource, obj, field_manager, force=False)``
- ``s.bind(namespace, pod_name, node_name)`` (the ``pods/binding`` subresource: sets ``spec.nodeName`` and
  PodScheduled=True)
- ``s.delete(resource, namespace, name, propagation_policy="Background", grace_period_seconds=None)`` -> the
  object (with ``deletionTimestamp`` when finalizers or a graceful pod delay it); pods bound to a node are
  deleted gracefully: a kubelet deletes them with ``grace_period_seconds=0`` when containers stopped, otherwise
  the API server removes them when the grace period (simulated seconds) has elapsed.
- ``async for ev in s.watch(resource, namespace=None, label_selector=None, field_selector=None,
  resource_version=None, timeout=None)``: ``ev = {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": {...}}``;
  without ``resource_version`` (or "0") it starts with ADDED for every current object; with one it replays what
  changed after it (410 KubeError when too old).
- ``s.everything()``: every stored object as ``(storage key, object)``, READ-ONLY (the garbage collector's graph);
  ``s.finalize_namespace(name)`` removes a terminating namespace (the namespace controller found it empty).
- ``s.on_change(fn)``: ``fn(key, change)`` called synchronously on every write (cheap hook, e.g. to wake loops);
  each write also notifies ``ctx.bus`` topic ``kube/<storage key>`` (e.g. ``kube/pods``).

What an API server's neighbours do is elsewhere: Events with client-go's correlation in :mod:`sandbox.kube.events`
(``kube.events.record(...)``); garbage collection (ownerReferences, Background/Foreground/Orphan), namespace
finalization and the removal of pods whose grace period ran out are controllers
(:mod:`sandbox.controllers.garbagecollector`, :mod:`sandbox.controllers.namespaces`, :mod:`sandbox.controllers.podgc`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import yaml

from core.spec import load_yaml

from ..strict import nesting_ok
from . import conversion, defaults, defaults_batch, managed, validation
from . import patch as patches
from . import schema as sch
from .errors import KubeError, already_exists, bad_request, conflict, expired, invalid, not_found, stale
from .resources import ResourceType, resolve
from .selectors import match_fields, match_labels, parse_fields, parse_labels, selector_string
from .storage import Change, Storage, Watcher

_GEN_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVICE_CIDR = ipaddress.ip_network("172.16.0.0/16")
_PATCH_ALIASES = {"merge": patches.MERGE_PATCH, "strategic": patches.STRATEGIC_PATCH,
                  "json": patches.JSON_PATCH, "apply": patches.APPLY_PATCH}
# resources whose status is kept from the request on create (kubelet registers nodes with their status)
_KEEP_STATUS_ON_CREATE = {"nodes"}


def _rt(resource: str | ResourceType) -> ResourceType:
    return resource if isinstance(resource, ResourceType) else resolve(resource)


def _clean(v: Any) -> Any:
    """JSON null means 'unset' to a Kubernetes decoder: drop nulls from objects."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def _spec_of(obj: dict[str, Any]) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _strip_meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in ("resourceVersion", "managedFields")}
    return dict(obj, metadata=meta)


class KubeStore:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.storage = Storage(ctx.store)
        self.lock = self.storage.lock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bookmark_interval = 5.0  # real seconds between watch bookmarks
        self.storage.listeners.append(self._notify)

    # ---- helpers -------------------------------------------------------------------------------------------------
    def now(self) -> str:
        return self.clock.iso()

    def on_change(self, fn) -> None:
        self.storage.listeners.append(fn)

    def _notify(self, key: str, change: Change) -> None:
        bus, loop = getattr(self.ctx, "bus", None), self.loop
        if bus is None or loop is None:
            return
        topic = f"kube/{key}"
        try:
            if asyncio.get_running_loop() is loop:
                bus.notify(topic)
                return
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(bus.notify, topic)

    def _out(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        out = orjson.loads(orjson.dumps(obj))
        return conversion.from_storage(rt, out)

    def _ns(self, rt: ResourceType, namespace: str | None, obj: dict | None = None) -> str:
        if not rt.namespaced:
            return ""
        ns = namespace or ((obj or {}).get("metadata") or {}).get("namespace") or "default"
        return ns

    def _existing(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        e = self.storage.entry(rt.key, ns, name)
        if e is None:
            raise not_found(rt.plural, rt.group, name)
        return e.obj

    def _normalize(self, rt: ResourceType, obj: Any, *, name: str | None = None, ns: str = "",
                   sub: str = "") -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise bad_request(f"the body of the request must be a JSON object of kind {rt.kind}")
        obj = _clean(copy.deepcopy(obj))
        av, kind = obj.get("apiVersion"), obj.get("kind")
        want_kind = rt.kind if not sub else (rt.sub(sub).kind if rt.sub(sub) else rt.kind)
        if sub != "scale":
            if av and av != rt.api_version:
                raise bad_request(f"the API version in the data ({av}) does not match the expected API version "
                                  f"({rt.api_version})")
            if kind and kind != want_kind:
                raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({want_kind})")
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if name is not None and meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if name is not None:
            meta["name"] = name
        if rt.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        obj = conversion.to_storage(rt, obj)
        return obj

    def _check_namespace(self, rt: ResourceType, ns: str) -> None:
        if not rt.namespaced:
            return
        e = self.storage.entry("namespaces", "", ns)
        if e is None:
            raise not_found("namespaces", "", ns)
        if e.obj["metadata"].get("deletionTimestamp"):
            raise KubeError(403, "Forbidden", f'{rt.plural} "{{}}" is forbidden: unable to create new content in '
                            f"namespace {ns} because it is being terminated", name=ns, kind="namespaces")

    def _allocate_cluster_ip(self) -> str:
        used = {(e.obj.get("spec") or {}).get("clusterIP") for e in self.storage.entries("services")}
        for n, ip in enumerate(_SERVICE_CIDR.hosts()):
            if n < 10:
                continue
            if str(ip) not in used:
                return str(ip)
        raise KubeError(500, "InternalError", "no cluster IPs left")

    def _allocate_node_ports(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            return
        used = {p.get("nodePort") for e in self.storage.entries("services")
                for p in (e.obj.get("spec") or {}).get("ports") or []}
        nxt = 30000
        for p in spec.get("ports") or []:
            if not p.get("nodePort"):
                while nxt in used:
                    nxt += 1
                p["nodePort"] = nxt
                used.add(nxt)

    def _prepare(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                 field_validation: str, creating: bool = False) -> list[str]:
        """Schema check, defaulting, allocation, semantic checks (the admission + validation chain)."""
        warnings = validation.check_schema(rt if rt.key != "events" else resolve("events"), obj, field_validation,
                                           skip_status=rt.has_status)
        defaults.apply_defaults(rt.key, obj)
        defaults_batch.apply_defaults(rt.key, obj)
        if creating:
            defaults_batch.on_create(rt.key, obj)
        if rt.key == "services":
            spec = obj["spec"]
            old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
            if spec.get("type") != "ExternalName":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = old_ip or self._allocate_cluster_ip()
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            self._allocate_node_ports(obj)
        validation.check_semantics(rt if rt.key != "events" else resolve("events"), obj, old)
        return warnings

    # ---- reads ---------------------------------------------------------------------------------------------------
    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        rt = _rt(resource)
        ns = self._ns(rt, namespace)
        with self.lock:
            return self._out(rt, self._existing(rt, ns, name))

    def try_get(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(resource, namespace, name)
        except KubeError as e:
            if e.code == 404:
                return None
            raise

    def select(self, rt: ResourceType, namespace: str | None, label_selector: Any = None,
               field_selector: str | None = None) -> tuple[list, int]:
        """Matching storage entries (sorted by namespace/name) and the list's resourceVersion."""
        if isinstance(label_selector, dict):
            label_selector = ",".join(f"{k}={v}" for k, v in label_selector.items())
        lreq = parse_labels(label_selector)
        freq = parse_fields(field_selector, rt.key)
        with self.lock:
            entries = self.storage.entries(rt.key, namespace if rt.namespaced else None)
            rv = self.storage.rv
        out = []
        for e in entries:
            if lreq and not match_labels(lreq, e.obj["metadata"].get("labels")):
                continue
            if freq and not match_fields(freq, e.obj):
                continue
            out.append(e)
        return out, rv

    def indexed(self, resource: str | ResourceType, index: str, values: Any = None) -> list:
        rt = _rt(resource)
        with self.lock:
            return self.storage.indexed(rt.key, index, values)

    def list(self, resource: str | ResourceType, namespace: str | None = None, label_selector: Any = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        rt = _rt(resource)
        entries, _ = self.select(rt, namespace, label_selector, field_selector)
        return [conversion.from_storage(rt, orjson.loads(e.blob)) for e in entries]

    def resource_version(self) -> int:
        return self.storage.rv

    # ---- create --------------------------------------------------------------------------------------------------
    def create(self, resource: str | ResourceType, obj: dict[str, Any], namespace: str | None = None, *,
               field_manager: str = "kube-controller-manager", dry_run: bool = False,
               field_validation: str = "Ignore", warnings: list[str] | None = None,
               _apply_fields: managed.ManagedFields | None = None) -> dict[str, Any]:
        rt = _rt(resource)
        ns = self._ns(rt, namespace, obj if isinstance(obj, dict) else None)
        obj = self._normalize(rt, obj, ns=ns)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice(_GEN_ALPHABET) for _ in range(5))
        if rt.has_status and rt.key not in _KEEP_STATUS_ON_CREATE:
            obj["status"] = {}
        meta["uid"] = str(uuid.uuid4())  # before validation: the Job strategy's generated selector names it
        w = self._prepare(rt, obj, None, field_validation, creating=True)
        if warnings is not None:
            warnings.extend(w)
        with self.lock:
            self._check_namespace(rt, ns)
            if self.storage.entry(rt.key, ns, meta["name"]) is not None:
                raise already_exists(rt.plural, rt.group, meta["name"])
            for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(k, None)
            meta["creationTimestamp"] = self.now()
            if "spec" in obj or rt.key in ("deployments.apps", "replicasets.apps"):
                meta["generation"] = 1
            mf = _apply_fields or managed.ManagedFields(None)
            if _apply_fields is None:
                mf.record_update(None, obj, sch.kind_schema(rt.group, rt.version, rt.kind), field_manager,
                                 rt.api_version, meta["creationTimestamp"])
            meta["managedFields"] = mf.render()
            if not meta["managedFields"]:
                meta.pop("managedFields")
            if dry_run:
                return self._out(rt, obj)
            entry = self.storage.put(rt.key, obj)
            return self._out(rt, entry.obj)

    # ---- update --------------------------------------------------------------------------------------------------
    def update(self, resource: str | ResourceType, obj: dict[str, Any], namespace: str | None = None, *,
               name: str | None = None, subresource: str = "", field_manager: str = "kube-controller-manager",
               dry_run: bool = False, field_validation: str = "Ignore",
               warnings: list[str] | None = None) -> dict[str, Any]:
        rt = _rt(resource)
        ns = self._ns(rt, namespace, obj if isinstance(obj, dict) else None)
        if subresource == "scale":
            replicas = ((obj or {}).get("spec") or {}).get("replicas") if isinstance(obj, dict) else None
            if not isinstance(replicas, int):
                raise bad_request("Scale.spec.replicas must be an integer")
            name = name or obj.get("metadata", {}).get("name")
            return self.update_scale(rt, ns, name, replicas, field_manager=field_manager, dry_run=dry_run,
                                     resource_version=(obj.get("metadata") or {}).get("resourceVersion"))
        obj = self._normalize(rt, obj, name=name, ns=ns, sub=subresource)
        name = obj["metadata"].get("name")
        if not name:
            raise invalid(rt.kind, rt.group, "", [{"reason": "FieldValueRequired", "message": "Required value: "
                                                   "name is required", "field": "metadata.name"}])
        with self.lock:
            old = self._existing(rt, ns, name)
            want = obj["metadata"].get("resourceVersion")
            if want and want != old["metadata"]["resourceVersion"]:
                raise stale(rt.plural, rt.group, name)
            return self._commit(rt, old, obj, subresource=subresource, manager=field_manager, dry_run=dry_run,
                                field_validation=field_validation, warnings=warnings)

    def update_status(self, resource: str | ResourceType, obj: dict[str, Any], namespace: str | None = None,
                      **kw: Any) -> dict[str, Any]:
        return self.update(resource, obj, namespace, subresource="status", **kw)

    def _commit(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any], *, subresource: str,
                manager: str, dry_run: bool, field_validation: str, warnings: list[str] | None,
                apply_fields: managed.ManagedFields | None = None) -> dict[str, Any]:
        """Finish an update of ``old`` into ``new`` (both in storage form). Caller holds the lock."""
        old_meta = old["metadata"]
        if subresource == "status":
            new = dict(copy.deepcopy(old), status=new.get("status", {}))
        else:
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        meta = new["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                  "namespace", "name"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(rt.kind, rt.group, meta["name"], [{"reason": "FieldValueForbidden", "message":
                              "Forbidden: no new finalizers can be added if the object is being deleted",
                              "field": "metadata.finalizers"}])
        w = self._prepare(rt, new, old, field_validation) if subresource != "status" else []
        if subresource == "status":
            validation.check_schema(rt if rt.key != "events" else resolve("events"), new, "Ignore")
        if warnings is not None:
            warnings.extend(w)
        if "generation" in old_meta and _spec_of(new) != _spec_of(old):
            meta["generation"] = old_meta["generation"] + 1
        now = self.now()
        node = sch.kind_schema(rt.group, rt.version, rt.kind)
        mf = apply_fields or managed.ManagedFields(old_meta.get("managedFields"))
        if apply_fields is None:
            mf.record_update(old, new, node, manager, rt.api_version, now, subresource)
        meta["managedFields"] = mf.render()
        if not meta["managedFields"]:
            meta.pop("managedFields")
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if _strip_meta(new) == _strip_meta(old):
            return self._out(rt, old)  # no-op: no write, no new resourceVersion (as etcd3 store GuaranteedUpdate)
        if dry_run:
            return self._out(rt, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.key != "pods":
            return self._out(rt, self.storage.remove(rt.key, new))
        entry = self.storage.put(rt.key, new)
        return self._out(rt, entry.obj)

    # ---- scale ---------------------------------------------------------------------------------------------------
    def get_scale(self, resource: str | ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        rt = _rt(resource)
        with self.lock:
            obj = self._existing(rt, self._ns(rt, namespace), name)
            return self._scale_of(obj)

    @staticmethod
    def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
        m = obj["metadata"]
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m["uid"],
                         "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                       "selector": selector_string(obj.get("spec", {}).get("selector"))},
        }

    def update_scale(self, resource: str | ResourceType, namespace: str | None, name: str, replicas: int, *,
                     field_manager: str = "kube-controller-manager", dry_run: bool = False,
                     resource_version: str | None = None) -> dict[str, Any]:
        rt = _rt(resource)
        ns = self._ns(rt, namespace)
        if replicas < 0:
            raise invalid("Scale", "autoscaling", name, [{"reason": "FieldValueInvalid", "message":
                          f"Invalid value: {replicas}: must be greater than or equal to 0", "field": "spec.replicas"}])
        with self.lock:
            old = self._existing(rt, ns, name)
            if resource_version and resource_version != old["metadata"]["resourceVersion"]:
                raise stale(rt.plural, rt.group, name)
            new = copy.deepcopy(old)
            new["spec"]["replicas"] = replicas
            out = self._commit(rt, old, new, subresource="scale", manager=field_manager, dry_run=dry_run,
                               field_validation="Ignore", warnings=None)
            return self._scale_of(out)

    # ---- patch ---------------------------------------------------------------------------------------------------
    def patch(self, resource: str | ResourceType, namespace: str | None, name: str, body: Any,
              patch_type: str = "merge", *, subresource: str = "", field_manager: str | None = None,
              force: bool = False, dry_run: bool = False, field_validation: str = "Ignore",
              warnings: list[str] | None = None) -> tuple[dict[str, Any], bool]:
        """Returns (object, created) — ``created`` only for server-side apply of a missing object."""
        rt = _rt(resource)
        ns = self._ns(rt, namespace)
        ptype = _PATCH_ALIASES.get(patch_type, patch_type)
        if ptype not in patches.PATCH_TYPES:
            raise KubeError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                            f"accepted media types include: {', '.join(patches.PATCH_TYPES)}")
        if isinstance(body, (bytes, str)):
            body = _parse_body(body, yaml_ok=ptype == patches.APPLY_PATCH)
        if ptype == patches.APPLY_PATCH:
            if not field_manager:
                raise bad_request("PATCH, application/apply-patch+yaml requests require fieldManager to be set")
            return self._apply(rt, ns, name, body, subresource, field_manager, force, dry_run, field_validation,
                               warnings)
        manager = field_manager or "unknown"
        with self.lock:
            old = self._existing(rt, ns, name)
            view = self._scale_of(old) if subresource == "scale" else self._out(rt, old)
            node = (sch.kind_schema("autoscaling", "v1", "Scale") if subresource == "scale"
                    else sch.kind_schema(rt.group, rt.version, rt.kind))
            if ptype == patches.JSON_PATCH:
                patched = patches.json_patch(view, body)
            elif ptype == patches.MERGE_PATCH:
                if not isinstance(body, dict):
                    raise bad_request("merge patch must be a JSON object")
                patched = patches.merge_patch(view, body)
            else:
                patched = patches.strategic_merge(view, body, node)
            if not isinstance(patched, dict):
                raise bad_request("patch result is not an object")
            want = (patched.get("metadata") or {}).get("resourceVersion")
            if want and want != view["metadata"]["resourceVersion"]:
                raise stale(rt.plural, rt.group, name)
            if subresource == "scale":
                replicas = (patched.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int):
                    raise bad_request("Scale.spec.replicas must be an integer")
                return self.update_scale(rt, ns, name, replicas, field_manager=manager, dry_run=dry_run), False
            new = self._normalize(rt, patched, name=name, ns=ns, sub=subresource)
            out = self._commit(rt, old, new, subresource=subresource, manager=manager, dry_run=dry_run,
                               field_validation=field_validation, warnings=warnings)
            return out, False

    def _apply(self, rt: ResourceType, ns: str, name: str, config: Any, subresource: str, manager: str,
               force: bool, dry_run: bool, field_validation: str,
               warnings: list[str] | None) -> tuple[dict[str, Any], bool]:
        if not isinstance(config, dict):
            raise bad_request("apply patch must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("apiVersion and kind must be set in an apply configuration")
        config = self._normalize(rt, config, name=name, ns=ns, sub=subresource)
        node = sch.kind_schema(rt.group, rt.version, rt.kind)
        meta = config["metadata"]
        for k in ("resourceVersion", "managedFields", "uid", "creationTimestamp", "generation"):
            meta.pop(k, None)
        if rt.has_status and subresource != "status":
            config.pop("status", None)
        now = self.now()
        with self.lock:
            e = self.storage.entry(rt.key, ns, name)
            if e is None:
                if subresource:
                    raise not_found(rt.plural, rt.group, name)
                mf = managed.ManagedFields(None)
                merged, _ = mf.apply({}, config, node, manager, rt.api_version, now, True)
                return self.create(rt, merged, ns, field_manager=manager, dry_run=dry_run,
                                   field_validation=field_validation, warnings=warnings, _apply_fields=mf), True
            old = e.obj
            mf = managed.ManagedFields(old["metadata"].get("managedFields"))
            merged, conflicts = mf.apply(old, config, node, manager, rt.api_version, now, force, subresource)
            if conflicts:
                raise _apply_conflict(rt, name, conflicts, mf)
            merged = copy.deepcopy(merged)
            merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            out = self._commit(rt, old, merged, subresource=subresource, manager=manager, dry_run=dry_run,
                               field_validation=field_validation, warnings=warnings, apply_fields=mf)
            if _strip_meta(merged) == _strip_meta(old):
                return out, False
            return out, False

    def apply(self, resource: str | ResourceType, obj: dict[str, Any], field_manager: str, *, force: bool = False,
              namespace: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        rt = _rt(resource)
        name = (obj.get("metadata") or {}).get("name", "")
        out, _ = self.patch(rt, namespace or (obj.get("metadata") or {}).get("namespace"), name, obj, "apply",
                            field_manager=field_manager, force=force, dry_run=dry_run)
        return out

    # ---- pods/binding --------------------------------------------------------------------------------------------
    def bind(self, namespace: str, pod_name: str, node_name: str, *, dry_run: bool = False) -> dict[str, Any]:
        rt = resolve("pods")
        with self.lock:
            old = self._existing(rt, namespace, pod_name)
            have = (old.get("spec") or {}).get("nodeName")
            if have:
                raise conflict("pods", "", pod_name, f"pod {pod_name} is already assigned to node \"{have}\"")
            new = copy.deepcopy(old)
            new["spec"]["nodeName"] = node_name
            conds = [c for c in new.setdefault("status", {}).get("conditions", []) if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": self.now()})
            new["status"]["conditions"] = _clean(conds)
            status = copy.deepcopy(new["status"])  # _commit resets new["status"] to the old one
            self._commit(rt, old, new, subresource="binding", manager="kube-scheduler", dry_run=dry_run,
                         field_validation="Ignore", warnings=None)
            # status is kept from old by _commit for the main resource; write it through the status path too
            cur = self._existing(rt, namespace, pod_name)
            if not dry_run:
                st = copy.deepcopy(cur)
                st["status"] = status
                self._commit(rt, cur, st, subresource="status", manager="kube-scheduler", dry_run=False,
                             field_validation="Ignore", warnings=None)
            return self.get(rt, namespace, pod_name)

    # ---- delete --------------------------------------------------------------------------------------------------
    def delete(self, resource: str | ResourceType, namespace: str | None, name: str, *,
               propagation_policy: str | None = None, grace_period_seconds: int | None = None,
               preconditions: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        rt = _rt(resource)
        ns = self._ns(rt, namespace)
        policy = propagation_policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"propagationPolicy {policy!r} is not one of Background, Foreground, Orphan")
        with self.lock:
            old = self._existing(rt, ns, name)
            meta = old["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(rt.plural, rt.group, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                               f"UID in object meta: {meta['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(rt.plural, rt.group, name, "Precondition failed: ResourceVersion in precondition: "
                               f"{pre['resourceVersion']}, ResourceVersion in object meta: {meta['resourceVersion']}")
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers and self._has_dependents(meta["uid"]):
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and "orphan" not in finalizers and self._has_dependents(meta["uid"]):
                finalizers.append("orphan")
            grace = 0
            if rt.key == "pods" and (old.get("spec") or {}).get("nodeName") and not meta.get("deletionTimestamp"):
                grace = grace_period_seconds if grace_period_seconds is not None else \
                    (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            elif rt.key == "pods" and meta.get("deletionTimestamp") and grace_period_seconds == 0:
                grace = 0
            elif rt.key == "pods" and meta.get("deletionTimestamp"):
                return self._out(rt, old)
            if rt.key == "namespaces":
                finalizers = finalizers or []
                if not meta.get("deletionTimestamp"):
                    new = copy.deepcopy(old)
                    new["metadata"]["deletionTimestamp"] = self.now()
                    new["metadata"]["deletionGracePeriodSeconds"] = 0
                    new.setdefault("status", {})["phase"] = "Terminating"
                    if dry_run:
                        return self._out(rt, new)
                    return self._out(rt, self.storage.put(rt.key, new).obj)
                return self._out(rt, old)
            if finalizers or grace > 0:
                if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
                    return self._out(rt, old)
                new = copy.deepcopy(old)
                nm = new["metadata"]
                if not nm.get("deletionTimestamp"):
                    nm["deletionTimestamp"] = self.clock.iso(self.clock.now() + grace)
                    nm["deletionGracePeriodSeconds"] = grace
                    if "generation" in nm:
                        nm["generation"] += 1
                if finalizers:
                    nm["finalizers"] = finalizers
                if dry_run:
                    return self._out(rt, new)
                return self._out(rt, self.storage.put(rt.key, new).obj)
            if dry_run:
                return self._out(rt, old)
            return self._out(rt, self.storage.remove(rt.key, old))

    def delete_collection(self, resource: str | ResourceType, namespace: str | None = None, label_selector: Any = None,
                          field_selector: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        rt = _rt(resource)
        entries, _ = self.select(rt, namespace, label_selector, field_selector)
        out = []
        for e in entries:
            m = e.obj["metadata"]
            with contextlib.suppress(KubeError):
                out.append(self.delete(rt, m.get("namespace"), m["name"], **kw))
        return out

    def _has_dependents(self, uid: str) -> bool:
        for bucket in self.storage.objects.values():
            for e in bucket.values():
                for ref in e.obj["metadata"].get("ownerReferences") or ():
                    if ref.get("uid") == uid:
                        return True
        return False

    # ---- the garbage collector's and the namespace controller's view ---------------------------------------------
    def everything(self) -> list[tuple[str, dict[str, Any]]]:
        """Every stored object of every resource as ``(storage key, object)``, READ-ONLY and uncopied (the
        garbage collector's graph of owners and dependents, the namespace controller's contents)."""
        with self.lock:
            return [(k, e.obj) for k, b in self.storage.objects.items() for e in list(b.values())]

    def finalize_namespace(self, name: str) -> bool:
        """Remove a terminating namespace (``namespaces/finalize``: the namespace controller found it empty)."""
        with self.lock:
            e = self.storage.entry("namespaces", "", name)
            if e is None or not e.obj["metadata"].get("deletionTimestamp"):
                return False
            self.storage.remove("namespaces", e.obj)
            return True

    # ---- watch ---------------------------------------------------------------------------------------------------
    async def watch(self, resource: str | ResourceType, namespace: str | None = None, label_selector: Any = None,
                    field_selector: str | None = None, resource_version: str | None = None,
                    timeout: float | None = None, bookmarks: bool = False) -> AsyncIterator[dict[str, Any]]:
        async for kind, payload in self.watch_raw(resource, namespace, label_selector, field_selector,
                                                  resource_version, timeout, bookmarks):
            if kind == "ERROR":
                raise KubeError(payload["code"], payload["reason"], payload["message"])
            yield {"type": kind, "object": payload}

    async def watch_raw(self, resource: str | ResourceType, namespace: str | None = None, label_selector: Any = None,
                        field_selector: str | None = None, resource_version: str | None = None,
                        timeout: float | None = None, bookmarks: bool = False):
        """Yields (type, object) with objects as dicts; ERROR carries a Status."""
        rt = _rt(resource)
        if isinstance(label_selector, dict):
            label_selector = ",".join(f"{k}={v}" for k, v in label_selector.items())
        lreq = parse_labels(label_selector)
        freq = parse_fields(field_selector, rt.key)
        ns = namespace if rt.namespaced else None

        def accept(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            m = obj["metadata"]
            if ns and m.get("namespace") != ns:
                return False
            if lreq and not match_labels(lreq, m.get("labels")):
                return False
            return not (freq and not match_fields(freq, obj))

        loop = asyncio.get_running_loop()
        w = Watcher(rt.key, accept, loop)
        initial: list[tuple[str, dict]] = []
        with self.lock:
            last_rv = self.storage.rv
            if resource_version in (None, "", "0"):
                for e in self.storage.entries(rt.key, ns):
                    if accept(e.obj):
                        initial.append(("ADDED", e.obj))
            else:
                try:
                    rv = int(resource_version)
                except ValueError:
                    raise bad_request(f"invalid resource version {resource_version!r}") from None
                changes = self.storage.since(rt.key, rv)
                if changes is None:
                    oldest = self.storage.compacted.get(rt.key, self.storage.start_rv)
                    err = expired(f"too old resource version: {rv} ({oldest + 1})")
                    yield "ERROR", err.status()
                    return
                for c in changes:
                    t = self._filtered_type(c, accept)
                    if t:
                        initial.append((t, c.obj))
            self.storage.add_watcher(w)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            for t, obj in initial:
                last_rv = max(last_rv, int(obj["metadata"]["resourceVersion"]))
                yield t, self._out(rt, obj)
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                wait = next_bookmark - now if bookmarks else None
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        if bookmarks:
                            yield "BOOKMARK", self._bookmark(rt, last_rv)
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    change: Change = await asyncio.wait_for(w.queue.get(), wait) if wait is not None \
                        else await w.queue.get()
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        yield "BOOKMARK", self._bookmark(rt, max(last_rv, self.storage.rv))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                t = self._filtered_type(change, accept)
                last_rv = change.rv
                if t:
                    yield t, self._out(rt, change.obj)
        finally:
            self.storage.remove_watcher(w)

    @staticmethod
    def _filtered_type(c: Change, accept) -> str | None:
        """Watch semantics with a selector: an object leaving the selection is DELETED, entering it ADDED."""
        now_in = accept(c.obj)
        if c.type == "MODIFIED":
            was_in = accept(c.old)
            if now_in and not was_in:
                return "ADDED"
            if was_in and not now_in:
                return "DELETED"
            return "MODIFIED" if now_in else None
        return c.type if now_in else None

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int) -> dict[str, Any]:
        return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}


# Bounds on decoded bodies (issue 22). Go's decoders nest up to 10000 levels (encoding/json scanner.go
# maxNestingDepth), but the built-in kinds the sandbox serves are a dozen levels deep and Python's decoder and the
# validators recurse once per level: deeper bodies are refused as the undecodable body they are here (400), before
# anything reads them. YAML: gopkg.in/yaml.v2 (sigs.k8s.io/yaml) refuses "excessive aliasing" once a document
# decodes to more than 400000 values mostly through aliases (decode.go allowedAliasRatio); the sandbox refuses any
# document that expands past that many values, which no object within etcd's 1.5 MiB request limit reaches.
MAX_BODY_DEPTH = 64
MAX_YAML_VALUES = 400_000


def _parse_body(raw: bytes | str, yaml_ok: bool = False) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise bad_request("the request body is not UTF-8") from None
    if not raw.strip():
        raise bad_request("the request body is empty")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request(f"error decoding JSON body: nested deeper than {MAX_BODY_DEPTH} levels") from None
    except ValueError as e:
        if not yaml_ok:
            raise bad_request(f"error decoding JSON body: {e}") from None
        try:
            value = load_yaml(raw, max_depth=MAX_BODY_DEPTH, max_nodes=MAX_YAML_VALUES)
        except RecursionError:
            raise bad_request(f"error decoding YAML: nested deeper than {MAX_BODY_DEPTH} levels") from None
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {' '.join(str(e).split())[:500]}") from None
    if not nesting_ok(value, MAX_BODY_DEPTH):
        raise bad_request(f"error decoding JSON body: nested deeper than {MAX_BODY_DEPTH} levels")
    return value


def parse_body(raw: bytes | str, yaml_ok: bool = False) -> Any:
    return _parse_body(raw, yaml_ok)


def _apply_conflict(rt: ResourceType, name: str, conflicts: list, mf: managed.ManagedFields) -> KubeError:
    causes = []
    versions = {k[0]: e["apiVersion"] for k, e in mf.entries.items()}
    for mgr, path in conflicts:
        p = managed.fmt_path(path)
        causes.append({"reason": "FieldManagerConflict", "message": f'conflict with "{mgr}"', "field": p})
    if len(conflicts) == 1:
        mgr, path = conflicts[0]
        msg = (f'Apply failed with 1 conflict: conflict with "{mgr}" using {versions.get(mgr, rt.api_version)}: '
               f"{managed.fmt_path(path)}")
    else:
        lines = "\n".join(f'- conflict with "{m}" using {versions.get(m, rt.api_version)}: {managed.fmt_path(p)}'
                          for m, p in conflicts)
        msg = f"Apply failed with {len(conflicts)} conflicts: conflicts with \n{lines}"
    return KubeError(409, "Conflict", msg, name=name, group=rt.group, kind=rt.plural, causes=causes)


def encode_continue(rv: int, start: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": list(start)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = json.loads(raw)
        rv, start = d["rv"], d["start"]
        if not (isinstance(rv, int) and isinstance(start, list) and len(start) == 2
                and all(isinstance(x, str) for x in start)):
            raise ValueError("malformed")
        return rv, (start[0], start[1])
    except Exception:  # noqa: BLE001
        raise bad_request("continue key is not valid: incorrect encoded start resourceVersion") from None
