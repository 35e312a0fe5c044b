"""The sandbox's OSS endpoint: an ASGI app speaking the OSS REST API, plus an in-process API for other sandbox parts.

Wire side: :meth:`OssService.app` serves path-style requests (``http://127.0.0.1:PORT/bucket/key``) with V1/V2/V4
signatures verified (:mod:`.auth`), OSS XML errors (:mod:`.errors`), and every response carrying
``x-oss-request-id``, ``Server: AliyunOSS`` and ``Date``. Errors on HEAD requests have no body; the error document
travels base64-encoded in ``x-oss-err`` (what ``oss2.exceptions.make_exception`` reads).

In-process side (for the CSI mount controller, the pod runtime, tests): ``bucket_exists``, ``bucket_info``,
``object_info``, ``open_object``, ``list_keys`` and ``check_credentials``. They read the same state the wire
serves; they never write, so nothing a client could observe happens without going through the protocol.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..context import SandboxContext
from ..service import Service
from . import operations
from .auth import authenticate
from .errors import OssError, render_error
from .models import BucketInfo, ObjectInfo
from .routes import XML, Handlers
from .state import OssState
from .wire import http_date, new_request_id, parse_request

log = logging.getLogger("sandbox.oss")

_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]


class OssService(Service):
    name = "oss"

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        self.region = ctx.identity.region
        self.state = OssState(ctx.store, ctx.state_dir / "oss", self.region)
        # Hashing, disk writes and reads of object bodies run here, off the sandbox's event loop.
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="oss-io")
        self.endpoint = ""
        self.netloc = ""
        self.handlers = Handlers(self)

    # ---- Service hooks -------------------------------------------------------------------------------------------
    def on_bound(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.netloc = endpoint.split("://", 1)[1]

    def ssl_options(self) -> dict[str, Any]:
        # The runner passes these keyword arguments to uvicorn.Config. No TLS here (oss2 talks plain http to an IP
        # endpoint); we only turn off uvicorn's own ``server``/``date`` headers, since every OSS response sets
        # ``Server: AliyunOSS`` and ``Date`` itself and duplicates would be merged by clients.
        return {"server_header": False, "date_header": False}

    async def stop(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._endpoint, methods=_METHODS)])

    # ---- request handling ----------------------------------------------------------------------------------------
    async def _endpoint(self, request: Request) -> Response:
        started = time.monotonic()
        request_id = new_request_id()
        method = request.method.upper()
        try:
            req = parse_request(request.scope, self.ctx.host)
            principal = authenticate(req, self.ctx.accounts, self.region)
            response = await self.handlers.dispatch(req, principal, request)
        except OssError as err:
            response = self._error(err, request_id, method)
        except Exception:  # a bug: answer as OSS would (InternalError), and log it to be fixed
            log.exception("OSS request failed: %s %s", method, request.url.path)
            response = self._error(OssError("InternalError"), request_id, method)
        now = time.time()
        response.headers["x-oss-request-id"] = request_id
        response.headers["Server"] = "AliyunOSS"
        response.headers["Date"] = http_date(now)
        response.headers["x-oss-server-time"] = str(int((time.monotonic() - started) * 1000))
        return response

    def _error(self, err: OssError, request_id: str, method: str) -> Response:
        body = render_error(err, request_id, self.netloc)
        headers = {"x-oss-ec": err.extra["EC"]} if "EC" in err.extra else {}
        if method == "HEAD":
            headers["x-oss-err"] = base64.b64encode(body).decode("ascii")
            return Response(b"", status_code=err.status, headers=headers, media_type=XML)
        return Response(body, status_code=err.status, headers=headers, media_type=XML)

    def info(self) -> dict[str, Any]:
        return {}

    # ---- fault injection (sandbox.faults.FaultTarget) ------------------------------------------------------------
    def fault_operation(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        return operations.operation(method, path, query, headers)

    def fault_error(self, kind: str, status: int, method: str, host: str) -> tuple[int, list, bytes]:
        return operations.injected_error(kind, status, method, host)

    # ---- in-process API ------------------------------------------------------------------------------------------
    def bucket_exists(self, name: str) -> bool:
        """True when the bucket exists (the CSI mount's first check, before any object is read)."""
        return self.state.get_bucket(name) is not None

    def bucket_info(self, name: str) -> BucketInfo | None:
        return self.state.get_bucket(name)

    def object_info(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self.state.get_object(bucket, key)
        return None if found is None else found[0]

    def open_object(self, bucket: str, key: str) -> BinaryIO:
        """A binary file object on the object's current bytes (raises KeyError when bucket or key is missing).

        Object files are never modified in place: an overwrite writes a new file, so an open handle keeps reading
        one consistent version. The caller closes it.
        """
        found = self.state.get_object(bucket, key)
        if found is None:
            raise KeyError(f"oss://{bucket}/{key}")
        return open(found[1], "rb")  # noqa: SIM115 - returned to the caller

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix``, in OSS listing order (raises KeyError when the bucket is missing)."""
        if not self.bucket_exists(bucket):
            raise KeyError(f"oss://{bucket}")
        keys: list[str] = []
        after = ""
        while True:
            contents, _, truncated, last = self.state.list_objects(
                bucket, prefix=prefix, after=after, max_keys=1000
            )
            keys.extend(o.key for o in contents)
            if not truncated:
                return keys
            after = last

    def check_credentials(self, access_key_id: str, access_key_secret: str) -> bool:
        """Whether an AccessKey pair would authenticate (what a CSI mount with a node-publish Secret needs)."""
        secret = self.ctx.accounts.secret_for(access_key_id)
        return secret is not None and hmac.compare_digest(secret, access_key_secret)
