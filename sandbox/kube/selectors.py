"""Label and field selectors, parsed as apimachinery ``pkg/labels/selector.go`` and ``pkg/fields/selector.go`` do.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``; comma = AND.
Field selectors: ``f=v``, ``f==v``, ``f!=v``; the fields each resource supports are those of the real server's
``GetAttrs``/field label conversion funcs (``pkg/registry/core/pod/strategy.go`` etc.); others are a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

LabelReq = tuple[str, str, tuple[str, ...]]  # (key, op, values); op in = != in notin exists !exists


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p.strip() for p in out if p.strip()]


_SET_RE = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s*\(([^()]*)\)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")


def parse_labels(selector: str | None) -> list[LabelReq]:
    if not selector:
        return []
    reqs: list[LabelReq] = []
    for part in _split_top(selector):
        m = _SET_RE.match(part)
        if m:
            vals = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), vals))
            continue
        for op in ("==", "!=", "="):
            if op in part:
                k, v = part.split(op, 1)
                k, v = k.strip(), v.strip()
                if not _KEY_RE.match(k):
                    raise bad_request(f"unable to parse requirement: invalid label key {k!r}")
                reqs.append((k, "!=" if op == "!=" else "=", (v,)))
                break
        else:
            if part.startswith("!"):
                key, op = part[1:].strip(), "!exists"
            else:
                key, op = part, "exists"
            if not _KEY_RE.match(key):
                raise bad_request(f"unable to parse requirement: found '{part}', expected: identifier")
            reqs.append((key, op, ()))
    return reqs


def match_labels(reqs: list[LabelReq], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, vals in reqs:
        have = key in labels
        v = labels.get(key)
        if op == "=":
            if v != vals[0]:
                return False
        elif op == "!=":
            if have and v == vals[0]:
                return False
        elif op == "in":
            if not have or v not in vals:
                return False
        elif op == "notin":
            if have and v in vals:
                return False
        elif op == "exists":
            if not have:
                return False
        elif op == "!exists" and have:
            return False
    return True


def selector_from_label_selector(sel: dict[str, Any] | None) -> list[LabelReq]:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions) as requirements."""
    if not sel:
        return []
    reqs: list[LabelReq] = [(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}.get(e.get("operator"))
        if op:
            reqs.append((e["key"], op, tuple(e.get("values") or ())))
    return reqs


def selector_string(sel: dict[str, Any] | None) -> str:
    """``metav1.FormatLabelSelector``: what ``kubectl describe`` and Scale.status.selector show."""
    parts = []
    for k, v in sorted((sel or {}).get("matchLabels", {}).items()):
        parts.append(f"{k}={v}")
    for e in (sel or {}).get("matchExpressions") or []:
        op = e.get("operator")
        if op == "Exists":
            parts.append(e["key"])
        elif op == "DoesNotExist":
            parts.append("!" + e["key"])
        else:
            parts.append(f"{e['key']} {op.lower()} ({','.join(e.get('values') or [])})")
    return ",".join(parts)


# ---- field selectors -------------------------------------------------------------------------------------------
def _get(path: str) -> Callable[[dict], str]:
    keys = path.split(".")

    def getter(obj: dict) -> str:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(k)
        return "" if cur is None else str(cur)

    return getter


_COMMON = ("metadata.name", "metadata.namespace")
FIELDS: dict[str, tuple[str, ...]] = {
    "pods": _COMMON + ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                       "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "events": _COMMON + ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                         "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                         "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "nodes": _COMMON + ("spec.unschedulable",),
    "secrets": _COMMON + ("type",),
    "namespaces": _COMMON + ("status.phase",),
    "replicasets.apps": _COMMON + ("status.replicas",),
    "persistentvolumeclaims": _COMMON,
}
_ALIASES = {"source": "source.component"}


FieldReq = tuple[str, str, str]


def parse_fields(selector: str | None, resource_key: str) -> list[FieldReq]:
    if not selector:
        return []
    allowed = FIELDS.get(resource_key, _COMMON)
    reqs: list[FieldReq] = []
    for part in _split_top(selector):
        for op in ("==", "!=", "="):
            if op in part:
                k, v = part.split(op, 1)
                k = k.strip()
                if k not in allowed:
                    raise bad_request(f'field label not supported: {k}')
                reqs.append((k, "!=" if op == "!=" else "=", v.strip()))
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{part}'")
    return reqs


_GETTERS: dict[str, Callable[[dict], str]] = {}


def match_fields(reqs: list[FieldReq], obj: dict) -> bool:
    for k, op, v in reqs:
        g = _GETTERS.get(k)
        if g is None:
            g = _GETTERS[k] = _get(_ALIASES.get(k, k))
        have = g(obj)
        if k == "spec.hostNetwork" and have == "":
            have = "false"
        elif have in ("True", "False"):
            have = have.lower()
        if (op == "=") != (have == v):
            return False
    return True
