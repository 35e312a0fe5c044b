"""The Kubernetes 1.33 OpenAPI schemas shipped by ``kubernetes-validate``, loaded once.

Used for validation (one cached ``jsonschema`` validator per kind), for strategic-merge metadata
(``x-kubernetes-patch-merge-key``/``-patch-strategy``), for server-side apply list semantics
(``x-kubernetes-list-type``/``-list-map-keys``) and for the OpenAPI v3 documents served to kubectl.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

K8S_VERSION = "1.33"
_DEFS_ID = "https://kubernetes.io/api/_definitions.json"


def _schema_dir() -> Path:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    dirs = sorted(p for p in base.glob(f"v{K8S_VERSION}.*-local-strict"))
    if not dirs:
        raise RuntimeError(f"kubernetes-validate ships no {K8S_VERSION} schemas")
    return dirs[-1]


@functools.cache
def definitions() -> dict[str, Any]:
    return json.loads((_schema_dir() / "_definitions.json").read_text())["$defs"]


@functools.cache
def _registry() -> Registry:
    doc = json.loads((_schema_dir() / "_definitions.json").read_text())
    return Resource.from_contents(doc) @ Registry()


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, d in definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind", ()):
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def def_name(group: str, version: str, kind: str) -> str | None:
    return _gvk_index().get((group, version, kind))


def kind_schema(group: str, version: str, kind: str) -> dict[str, Any] | None:
    name = def_name(group, version, kind)
    return definitions().get(name) if name else None


@functools.cache
def validator(group: str, version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """A compiled validator for a kind (cached: validation is on every write)."""
    name = def_name(group, version, kind)
    if name is None:
        return None
    schema = {"$ref": f"{_DEFS_ID}#/$defs/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=_registry())


@functools.cache
def def_validator(name: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator({"$ref": f"{_DEFS_ID}#/$defs/{name}"}, registry=_registry())


def resolve(node: dict[str, Any] | None) -> dict[str, Any] | None:
    """Follow ``$ref`` (and a single-branch ``allOf``) to the definition a schema node stands for."""
    seen = 0
    while node is not None and seen < 20:
        seen += 1
        ref = node.get("$ref")
        if ref:
            node = definitions().get(ref.rsplit("/", 1)[-1])
            continue
        all_of = node.get("allOf")
        if all_of and len(all_of) == 1:
            node = all_of[0]
            continue
        return node
    return node


def prop(node: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The schema of field ``key`` of an object schema (unresolved, so list metadata stays visible)."""
    node = resolve(node)
    if not node:
        return None
    props = node.get("properties")
    if props and key in props:
        return props[key]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    return None


def items(node: dict[str, Any] | None) -> dict[str, Any] | None:
    node = resolve(node)
    if not node:
        return None
    it = node.get("items")
    return it if isinstance(it, dict) else None


def list_meta(node: dict[str, Any] | None) -> dict[str, Any]:
    """Patch/apply metadata of a list field: merge key, strategy, list type, map keys."""
    if not node:
        return {}
    return {
        "merge_key": node.get("x-kubernetes-patch-merge-key"),
        "strategy": node.get("x-kubernetes-patch-strategy", ""),
        "list_type": node.get("x-kubernetes-list-type"),
        "map_keys": node.get("x-kubernetes-list-map-keys"),
    }
