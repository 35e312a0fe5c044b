"""The OSS wire format: where the bucket and key are in a request, query parameters, dates, ranges, ids.

- Path style ``http://127.0.0.1:PORT/bucket/key`` is what oss2 builds for IP endpoints (oss2 ``api.py``
  ``_determine_endpoint_type``/``_UrlMaker``: the key is percent-quoted with ``safe=''``, so ``/`` arrives as
  ``%2F`` or ``/``; both mean the same key). A ``Host`` of the form ``bucket.<sandbox host>:PORT`` is also understood
  (virtual-host style); the signature's resource is ``/bucket/key`` either way.
- Query strings are decoded the way ``requests`` encodes oss2's ``params`` (form encoding, blank values kept:
  ``?uploads=`` and ``?uploads`` are the same sub-resource).
- Dates: ``Last-Modified``/``Date`` headers in RFC 1123 GMT; list documents use ``YYYY-MM-DDTHH:MM:SS.000Z``
  (oss2 ``utils.iso8601_to_unixtime`` expects exactly that shape).
- Range: OSS's documented behaviour ("How to obtain OSS resources by segmenting HTTP Range requests"): a valid
  single range gives 206 with ``Content-Range``; an invalid or out-of-range one is *ignored* (200, whole object);
  with ``x-oss-range-behavior: standard`` an end past the object is clamped and a start past it is 416
  ``InvalidRange``. Several ranges: only the first counts.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from starlette.datastructures import Headers

from .errors import OssError


def new_request_id() -> str:
    """24 upper-case hex characters, the shape of real ``x-oss-request-id`` values."""
    return secrets.token_hex(12).upper()


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def parse_http_date(value: str) -> float | None:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def url_encode(value: str) -> str:
    """``encoding-type=url`` encoding of keys and prefixes in list documents (decoded by oss2 with ``unquote``)."""
    return quote(value, safe="/")


@dataclass
class OssRequest:
    method: str
    bucket: str
    key: str
    params: dict[str, str]
    params_list: list[tuple[str, str]]
    headers: Headers
    host: str
    extra: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.params

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


def parse_request(scope: dict, sandbox_host: str) -> OssRequest:
    headers = Headers(scope=scope)
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    path = raw_path.split(b"?", 1)[0]
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OssError("InvalidObjectName", "The object name is not valid UTF-8.") from exc
    query = scope.get("query_string", b"").decode("latin-1")
    try:
        params_list = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise OssError("InvalidArgument", "The query string is not valid UTF-8.") from exc
    params: dict[str, str] = {}
    for k, v in params_list:
        params.setdefault(k, v)
    host = headers.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    bucket = ""
    rest = decoded[1:] if decoded.startswith("/") else decoded
    suffix = "." + sandbox_host
    if hostname.endswith(suffix) and len(hostname) > len(suffix):
        bucket, key = hostname[: -len(suffix)], rest
    elif "/" in rest:
        bucket, key = rest.split("/", 1)
    else:
        bucket, key = rest, ""
    return OssRequest(
        method=scope["method"].upper(),
        bucket=bucket,
        key=key,
        params=params,
        params_list=params_list,
        headers=headers,
        host=host,
    )


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.ASCII)
_MAX_RANGE_DIGITS = 19  # beyond any object (48.8 TB); longer numbers are read as "past the end", never int()-ed


def _bound(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_RANGE_DIGITS else 10**_MAX_RANGE_DIGITS


def parse_range(header: str, size: int, standard: bool) -> tuple[int, int] | None:
    """The inclusive byte span to serve, or None for the whole object (200). May raise InvalidRange (416)."""
    if not header:
        return None
    first = header.split(",", 1)[0]
    m = _RANGE_RE.match(first)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    s, e = m.group(1), m.group(2)
    if s == "":  # suffix: the last N bytes
        n = _bound(e)
        if n == 0:
            if standard:
                raise OssError("InvalidRange", ActualObjectSize=str(size), RangeRequested=header)
            return None
        if n > size:
            return (0, size - 1) if standard and size > 0 else None
        return (size - n, size - 1)
    start = _bound(s)
    end = _bound(e) if e != "" else size - 1
    if start >= size:
        if standard:
            raise OssError("InvalidRange", ActualObjectSize=str(size), RangeRequested=header)
        return None
    if end < start:
        return None
    if end >= size:
        if not standard and e != "":
            return None
        end = size - 1
    return (start, end)
