"""OpenAPI v3: the index (``/openapi/v3``) and one document per group-version, built from the 1.33 schemas.

Enough for kubectl (``cli-runtime`` ``query_param_verifier_v3.go`` looks for a ``patch`` operation carrying
``x-kubernetes-group-version-kind`` and a ``fieldValidation`` parameter; client-side apply reads the kind schemas'
``x-kubernetes-patch-*`` extensions from ``components.schemas``). Paths follow apiserver ``endpoints/installer.go``.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from . import schema as sch
from .resources import GROUPS, ResourceType, resources_of

_QUERY = {
    "dryRun": "When present, indicates that modifications should not be persisted.",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request containing "
                       "unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
    "force": "Force is going to \"force\" Apply requests.",
    "pretty": "If 'true', then the output is pretty printed.",
}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _fix(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out[k] = "#/components/schemas/" + v.rsplit("/", 1)[-1]
            elif k == "type" and isinstance(v, list):
                types = [t for t in v if t != "null"]
                out[k] = types[0] if len(types) == 1 else types
            elif k == "additionalProperties" and v is False:
                continue
            else:
                out[k] = _fix(v)
        return out
    if isinstance(node, list):
        return [_fix(x) for x in node]
    return node


def _refs(node: Any, acc: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in acc:
                acc.add(name)
                _refs(sch.definitions().get(name), acc)
        for v in node.values():
            _refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            _refs(v, acc)


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "description": _QUERY.get(name, name), "required": required,
            "schema": {"type": "string", "uniqueItems": True}}


def _op(rt: ResourceType, action: str, ref: str, params: list[str], kind: str | None = None) -> dict[str, Any]:
    gvk = {"group": rt.group, "version": rt.version, "kind": kind or rt.kind}
    content = {"application/json": {"schema": {"$ref": ref}}}
    op: dict[str, Any] = {
        "operationId": f"{action}{rt.kind}",
        "parameters": [_param(p) for p in params],
        "responses": {"200": {"description": "OK", "content": content}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if action in ("post", "put", "patch"):
        types = ["application/json"] if action != "patch" else [
            "application/json-patch+json", "application/merge-patch+json",
            "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
        op["requestBody"] = {"content": {t: {"schema": {"$ref": ref}} for t in types}, "required": True}
    return op


@functools.cache
def _document(gvp: str) -> bytes | None:
    for group, versions in GROUPS.items():
        for version in versions:
            if _gv_path(group, version) == gvp:
                return orjson.dumps(_build(group, version))
    return None


def _build(group: str, version: str) -> dict[str, Any]:
    prefix = "/" + _gv_path(group, version)
    paths: dict[str, Any] = {}
    names: set[str] = set()
    write = ["dryRun", "fieldManager", "fieldValidation", "pretty"]
    for rt in resources_of(group, version):
        dn = sch.def_name(rt.group, rt.version, rt.kind)
        if not dn:
            continue
        names.add(dn)
        ref = f"#/components/schemas/{dn}"
        base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        ns_param = [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}] \
            if rt.namespaced else []
        name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths[base] = {"get": _op(rt, "list", ref, ["pretty"]), "post": _op(rt, "post", ref, write),
                       "parameters": ns_param}
        paths[base + "/{name}"] = {"get": _op(rt, "get", ref, ["pretty"]), "put": _op(rt, "put", ref, write),
                                   "patch": _op(rt, "patch", ref, [*write, "force"]),
                                   "delete": _op(rt, "delete", ref, ["dryRun"]),
                                   "parameters": ns_param + name_param}
        for s in rt.subresources:
            if s.name in ("status", "scale"):
                sref = ref
                if s.name == "scale":
                    sdn = sch.def_name("autoscaling", "v1", "Scale")
                    names.add(sdn)
                    sref = f"#/components/schemas/{sdn}"
                paths[f"{base}/{{name}}/{s.name}"] = {
                    "get": _op(rt, "get", sref, ["pretty"], s.kind), "put": _op(rt, "put", sref, write, s.kind),
                    "patch": _op(rt, "patch", sref, [*write, "force"], s.kind), "parameters": ns_param + name_param}
    acc = set(names)
    for n in names:
        _refs(sch.definitions().get(n), acc)
    schemas = {n: _fix(sch.definitions()[n]) for n in sorted(acc) if n in sch.definitions()}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.3"}, "paths": paths,
            "components": {"schemas": schemas}}


def document(gvp: str) -> bytes | None:
    return _document(gvp.split("?", 1)[0])


@functools.cache
def etag(gvp: str) -> str:
    doc = document(gvp) or b""
    return '"' + hashlib.sha512(doc).hexdigest()[:32].upper() + '"'


def index() -> dict[str, Any]:
    paths = {}
    for group, versions in GROUPS.items():
        for version in versions:
            gvp = _gv_path(group, version)
            paths[gvp] = {"serverRelativeURL": f"/openapi/v3/{gvp}?hash={etag(gvp).strip(chr(34))}"}
    return {"paths": paths}
