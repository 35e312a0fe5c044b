"""What an OSS request is, by name, and the errors a fault injected into it answers with (:mod:`sandbox.faults`).

Operation names are those of the OSS API reference (``PutObject``, ``UploadPart``, ``ListObjectsV2`` ...), read
from the path-style URL (``/bucket/key``), the query's sub-resources and the copy-source header.

Injected errors, as OSS answers them: throttled -> 429 ``QpsLimitExceeded`` "Please reduce your request rate."
(OSS "HTTP status code 429" page); 5xx -> 500 ``InternalError`` / 502 ``BadGateway`` / 503 ``ServiceUnavailable``
("Thread pool is almost full, please retry later", OSS "HTTP status code 503" page) / 504 ``GatewayTimeout``, as the
XML ``<Error>`` document with ``x-oss-request-id`` (HEAD: no body, the document base64 in ``x-oss-err``).
"""

from __future__ import annotations

import base64
import uuid

from .errors import OssError, render_error

_THROTTLED = ("QpsLimitExceeded", "Please reduce your request rate.")
_5XX = {500: ("InternalError", "We encountered an internal error. Please try again."),
        502: ("BadGateway", "The server received an invalid response from the upstream server."),
        503: ("ServiceUnavailable", "Thread pool is almost full, please retry later"),
        504: ("GatewayTimeout", "The server did not receive a timely response from the upstream server.")}


def operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    parts = [x for x in path.split("/") if x]
    q = set(query)
    if not parts:
        return "ListBuckets"
    if len(parts) == 1:  # bucket
        if method == "PUT":
            return "PutBucket"
        if method == "DELETE":
            return "DeleteBucket"
        if method == "POST" and "delete" in q:
            return "DeleteMultipleObjects"
        if method == "GET" and "bucketInfo" in q:
            return "GetBucketInfo"
        if method == "GET" and "uploads" in q:
            return "ListMultipartUploads"
        if method == "GET":
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return f"{method} bucket"
    if method == "PUT" and "partNumber" in q and "uploadId" in q:
        return "UploadPartCopy" if "x-oss-copy-source" in headers else "UploadPart"
    if method == "PUT":
        return "CopyObject" if "x-oss-copy-source" in headers else "PutObject"
    if method == "POST" and "uploads" in q:
        return "InitiateMultipartUpload"
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload"
    if method == "POST" and "append" in q:
        return "AppendObject"
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload"
    if method == "GET" and "uploadId" in q:
        return "ListParts"
    if method == "HEAD":
        return "GetObjectMeta" if "objectMeta" in q else "HeadObject"
    if method == "GET":
        return "GetObject"
    if method == "DELETE":
        return "DeleteObject"
    return f"{method} object"


def injected_error(kind: str, status: int, method: str, host: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of an injected fault: ``kind`` ``throttle`` or ``error`` (``status`` 500..504)."""
    rid = uuid.uuid4().hex[:24].upper()
    code, msg = _THROTTLED if kind == "throttle" else _5XX[status]
    st = 429 if kind == "throttle" else status
    body = render_error(OssError(code, msg, status=st), rid, host)
    headers = [(b"x-oss-request-id", rid.encode()), (b"server", b"AliyunOSS")]
    if method == "HEAD":
        headers.append((b"x-oss-err", base64.b64encode(body)))
        return st, headers, b""
    headers.append((b"content-type", b"application/xml"))
    return st, headers, body
