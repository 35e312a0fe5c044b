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


# ---- label selectors: apimachinery pkg/labels/selector.go (Lexer, Parser.parse, NewRequirement) ---------------
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOLS = {"!": "!", "!=": "!=", "(": "(", ")": ")", ",": ",", "=": "=", "==": "==", ">": ">", "<": "<"}
_QUALIFIED_NAME_MSG = ('must be a qualified name (at most 63 characters, matching regex '
                       "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]), with an optional DNS subdomain prefix (at most 253 "
                       "characters, matching regex [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*) "
                       'and slash (/): e.g. "MyName" or "example.com/MyName"')
_LABEL_VALUE_MSG = ('must have at most 63 characters, matching regex (([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?: '
                    'e.g. "MyValue" or ""')
_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_INT_RE = re.compile(r"[-+]?[0-9]+")


def _lex(selector: str) -> list[tuple[str, str]]:
    """Tokens as ``(kind, literal)``; kind is ``id``, ``in``, ``notin``, a symbol, ``end`` or ``error``."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(selector)
    while True:
        while i < n and selector[i] in _WHITESPACE:
            i += 1
        if i >= n:
            out.append(("end", ""))
            return out
        if selector[i] in _SPECIAL:
            buf, last = "", None
            while i < n and selector[i] in _SPECIAL:
                if buf + selector[i] in _SYMBOLS:
                    buf += selector[i]
                    last = buf
                    i += 1
                elif last is None:
                    buf += selector[i]
                    i += 1
                else:
                    break
            if last is None:
                out.append(("error", f"error expected: keyword found '{buf}'"))
            else:
                out.append((last, last))
            continue
        j = i
        while j < n and selector[j] not in _WHITESPACE and selector[j] not in _SPECIAL:
            j += 1
        word = selector[i:j]
        out.append((word if word in ("in", "notin") else "id", word))
        i = j


def _valid_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_NAME_RE.fullmatch(name))


def _valid_value(value: str) -> bool:
    return len(value) <= 63 and bool(_VALUE_RE.fullmatch(value))


class _SelectorError(Exception):
    pass


class _LabelParser:
    def __init__(self, selector: str) -> None:
        self.items = _lex(selector)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        kind, lit = self.items[self.pos]
        return ("id" if values and kind in ("in", "notin") else kind), lit

    def take(self, values: bool = True) -> tuple[str, str]:
        tok = self.peek(values)
        self.pos += 1
        return tok

    def parse(self) -> list[LabelReq]:
        reqs: list[LabelReq] = []
        while True:
            kind, lit = self.peek()
            if kind in ("id", "!"):
                try:
                    reqs.append(self.requirement())
                except _SelectorError as e:
                    raise bad_request(f"unable to parse requirement: {e}") from None
                kind, lit = self.take()
                if kind == "end":
                    return reqs
                if kind != ",":
                    raise bad_request(f"found '{lit}', expected: ',' or 'end of string'")
                kind2, lit2 = self.peek()
                if kind2 not in ("id", "!"):
                    raise bad_request(f"found '{lit2}', expected: identifier after ','")
            elif kind == "end":
                return reqs
            else:
                raise bad_request(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> LabelReq:
        op = ""
        kind, key = self.take()
        if kind == "!":
            op = "!exists"
            kind, key = self.take()
        if kind != "id":
            raise _SelectorError(f"found '{key}', expected: identifier")
        if not _valid_key(key):
            raise _SelectorError(f"invalid label key: {_QUALIFIED_NAME_MSG}")
        if op or self.peek()[0] in ("end", ","):  # "!k" ends the requirement whatever follows
            return (key, op or "exists", ())
        kind, lit = self.take(values=False)
        ops = {"in": "in", "notin": "notin", "=": "=", "==": "=", "!=": "!=", ">": "gt", "<": "lt"}
        if kind not in ops:
            raise _SelectorError(f"found '{lit}', expected: '=', '!=', '==', 'in', notin'")
        op = ops[kind]
        values = self.set_values() if op in ("in", "notin") else self.exact_value()
        for v in values:
            if not _valid_value(v):
                raise _SelectorError(f"invalid label value: {_LABEL_VALUE_MSG}")
        if op in ("gt", "lt") and not _INT_RE.fullmatch(values[0]):
            raise _SelectorError("for 'Gt', 'Lt' operators, the value must be an integer")
        return (key, op, values)

    def set_values(self) -> tuple[str, ...]:
        kind, lit = self.take()
        if kind != "(":
            raise _SelectorError(f"found '{lit}' expected: '('")
        kind, lit = self.peek()
        if kind == ")":  # "()" is the set {""}
            self.take()
            return ("",)
        if kind not in ("id", ","):
            raise _SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values: list[str] = []
        while True:
            kind, lit = self.take()
            if kind == "id":
                values.append(lit)
                kind2, lit2 = self.peek()
                if kind2 == ",":
                    continue
                if kind2 == ")":
                    break
                raise _SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if kind == ",":
                if not values:
                    values.append("")
                kind2, _ = self.peek()
                if kind2 == ")":
                    values.append("")
                    break
                if kind2 == ",":
                    self.take()
                    values.append("")
                continue
            raise _SelectorError(f"found '{lit}', expected: ',', or identifier")
        kind, lit = self.take()
        if kind != ")":
            raise _SelectorError(f"found '{lit}', expected: ')'")
        return tuple(dict.fromkeys(values))

    def exact_value(self) -> tuple[str, ...]:
        kind, lit = self.peek()
        if kind in ("end", ","):
            return ("",)
        kind, lit = self.take()
        if kind == "id":
            return (lit,)
        raise _SelectorError(f"found '{lit}', expected: identifier")


def _split_top(s: str) -> list[str]:
    """Comma-separated parts of a field selector, outside parentheses."""
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


def parse_labels(selector: str | None) -> list[LabelReq]:
    """A label selector as requirements, or the 400 the API server answers for it (``labels.Parse``)."""
    if not selector:
        return []
    return _LabelParser(selector).parse()


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
        elif op in ("gt", "lt"):  # the label must be an integer (Requirement.Matches)
            if not have or not _INT_RE.fullmatch(v or "") or len(v or "") > 19:
                return False
            if (int(v) > int(vals[0])) != (op == "gt") or int(v) == int(vals[0]):
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
