"""Field ownership (``metadata.managedFields``, FieldsV1) and server-side apply.

Modelled on sigs.k8s.io/structured-merge-diff as used by apiserver's ``fieldmanager``: a field set is the set of
leaf paths of an object, path elements written as FieldsV1 keys (``f:name``, ``k:{"name":"x"}`` for items of
``x-kubernetes-list-type: map`` lists, ``v:"x"`` for ``set`` lists, ``.`` for a list item itself; ``atomic`` lists
are one leaf). Apply: conflicts are fields another manager owns whose live value differs from the applied one
(409 unless ``force``, which takes them over); fields the applier owned before and no longer applies are removed
unless someone else owns them. Update (PUT/PATCH/POST): the fields whose value changed move to the updater.
"""

from __future__ import annotations

import json
from typing import Any

from . import schema as sch

Path = tuple[str, ...]
_MISSING = object()
_KEY_DEFAULTS = {"protocol": "TCP"}
# Never tracked (apiserver strips them before computing managed fields).
_IGNORED_TOP = {"apiVersion", "kind"}
_IGNORED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                 "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"}


def _item_key(item: Any, map_keys: list[str]) -> str:
    if not isinstance(item, dict):
        return "v:" + json.dumps(item, separators=(",", ":"))
    kv = {}
    for k in map_keys:
        if k in item:
            kv[k] = item[k]
        elif k in _KEY_DEFAULTS:
            kv[k] = _KEY_DEFAULTS[k]
    return "k:" + json.dumps(kv, separators=(",", ":"), sort_keys=True)


def field_set(obj: dict[str, Any], node: dict[str, Any] | None) -> set[Path]:
    out: set[Path] = set()
    top = {k: v for k, v in obj.items() if k not in _IGNORED_TOP}
    meta = top.get("metadata")
    if isinstance(meta, dict):
        top["metadata"] = {k: v for k, v in meta.items() if k not in _IGNORED_META}
        if not top["metadata"]:
            del top["metadata"]
    _walk(top, node, (), out)
    return out


def _walk(obj: dict[str, Any], node: dict[str, Any] | None, prefix: Path, out: set[Path]) -> None:
    for k, v in obj.items():
        p = prefix + ("f:" + k,)
        sub = sch.prop(node, k)
        if isinstance(v, dict) and v:
            _walk(v, sub, p, out)
        elif isinstance(v, list) and v:
            meta = sch.list_meta(sub)
            if meta["list_type"] == "map" and meta["map_keys"]:
                item_node = sch.items(sub)
                for it in v:
                    kp = p + (_item_key(it, meta["map_keys"]),)
                    out.add(kp + (".",))
                    if isinstance(it, dict):
                        _walk(it, item_node, kp, out)
            elif meta["list_type"] == "set":
                for it in v:
                    out.add(p + ("v:" + json.dumps(it, separators=(",", ":")),))
            else:
                out.add(p)
        else:
            out.add(p)


def _find_item(lst: list, key: str) -> int | None:
    if key.startswith("v:"):
        val = json.loads(key[2:])
        return next((i for i, it in enumerate(lst) if it == val), None)
    want = json.loads(key[2:])
    for i, it in enumerate(lst):
        if isinstance(it, dict) and all(it.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items()):
            return i
    return None


def get_at(obj: Any, path: Path) -> Any:
    cur = obj
    for el in path:
        if el == ".":
            return cur
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return _MISSING
            cur = cur[el[2:]]
        else:
            if not isinstance(cur, list):
                return _MISSING
            i = _find_item(cur, el)
            if i is None:
                return _MISSING
            cur = cur[i]
    return cur


def remove_at(obj: Any, path: Path) -> None:
    cur = obj
    for n, el in enumerate(path):
        last = n == len(path) - 1 or (n == len(path) - 2 and path[-1] == ".")
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return
            if last:
                del cur[el[2:]]
                return
            cur = cur[el[2:]]
        else:
            if not isinstance(cur, list):
                return
            i = _find_item(cur, el)
            if i is None:
                return
            if last:
                cur.pop(i)
                return
            cur = cur[i]


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        cur = root
        for el in p:
            cur = cur.setdefault(el, {})
    return root


def from_fields_v1(fields: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in (fields or {}).items():
        p = prefix + (k,)
        if isinstance(v, dict) and v:
            out |= from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def fmt_path(p: Path) -> str:
    """``.spec.replicas``, ``.spec.containers[name="c"].image`` — the way apply conflicts name fields."""
    s = ""
    for el in p:
        if el == ".":
            continue
        if el.startswith("f:"):
            s += "." + el[2:]
        elif el.startswith("k:"):
            kv = json.loads(el[2:])
            s += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kv.items()) + "]"
        else:
            s += "[" + el[2:] + "]"
    return s


def apply_merge(live: Any, config: Any, node: dict[str, Any] | None) -> Any:
    """Merge an applied configuration into the live object by the schema's list types."""
    if not isinstance(config, dict) or not isinstance(live, dict):
        return config
    out = dict(live)
    for k, v in config.items():
        sub = sch.prop(node, k)
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = apply_merge(out[k], v, sub)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            meta = sch.list_meta(sub)
            if meta["list_type"] == "map" and meta["map_keys"]:
                merged = list(out[k])
                item_node = sch.items(sub)
                for it in v:
                    i = _find_item(merged, _item_key(it, meta["map_keys"]))
                    if i is None:
                        merged.append(it)
                    else:
                        merged[i] = apply_merge(merged[i], it, item_node)
                out[k] = merged
            elif meta["list_type"] == "set":
                merged = list(out[k])
                for it in v:
                    if it not in merged:
                        merged.append(it)
                out[k] = merged
            else:
                out[k] = v
        else:
            out[k] = v
    return out


class ManagedFields:
    """The ``managedFields`` of one object as field sets keyed by (manager, operation, subresource)."""

    def __init__(self, entries: list[dict[str, Any]] | None) -> None:
        self.entries: dict[tuple[str, str, str], dict[str, Any]] = {}
        for e in entries or []:
            key = (e.get("manager", ""), e.get("operation", "Update"), e.get("subresource", ""))
            self.entries[key] = {"apiVersion": e.get("apiVersion", ""), "time": e.get("time"),
                                 "set": from_fields_v1(e.get("fieldsV1") or {})}

    def render(self) -> list[dict[str, Any]]:
        out = []
        for (manager, op, subres), e in self.entries.items():
            if not e["set"]:
                continue
            d = {"manager": manager, "operation": op, "apiVersion": e["apiVersion"], "time": e["time"],
                 "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(e["set"])}
            if subres:
                d["subresource"] = subres
            out.append(d)
        return out

    def record_update(self, old: dict | None, new: dict, node: dict | None, manager: str, api_version: str,
                      now: str, subresource: str = "") -> None:
        new_set = field_set(new, node)
        if old is None:
            changed = new_set
            removed: set[Path] = set()
        else:
            old_set = field_set(old, node)
            removed = old_set - new_set
            changed = {p for p in new_set
                       if p[-1] == "." and p not in old_set or p[-1] != "." and get_at(old, p) != get_at(new, p)}
        if not changed and not removed:
            return
        for e in self.entries.values():
            e["set"] -= changed
            e["set"] -= removed
        key = (manager, "Update", subresource)
        entry = self.entries.setdefault(key, {"apiVersion": api_version, "time": now, "set": set()})
        entry["set"] |= changed
        entry["time"] = now
        entry["apiVersion"] = api_version

    def apply(self, live: dict, config: dict, node: dict | None, manager: str, api_version: str, now: str,
              force: bool, subresource: str = "") -> tuple[dict, list[tuple[str, Path]]]:
        """Server-side apply; returns (new object, conflicts). With conflicts and not force, nothing changes."""
        new_set = field_set(config, node)
        key = (manager, "Apply", subresource)
        conflicts: list[tuple[str, Path]] = []
        for (mgr, _op, _sub), e in self.entries.items():
            if (mgr, _op, _sub) == key:
                continue
            for p in e["set"] & new_set:
                if p[-1] == ".":
                    continue
                if get_at(live, p) != get_at(config, p):
                    conflicts.append((mgr, p))
        if conflicts and not force:
            return live, sorted(conflicts)
        if conflicts:
            taken = {p for _, p in conflicts}
            for k, e in self.entries.items():
                if k != key:
                    e["set"] -= taken
        old_set = self.entries.get(key, {}).get("set", set())
        others: set[Path] = set()
        for k, e in self.entries.items():
            if k != key:
                others |= e["set"]
        result = json.loads(json.dumps(live))
        for p in sorted(old_set - new_set - others, key=len, reverse=True):
            base = p[:-1] if p[-1] == "." else p
            if not any(q[: len(base)] == base for q in others):
                remove_at(result, p)
        result = apply_merge(result, config, node)
        self.entries[key] = {"apiVersion": api_version, "time": now, "set": new_set}
        return result, []
