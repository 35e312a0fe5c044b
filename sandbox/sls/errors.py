"""SLS error responses: ``{"errorCode": ..., "errorMessage": ...}`` with the HTTP status SLS uses for the code.

Codes and messages from SLS "Error codes" (the common error codes table) and the GetLogs API reference:
``SignatureNotMatch`` (401), ``Unauthorized`` (401), ``RequestTimeExpired`` (400, more than 15 minutes off),
``InvalidRequestTime`` (400), ``ParameterInvalid`` (400: a query SLS cannot run, a bad parameter),
``PostBodyInvalid`` (400), ``ProjectNotExist`` / ``LogStoreNotExist`` (404), ``InternalServerError`` (500),
``ServerBusy`` (503). Every response carries ``x-log-requestid``, which the SDK reads into ``LogException``.
"""

from __future__ import annotations

import secrets

import orjson


class SlsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def new_request_id() -> str:
    return secrets.token_hex(12).upper()


def render(err: SlsError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps({"errorCode": err.code, "errorMessage": err.message})
    return err.status, [(b"content-type", b"application/json"), (b"x-log-requestid", request_id.encode()),
                        (b"server", b"nginx")], body


def injected(kind: str, status: int) -> SlsError:
    """What a fault injected into SLS looks like: 503 ServerBusy when throttled, else 500 InternalServerError
    (502/504 keep their status with the same code; the SDK retries every 5xx)."""
    if kind == "throttle":
        return SlsError(503, "ServerBusy", "The server is busy, please try again later.")
    return SlsError(status, "InternalServerError", "Specified Server Error Message.")
