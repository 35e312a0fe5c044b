"""The ROA wire protocol of the ACK OpenAPI: request parsing (path, query, JSON body) and signature checking.

Request handling order, as a POP gateway does it: signature first (anything unsigned or mis-signed never reaches an
API), then the route (method + path), then the body. JSON bodies are parsed here; a body that is not JSON is
``InvalidParameter`` (400). Responses always carry ``x-acs-request-id``; see :mod:`sandbox.ack.errors` for the
error shape.

The body is bounded before it is read, signed or not (:data:`MAX_BODY_BYTES`), and a JSON body nested deeper than
:data:`MAX_JSON_DEPTH` is ``InvalidParameter`` like any other undecodable body: the node-pool documents ACK takes
are a few levels deep, and Python's decoder and the handlers would otherwise fail on recursion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from ..strict import TooLarge, nesting_ok, read_capped
from .auth import Verifier, parse_query
from .errors import AckError

# No public figure for the OpenAPI gateway's body limit was found; ACK's request documents (a node pool with its
# user data, at most 16 KB) are far below this. Beyond it: 413 with the ACK error shape.
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64


@dataclass
class ApiRequest:
    method: str
    path: str  # decoded path
    query: dict[str, str]  # decoded; last value wins
    body: bytes
    access_key_id: str
    request_id: str = ""

    def json(self, required: bool = True) -> Any:
        if not self.body.strip():
            if required:
                raise AckError(400, "InvalidParameter", "the request body is required (a JSON object)")
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AckError(400, "InvalidParameter", f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            value = None
        if value is None and self.body.strip() != b"null" or not nesting_ok(value, MAX_JSON_DEPTH):
            raise AckError(400, "InvalidParameter",
                           f"the request body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        return value


async def read_request(request: Request, verifier: Verifier, request_id: str) -> ApiRequest:
    try:
        body = await read_capped(request.headers, request.stream, MAX_BODY_BYTES)
    except TooLarge:
        raise AckError(413, "RequestEntityTooLarge",
                       f"the request body exceeds {MAX_BODY_BYTES} bytes") from None
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    raw_query = request.scope.get("query_string", b"").decode("latin-1")
    headers = {k.lower(): v for k, v in request.headers.items()}
    header_lists: dict[str, list[str]] = {}
    for k, v in request.headers.items():
        header_lists.setdefault(k.lower(), []).append(v)
    ak = verifier.verify(request.method, raw_path, raw_query, headers, header_lists, body)
    query = {k: (v or "") for k, v in parse_query(raw_query)}
    return ApiRequest(request.method.upper(), request.url.path, query, body, ak, request_id)
