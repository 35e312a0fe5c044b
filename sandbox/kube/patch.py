"""The three client-side patch types: JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch.

Strategic merge follows apimachinery ``pkg/util/strategicpatch/patch.go``: lists whose schema says
``x-kubernetes-patch-strategy: merge`` are merged by ``x-kubernetes-patch-merge-key`` (containers and volumes by
``name``, ports by ``containerPort``, conditions by ``type``, ownerReferences by ``uid``, ...) or, for lists of
scalars (finalizers), as a union; every other list is replaced. The directives kubectl sends are honoured:
``$patch: replace|delete|merge``, ``$retainKeys``, ``$deleteFromPrimitiveList/<field>`` and
``$setElementOrder/<field>`` (order only). Merge keys come from the 1.33 schemas, so nothing is hard-coded here.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from . import schema as sch
from .errors import KubeError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def json_patch(doc: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise bad_request("json patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(ops).apply(doc)
    except jsonpatch.JsonPatchTestFailed as e:
        raise KubeError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError, IndexError) as e:
        raise KubeError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e
    except Exception as e:  # noqa: BLE001 - any malformed op is the client's error
        raise bad_request(f"invalid json patch: {e}") from e


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _strip(value: Any) -> Any:
    """A patch value with its directives removed (what gets stored when there is nothing to merge into)."""
    if isinstance(value, dict):
        if value.get("$patch") == "delete":
            return None
        out = {}
        for k, v in value.items():
            if k.startswith("$"):
                continue
            if v is None:
                continue
            sv = _strip(v)
            if sv is not None or not isinstance(v, dict):
                out[k] = sv
        return out
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") in ("delete", "replace"))]
    return value


def strategic_merge(original: dict[str, Any], patch: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch must be a JSON object")
    out = _merge_map(original, patch, node)
    return out if out is not None else {}


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    if directive is not None and directive != "merge":
        # strategicpatch handleDirectiveInMergeMap -> mergepatch.ErrBadPatchType (apimachinery pkg/util/mergepatch)
        raise bad_request(f"unknown patch type: {str(directive)[:100]} in map: {str(patch)[:200]}")
    result = dict(orig) if isinstance(orig, dict) else {}
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for k in list(result):
            if k not in retain and k not in patch:
                del result[k]
    orders: dict[str, list] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v if isinstance(v, list) else []
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if k.startswith("$"):
            raise bad_request(f"unknown patch directive {k!r}")
        sub = sch.prop(node, k)
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            merged = _merge_map(result.get(k) if isinstance(result.get(k), dict) else {}, v, sub)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            meta = sch.list_meta(sub)
            if "merge" in (meta["strategy"] or "") and isinstance(result.get(k), list):
                result[k] = _merge_list(result[k], v, meta, sch.items(sub))
            elif v and isinstance(v[0], dict) and v[0].get("$patch") == "replace":
                result[k] = _strip(v[1:])
            else:
                result[k] = _strip(v)
        else:
            result[k] = v
    for field, order in orders.items():
        key = sch.list_meta(sch.prop(node, field))["merge_key"]
        if isinstance(result.get(field), list) and key:
            rank = {(o.get(key) if isinstance(o, dict) else o): i for i, o in enumerate(order)}
            result[field] = sorted(result[field],
                                   key=lambda it: rank.get(it.get(key) if isinstance(it, dict) else it, len(rank)))
    return result


def _merge_list(orig: list, patch: list, meta: dict[str, Any], item_node: dict[str, Any] | None) -> list:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    key = meta["merge_key"]
    result = [copy.deepcopy(x) for x in orig]
    if not key:  # list of scalars with merge strategy: union
        for p in patch:
            if isinstance(p, dict) and "$patch" in p:
                continue
            if p not in result:
                result.append(p)
        return result
    for p in patch:
        if not isinstance(p, dict):
            raise bad_request(f"list items must be objects with merge key {key!r}")
        idx = next((i for i, it in enumerate(result) if isinstance(it, dict) and it.get(key) == p.get(key)), None)
        if p.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append(_strip(p))
        else:
            merged = _merge_map(result[idx], p, item_node)
            if merged is None:
                result.pop(idx)
            else:
                result[idx] = merged
    return result
