"""HTTP routes of the API server (starlette): path parsing, query options, content negotiation, watch streams.

Paths and verbs as apiserver's ``endpoints/installer.go`` registers them; request/response conventions from
``endpoints/handlers/{create,get,update,patch,delete,watch}.go``: create 201, apply-create 201, delete 200 (or 202
when finalizers delay it), watch as chunked JSON lines ``{"type","object"}``, Table when the Accept header asks
``as=Table;g=meta.k8s.io`` (``handlers/response.go``), ``Warning: 299 - "..."`` headers for dropped fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..strict import TooLarge, ascii_uint, read_capped
from . import conversion, discovery, openapi, protobuf, tables
from .api import KubeStore, decode_continue, encode_continue, parse_body
from .errors import (
    KubeError,
    bad_request,
    field_cause,
    invalid,
    method_not_allowed,
    unauthorized,
    unsupported_media_type,
)
from .patch import APPLY_PATCH, APPLY_PATCH_CBOR, PATCH_TYPES
from .resources import GROUPS, ResourceType, lookup, served

log = logging.getLogger("sandbox.kube")

# kube-apiserver refuses a write whose body exceeds MaxRequestBodyBytes, 3 MiB by default
# (k8s.io/apiserver/pkg/server/config.go: MaxRequestBodyBytes = 3 * 1024 * 1024), with 413 and a Status of reason
# RequestEntityTooLarge, "Request entity too large: limit is 3145728" (apiserver handlers/rest.go limitedReadBody,
# apimachinery errors.NewRequestEntityTooLargeError).
MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024


async def _limited_body(request: Request) -> bytes:
    too_large = KubeError(413, "RequestEntityTooLarge",
                          f"Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}")
    try:
        return await read_capped(request.headers, request.stream, MAX_REQUEST_BODY_BYTES)
    except TooLarge:
        raise too_large from None


def _parse(raw: bytes, yaml_ok: bool = False) -> Any:
    """parse_body, with nesting beyond the parser's recursion limit answered as the undecodable body it is (400)."""
    try:
        return parse_body(raw, yaml_ok=yaml_ok)
    except RecursionError:
        raise bad_request("error decoding JSON body: the object is nested too deeply") from None
JSON = "application/json"


def _json(body: Any, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type=JSON, headers=headers)


def _raw(blob: bytes, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(blob, status_code=code, media_type=JSON, headers=headers)


def _error(e: KubeError) -> Response:
    return _json(e.status(), e.code)


def _not_found_page() -> Response:
    return PlainTextResponse("404 page not found\n", status_code=404)


def _orphan_by_default(rt: ResourceType, opts: dict[str, Any]) -> list[str]:
    """batch/v1 Jobs orphan their pods unless told otherwise, with a warning (``pkg/registry/batch/job``:
    ``DefaultGarbageCollectionPolicy`` OrphanDependents, ``deleteOptionWarnings``)."""
    if rt.key != "jobs.batch" or opts.get("propagation_policy") is not None:
        return []
    opts["propagation_policy"] = "Orphan"
    return ["child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to "
            "remove them or set propagationPolicy=Orphan to suppress this warning"]


def _warn_headers(warnings: list[str]) -> dict[str, str] | None:
    if not warnings:
        return None
    return {"Warning": ", ".join(f'299 - "{w.replace(chr(34), chr(39))}"' for w in warnings)}


def _bool(v: str | None) -> bool:
    return v is not None and v.lower() in ("true", "1", "")


def _table_wanted(accept: str) -> bool:
    for part in accept.split(","):
        p = part.replace(" ", "")
        if "as=Table" in p and "g=meta.k8s.io" in p:
            return True
        if p.startswith(JSON) or p.startswith("*/*") or p.startswith("application/yaml"):
            return False
    return False


class KubeApp:
    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.store: KubeStore = kube.store
        self.app = Starlette(routes=[Route("/{path:path}", self.dispatch,
                                           methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])])

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)

    # ---- entry ---------------------------------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not self.kube.tokens.check(auth[7:].strip()):
            return _error(unauthorized())
        try:
            return await self._route(request)
        except KubeError as e:
            return _error(e)
        except Exception as e:  # noqa: BLE001 - never leak a traceback as a 500 without a Status
            log.exception("kube api: %s %s", request.method, request.url.path)
            return _json(KubeError(500, "InternalError", f"Internal error occurred: {e}").status(), 500)

    async def _route(self, request: Request) -> Response:
        path = request.path_params.get("path", "").strip("/")
        seg = path.split("/") if path else []
        accept = request.headers.get("accept", "")
        if not seg:
            return _json({"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz", "/livez",
                                    "/readyz"] + [f"/apis/{g}/{v}" for g, vs in GROUPS.items() if g for v in vs]})
        head = seg[0]
        if head in ("healthz", "livez", "readyz") and len(seg) == 1:
            return PlainTextResponse("ok")
        if head == "version" and len(seg) == 1:
            return _json(discovery.VERSION_INFO)
        if head == "openapi":
            return self._openapi(seg[1:], request)
        if head == "api":
            if len(seg) == 1:
                agg = discovery.wants_aggregated(accept)
                if agg:
                    return self._aggregated(True, agg)
                return _json(discovery.api_versions(request.url.netloc))
            if seg[1] != "v1":
                return _not_found_page()
            if len(seg) == 2:
                return _json(discovery.resource_list("", "v1"))
            return await self._resource(request, "", "v1", seg[2:])
        if head == "apis":
            if len(seg) == 1:
                agg = discovery.wants_aggregated(accept)
                if agg:
                    return self._aggregated(False, agg)
                return _json(discovery.api_group_list(self.kube.extra_groups()))
            group = seg[1]
            if len(seg) >= 3 and (group, seg[2]) in self.kube.aggregated:
                return await self.kube.aggregated[(group, seg[2])]["handler"](request)
            if len(seg) == 2:
                if group in GROUPS and group:
                    return _json(discovery.api_group(group))
                extra = dict(self.kube.extra_groups())
                if group in extra:
                    return _json(discovery.api_group(group, extra[group]))
                return _not_found_page()
            if not served(group, seg[2]):
                return _not_found_page()
            if len(seg) == 3:
                return _json(discovery.resource_list(group, seg[2]))
            return await self._resource(request, group, seg[2], seg[3:])
        return _not_found_page()

    def _aggregated(self, core: bool, version: str) -> Response:
        body = discovery.aggregated(core, version, self.kube.extra_aggregated())
        ctype = discovery.AGG_CONTENT_TYPE.format(v=version)
        return Response(orjson.dumps(body), media_type=ctype)

    def _openapi(self, seg: list[str], request: Request) -> Response:
        if seg == ["v3"]:
            return _json(openapi.index())
        if len(seg) >= 2 and seg[0] == "v3":
            doc = openapi.document("/".join(seg[1:]))
            if doc is None:
                return _not_found_page()
            return _raw(doc, headers={"Cache-Control": "public, immutable", "Etag": openapi.etag("/".join(seg[1:]))})
        return _not_found_page()

    # ---- resources -----------------------------------------------------------------------------------------------
    async def _resource(self, request: Request, group: str, version: str, rest: list[str]) -> Response:
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                ns = rest[1]
                rest = rest[2:]
        rt = lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            return _not_found_page()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and rt.sub(sub) is None:
            return _not_found_page()
        if rt.namespaced and name is not None and not ns:
            return _not_found_page()
        q = request.query_params
        method = request.method
        _check_field_manager(q.get("fieldManager"), method)
        manager = q.get("fieldManager") or _default_manager(request)
        dry_run = q.get("dryRun") == "All"
        if q.get("dryRun") not in (None, "All"):
            raise bad_request(f"unsupported dry run value {q.get('dryRun')!r}: only All is supported")
        fv = q.get("fieldValidation") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation must be one of Ignore, Warn, Strict (got {fv})")
        warnings: list[str] = []
        table = _table_wanted(request.headers.get("accept", ""))
        if method in ("GET", "HEAD"):
            if name is None:
                if _bool(q.get("watch")) and q.get("watch") is not None:
                    return self._watch(request, rt, ns or None, table)
                return self._list(request, rt, ns or None, table)
            if sub == "scale":
                return _json(self.store.get_scale(rt, ns, name))
            if rt.plural == "pods" and sub == "log":
                return self._pod_log(ns, name, q)
            obj = self.store.get(rt, ns, name)
            if table:
                return _json(tables.table(rt, [obj], self.store.clock.now(), q.get("includeObject", "Metadata")))
            return _json(obj)
        if method == "POST":
            body = await self._body(request)
            if name is None:
                out = self.store.create(rt, body, ns or None, field_manager=manager, dry_run=dry_run,
                                        field_validation=fv, warnings=warnings)
                return _json(out, 201, _warn_headers(warnings))
            if rt.plural == "pods" and sub == "binding":
                target = (body.get("target") or {}) if isinstance(body, dict) else {}
                if not target.get("name"):
                    raise bad_request("binding target name is required")
                self.store.bind(ns, name, target["name"], dry_run=dry_run)
                return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, 201)
            raise method_not_allowed("create", rt.plural, rt.group)
        if name is None and method == "DELETE":
            opts = await self._delete_options(request)
            warn = _orphan_by_default(rt, opts)
            deleted = self.store.delete_collection(rt, ns or None, q.get("labelSelector"), q.get("fieldSelector"),
                                                   **opts)
            return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": str(self.store.resource_version())}, "items": deleted},
                         200, _warn_headers(warn))
        if name is None:
            raise method_not_allowed(method.lower(), rt.plural, rt.group)
        if method == "PUT":
            if sub == "binding":
                raise method_not_allowed("update", rt.plural, rt.group)
            body = await self._body(request)
            out = self.store.update(rt, body, ns or None, name=name, subresource=sub, field_manager=manager,
                                    dry_run=dry_run, field_validation=fv, warnings=warnings)
            return _json(out, 200, _warn_headers(warnings))
        if method == "PATCH":
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype == APPLY_PATCH_CBOR or ctype not in PATCH_TYPES:
                raise unsupported_media_type(ctype or "(none)")
            raw = await _limited_body(request)
            body = _parse(raw, yaml_ok=ctype == APPLY_PATCH)
            force = _bool(q.get("force")) if q.get("force") is not None else False
            if force and ctype != APPLY_PATCH:
                raise bad_request("force may not be specified for non-apply patch")
            out, created = self.store.patch(rt, ns or None, name, body, ctype, subresource=sub,
                                            field_manager=q.get("fieldManager") or (None if ctype == APPLY_PATCH
                                                                                    else manager),
                                            force=force, dry_run=dry_run, field_validation=fv, warnings=warnings)
            return _json(out, 201 if created else 200, _warn_headers(warnings))
        if method == "DELETE":
            opts = await self._delete_options(request)
            warn = _warn_headers(_orphan_by_default(rt, opts))
            out = self.store.delete(rt, ns or None, name, **opts)
            if out["metadata"].get("deletionTimestamp") and self.store.try_get(rt, ns or None, name) is not None:
                return _json(out, 200 if rt.plural == "pods" else 202, warn)
            if rt.plural == "pods":
                return _json(out)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": name, "group": rt.group, "kind": rt.plural,
                                      "uid": out["metadata"].get("uid")}}, 200, warn)
        raise method_not_allowed(method.lower(), rt.plural, rt.group)

    def _pod_log(self, ns: str, name: str, q: Any) -> Response:
        """``pods/log``: the container's log as the sandbox's container runtime reports it (the kubelets' logs)."""
        pod = self.store.get("pods", ns, name)
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                              f"[{' '.join(names)}]")
        if container not in names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        text = self.kube.logs.logs(ns, name, container)
        tail = q.get("tailLines")
        if tail is not None:
            n = ascii_uint(tail)
            if n is None:
                raise bad_request(f'strconv.ParseInt: parsing "{tail[:100]}": invalid syntax')
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-n:]) if n else ""
        return PlainTextResponse(text)

    async def _body(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == protobuf.CONTENT_TYPE:  # client-go sends built-in kinds so (kubectl create configmap ...)
            return protobuf.decode(await _limited_body(request))
        if ctype and ("protobuf" in ctype or "cbor" in ctype):
            raise unsupported_media_type(ctype)
        raw = await _limited_body(request)
        return _parse(raw, yaml_ok=ctype == "application/yaml")

    async def _delete_options(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        raw = await _limited_body(request)
        body: dict[str, Any] = {}
        if raw.strip():
            parsed = _parse(raw)
            if not isinstance(parsed, dict):
                raise bad_request("DeleteOptions must be an object")
            body = parsed
        _check_delete_body(body)
        policy = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = q.get("orphanDependents") or body.get("orphanDependents")
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        if policy is not None and policy not in _PROPAGATION:
            raise invalid("DeleteOptions", "meta.k8s.io", "", [field_cause(
                "propagationPolicy", f'Unsupported value: "{policy[:100]}": supported values: "Foreground", '
                '"Background", "Orphan"', "FieldValueNotSupported")])
        grace = q.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        dry = q.get("dryRun") == "All" or "All" in (body.get("dryRun") or [])
        grace_i = _go_int(grace, "gracePeriodSeconds") if isinstance(grace, str) else grace
        return {"propagation_policy": policy, "grace_period_seconds": grace_i,
                "preconditions": body.get("preconditions"), "dry_run": dry}

    def _list(self, request: Request, rt: ResourceType, ns: str | None, table: bool) -> Response:
        q = request.query_params
        entries, rv = self.store.select(rt, ns, q.get("labelSelector"), q.get("fieldSelector"))
        cont = q.get("continue")
        if cont:
            _crv, start = decode_continue(cont)
            entries = [e for e in entries if (e.obj["metadata"].get("namespace", ""), e.obj["metadata"]["name"]) > start]
        limit = q.get("limit")
        next_token, remaining = None, None
        if limit:
            try:
                n = int(limit)
            except ValueError:
                raise bad_request(f"invalid limit {limit!r}") from None
            if n > 0 and len(entries) > n:
                last = entries[n - 1].obj["metadata"]
                next_token = encode_continue(rv, (last.get("namespace", ""), last["name"]))
                remaining = len(entries) - n
                entries = entries[:n]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if next_token:
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        if table:
            objs = [conversion.from_storage(rt, e.obj) for e in entries]
            body = tables.table(rt, objs, self.store.clock.now(), q.get("includeObject", "Metadata"))
            body["metadata"] = meta
            return _json(body)
        if rt.storage:
            blobs = [orjson.dumps(conversion.from_storage(rt, e.obj)) for e in entries]
        else:
            blobs = [e.blob for e in entries]
        head = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        return _raw(head[:-1] + b',"items":[' + b",".join(blobs) + b"]}")

    def _watch(self, request: Request, rt: ResourceType, ns: str | None, table: bool) -> Response:
        q = request.query_params
        timeout = q.get("timeoutSeconds")
        timeout_f = float(_go_int(timeout, "timeoutSeconds")) if timeout else None
        rv = q.get("resourceVersion")
        if rv and ascii_uint(rv) is None:
            # APIObjectVersioner.ParseResourceVersion (apiserver pkg/storage/api_object_versioner.go) refuses it
            # before the watch starts: a 400 Status, not a stream cut off after its 200
            raise bad_request(f'invalid resource version "{rv[:100]}": resourceVersion: Invalid value: '
                              f'"{rv[:100]}": strconv.ParseUint: parsing "{rv[:100]}": invalid syntax')
        # parse selectors now so a bad one is a 400, not an error inside the stream
        from .selectors import parse_fields, parse_labels
        parse_labels(q.get("labelSelector"))
        parse_fields(q.get("fieldSelector"), rt.key)
        gen = self.store.watch_raw(rt, ns, q.get("labelSelector"), q.get("fieldSelector"), q.get("resourceVersion"),
                                   timeout_f, _bool(q.get("allowWatchBookmarks")) if q.get("allowWatchBookmarks")
                                   else False)
        include = q.get("includeObject", "Metadata")
        clock = self.store.clock

        async def stream():
            try:
                async for kind, obj in gen:
                    if table and kind in ("ADDED", "MODIFIED", "DELETED"):
                        obj = tables.table(rt, [obj], clock.now(), include)
                    yield orjson.dumps({"type": kind, "object": obj}) + b"\n"
            except (asyncio.CancelledError, GeneratorExit):
                raise
            finally:
                with contextlib.suppress(Exception):
                    await gen.aclose()

        return StreamingResponse(stream(), media_type=JSON)


_PROPAGATION = ("Foreground", "Background", "Orphan")
# metav1.DeleteOptions field types (apimachinery pkg/apis/meta/v1/types.go); a body of other types is refused by the
# JSON decoder with a 400 before any deletion (json: cannot unmarshal ... into Go struct field ...).
_DELETE_TYPES: dict[str, tuple[type, ...]] = {
    "gracePeriodSeconds": (int,), "propagationPolicy": (str,), "orphanDependents": (bool,),
    "preconditions": (dict,), "dryRun": (list,), "kind": (str,), "apiVersion": (str,),
    "ignoreStoreReadErrorWithClusterBreakingPotential": (bool,),
}
_GO_TYPE = {int: "int64", str: "string", bool: "bool", dict: "v1.Preconditions", list: "[]string"}
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}
FIELD_MANAGER_MAX_LENGTH = 128  # apimachinery pkg/apis/meta/v1/validation ValidateFieldManager


def _unmarshal_error(field: str, value: object) -> KubeError:
    want = _GO_TYPE[_DELETE_TYPES[field][0]]
    got = "null" if value is None else _JSON_TYPE.get(type(value), "value")
    return bad_request(f"json: cannot unmarshal {got} into Go struct field DeleteOptions.{field} of type {want}")


def _check_delete_body(body: dict[str, Any]) -> None:
    for field, types in _DELETE_TYPES.items():
        if field not in body or body[field] is None:
            continue
        value = body[field]
        if not isinstance(value, types) or (types == (int,) and isinstance(value, bool)):
            raise _unmarshal_error(field, value)
    if "dryRun" in body and body["dryRun"] is not None and not all(isinstance(x, str) for x in body["dryRun"]):
        raise _unmarshal_error("dryRun", next(x for x in body["dryRun"] if not isinstance(x, str)))
    pre = body.get("preconditions") or {}
    for key in ("uid", "resourceVersion"):
        if pre.get(key) is not None and not isinstance(pre[key], str):
            raise bad_request(f"json: cannot unmarshal {_JSON_TYPE.get(type(pre[key]), 'value')} into Go struct "
                              f"field Preconditions.preconditions.{key} of type string")
    grace = body.get("gracePeriodSeconds")
    if isinstance(grace, int) and not -(2**63) <= grace < 2**63:
        raise bad_request("json: cannot unmarshal number into Go struct field DeleteOptions.gracePeriodSeconds "
                          "of type int64")


def _go_int(text: str, name: str) -> int:
    """A query parameter of Go type int64, as the parameter codec converts it (strconv.ParseInt)."""
    digits = text[1:] if text[:1] == "-" else text
    n = ascii_uint(digits)
    if n is None:
        raise bad_request(f'strconv.ParseInt: parsing "{text[:100]}": invalid syntax ({name})')
    return -n if text[:1] == "-" else n


def _check_field_manager(manager: str | None, method: str) -> None:
    """ValidateFieldManager (apimachinery pkg/apis/meta/v1/validation/validation.go): at most 128 bytes, printable
    characters only; the handlers answer 422 Invalid on the options kind (CreateOptions, UpdateOptions,
    PatchOptions)."""
    if not manager or method not in ("POST", "PUT", "PATCH"):
        return
    causes = []
    if len(manager.encode()) > FIELD_MANAGER_MAX_LENGTH:
        causes.append(field_cause("fieldManager", f"Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes",
                                  "FieldValueTooLong"))
    bad = next(((i, c) for i, c in enumerate(manager) if not c.isprintable()), None)
    if bad is not None:
        causes.append(field_cause("fieldManager", f'Invalid value: "{manager[:128]}": invalid character '
                                  f"U+{ord(bad[1]):04X} (at position {bad[0]})"))
    if causes:
        kind = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}[method]
        raise invalid(kind, "meta.k8s.io", "", causes)


def _default_manager(request: Request) -> str:
    ua = request.headers.get("user-agent", "unknown")
    return ua.split("/", 1)[0][:128] or "unknown"
