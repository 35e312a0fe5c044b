"""What a request to the API server is, by name, and the errors a fault injected into it answers with
(:mod:`sandbox.faults`).

Operation names are ``<verb> <resource>[/<subresource>]`` as in the audit log (``create deployments``,
``list pods``, ``watch pods``, ``patch deployments/scale``); ``discovery`` for /api, /apis, /version, /openapi.

Injected errors, as the API server answers them: throttled -> 429 ``Status`` reason ``TooManyRequests`` with
``Retry-After: 1`` and ``details.retryAfterSeconds`` (apimachinery ``NewTooManyRequests``, what the max-in-flight
filter answers); 5xx -> 500 ``InternalError`` / 503 ``ServiceUnavailable`` / 504 ``Timeout`` ``Status``.
"""

from __future__ import annotations

import json
from typing import Any

_5XX = {500: ("InternalError", "Internal error occurred: injected fault"),
        502: ("InternalError", "Internal error occurred: bad gateway (injected fault)"),
        503: ("ServiceUnavailable", "The server is currently unable to handle the request"),
        504: ("Timeout", "The server was unable to return a response in the time allotted, but may still be "
                         "processing the request")}


def operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    parts = [x for x in path.split("/") if x]
    if not parts or parts[0] not in ("api", "apis"):
        return "discovery"
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if not rest:
        return "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if method == "GET":
        verb = "watch" if query.get("watch", [""])[0] in ("1", "true") else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
    return f"{verb} {resource}" + (f"/{sub}" if sub else "")


def injected_error(kind: str, status: int) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of an injected fault: ``kind`` ``throttle`` or ``error`` (``status`` 500..504)."""
    if kind == "throttle":
        st, reason, msg = 429, "TooManyRequests", "Too many requests, please try again later."
        details: dict[str, Any] = {"retryAfterSeconds": 1}
    else:
        st = status
        reason, msg = _5XX[status]
        details = {"retryAfterSeconds": 1} if status in (503, 504) else {}
    doc: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": msg, "reason": reason, "code": st}
    if details:
        doc["details"] = details
    headers = [(b"content-type", b"application/json")]
    if kind == "throttle" or st in (503, 504):
        headers.append((b"retry-after", b"1"))
    return st, headers, json.dumps(doc).encode()
