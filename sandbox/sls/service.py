"""The sandbox's SLS endpoint (``name = "sls"``: ``sandbox.json`` gets ``sls_endpoint``): GetLogs over the ingress
access log, for ``aliyun-log-python-sdk`` unchanged.

One project, ``k8s-log-{cluster id}`` (the project ACK creates for a cluster's logs), with one logstore,
``nginx-ingress`` (ACK's ingress access log), holding :class:`sandbox.ingress.requestlog.RequestLog`.

Wire protocol, as the SDK sends it (``aliyun/log/logclient.py`` ``LogClient._send`` / ``get_log``):

- the project is the first label of ``Host`` (``{project}.{endpoint host}``; to an IP endpoint the SDK connects to
  the IP and still sends ``Host: {project}.{ip}``);
- GetLogs, the SDK's default (``_get_logs_v2_enabled``): ``POST /logstores/{logstore}/logs`` with a JSON body
  (``from``, ``to``, ``line``, ``offset``, ``reverse``, ``query``, ``powerSql``, ...), answered
  ``{"meta": {"progress": "Complete", "count", "processedRows", "hasSQL", "whereQuery", "aggQuery", "keys", ...},
  "data": [...]}``, compressed with LZ4 block when ``Accept-Encoding: lz4`` (``x-log-compresstype``,
  ``x-log-bodyrawsize``), as ``Compressor.decompress_response`` reads it;
- GetLogs v1: ``GET /logstores/{logstore}?type=log&from=&to=&query=&line=&offset=&reverse=`` answered with the
  JSON array of rows and the meta in ``x-log-progress``, ``x-log-count``, ``x-log-processed-rows``,
  ``x-log-has-sql``, ``x-log-where-query``, ``x-log-agg-query``, ``x-log-elapsed-millisecond``;
- every request signed (:mod:`.auth`); errors as :mod:`.errors`; ``from``/``to`` are Unix seconds, ``from``
  inclusive and ``to`` exclusive.

**Shipping lag.** An entry becomes queryable ``lag_seconds`` (real seconds; default 3) after its request: SLS
GetLogs API reference, "Real-time data becomes queryable in about 3 seconds" (the log's time within (-180 s,
900 s] of the server's). Option ``sandbox up`` ``options["sls"]["lag_seconds"]``.

Faults: a :class:`sandbox.faults.FaultTarget` named ``sls`` (operation ``GetLogs``); the in-process query the
metrics adapter makes (:meth:`SlsService.adapter_query_fault`) draws from the same configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import lz4.block
import orjson
import uvicorn

from ..faults import wrap_app
from ..listen import listen_socket
from ..service import Service
from . import query as q
from .auth import authenticate
from .errors import SlsError, injected, new_request_id, render

if TYPE_CHECKING:
    from ..context import SandboxContext
    from ..faults import FaultEngine
    from ..ingress.service import IngressService

log = logging.getLogger("sandbox.sls")

LOGSTORE = "nginx-ingress"
DEFAULT_LAG_SECONDS = 3.0
MAX_LINES = 100  # GetLogs "line": 0..100
MAX_BODY = 1 << 20


class SlsService(Service):
    name = "sls"

    def __init__(self, ctx: SandboxContext, ingress: IngressService, faults: FaultEngine) -> None:
        super().__init__(ctx)
        self.ingress = ingress
        self.faults = faults
        opts = ctx.options.get("sls") or {}
        self.logstore = str(opts.get("logstore", LOGSTORE))
        self.lag = float(opts.get("lag_seconds", DEFAULT_LAG_SECONDS))
        self.endpoint = ""
        self._server: uvicorn.Server | None = None
        self._serve: asyncio.Task | None = None

    @property
    def project(self) -> str:
        return f"k8s-log-{self.ctx.identity.cluster_id}"

    # ---- the listener ----------------------------------------------------------------------------------------------
    # The SDK names the project in the Host header, and connects to ``{project}.{endpoint}`` unless the endpoint is
    # a bare IPv4 address (``Util.is_row_ip(endpoint)``: no scheme, no port), which it reaches on port 80 with
    # ``Host: {project}.{ip}``. Nothing resolves ``{project}.127.0.0.1``, so the sandbox's endpoint is such an IP:
    # a loopback address of its own (127.x.y.z, all of 127/8 is loopback on Linux) on port 80, kept across
    # restarts. Where port 80 cannot be bound (no CAP_NET_BIND_SERVICE), it listens on a free port of the
    # sandbox's host instead, which the SDK can reach only through a name that resolves ``{project}.`` prefixes.
    def _bind(self) -> socket.socket:
        store = self.ctx.store
        if self.ctx.host == "127.0.0.1" and not (self.ctx.options.get("sls") or {}).get("port"):
            for attempt in range(8):
                ip = store.get_meta("sls_ip") if attempt == 0 else None
                ip = ip or "127." + ".".join(str(secrets.randbelow(250) + 2) for _ in range(3))
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    sock.bind((ip, 80))
                except PermissionError:
                    sock.close()
                    log.warning("sandbox sls: port 80 not permitted; listening on a free port of %s (the SDK "
                                "needs a name resolving {project}.<host> to reach it)", self.ctx.host)
                    break
                except OSError:
                    sock.close()
                    continue
                store.set_meta("sls_ip", ip)
                self.endpoint = ip
                return sock
        sock = listen_socket(store, self.ctx.host, self.name, int((self.ctx.options.get("sls") or {})
                                                                  .get("port", 0)))
        self.endpoint = f"http://{self.ctx.host}:{sock.getsockname()[1]}"
        return sock

    async def start(self) -> None:
        sock = self._bind()
        self.ctx.endpoints[self.name] = self.endpoint
        config = uvicorn.Config(wrap_app(self._asgi, self, self.faults), log_level="warning", access_log=False,
                                lifespan="off", timeout_keep_alive=75, server_header=False)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._serve = asyncio.create_task(self._server.serve(sockets=[sock]), name="sls-http")
        while not self._server.started:
            if self._serve.done():
                self._serve.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serve, 10)  # type: ignore[arg-type]

    def info(self) -> dict[str, Any]:
        return {"sls_endpoint": self.endpoint, "sls_project": self.project, "sls_logstore": self.logstore}

    # ---- faults (sandbox.faults.FaultTarget) -------------------------------------------------------------------
    def fault_operation(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        return "GetLogs" if path.startswith("/logstores/") else f"{method} {path}"

    def fault_error(self, kind: str, status: int, method: str, host: str) -> tuple[int, list, bytes]:
        return render(injected(kind, status), new_request_id())

    def adapter_query_fault(self) -> SlsError | None:
        """The error the metrics adapter's GetLogs gets now, if the faults say it fails (else None)."""
        if not self.faults.active(self.name):
            return None
        d = self.faults.decide(self.name, "POST", f"/logstores/{self.logstore}/logs", "GetLogs")
        return None if d.kind == "pass" else injected(d.kind, d.status)

    # ---- the query -------------------------------------------------------------------------------------------------
    def get_logs(self, project: str, logstore: str, start: int, end: int, query: str, line: int = 100,
                 offset: int = 0, reverse: bool = False, now: float | None = None) -> dict[str, Any]:
        """GetLogs: ``{"meta": ..., "data": [...]}``; raises :class:`SlsError` as SLS answers."""
        t0 = time.perf_counter()
        if project != self.project:
            raise SlsError(404, "ProjectNotExist", f"The Project does not exist : {project}")
        if logstore != self.logstore:
            raise SlsError(404, "LogStoreNotExist", f"logstore {logstore} does not exist")
        if not 0 <= line <= MAX_LINES:
            raise SlsError(400, "ParameterInvalid", f"line must be in [0, {MAX_LINES}]: {line}")
        if offset < 0:
            raise SlsError(400, "ParameterInvalid", f"offset must not be negative: {offset}")
        if end <= start:
            raise SlsError(400, "ParameterInvalid", "to must be larger than from")
        try:
            parsed = q.parse(query or "*")
        except q.QueryError as e:
            raise SlsError(400, "ParameterInvalid", str(e)) from None
        visible_until = (time.time() if now is None else now) - self.lag
        logs = self.ingress.requests.entries(start, min(float(end), visible_until))
        try:
            rows, keys, processed = q.run(parsed, logs)
        except q.QueryError as e:
            raise SlsError(400, "ParameterInvalid", str(e)) from None
        if not parsed.has_sql:
            rows.sort(key=lambda r: int(r["__time__"]), reverse=reverse)
            rows = rows[offset:offset + line]
            for r in rows:
                r.setdefault("__source__", "")
        meta = {"progress": "Complete", "count": len(rows), "processedRows": processed,
                "elapsedMillisecond": int((time.perf_counter() - t0) * 1000), "hasSQL": parsed.has_sql,
                "whereQuery": parsed.where_query, "aggQuery": parsed.agg_query, "keys": keys,
                "isAccurate": True}
        return {"meta": meta, "data": rows}

    # ---- HTTP --------------------------------------------------------------------------------------------------------
    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        rid = new_request_id()
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if len(body) > MAX_BODY:
                status, headers, out = render(SlsError(400, "PostBodyTooLarge", "body size is too large"), rid)
                break
            if not msg.get("more_body"):
                try:
                    status, headers, out = self._handle(scope, body, rid)
                except SlsError as e:
                    status, headers, out = render(e, rid)
                except Exception:  # a sandbox bug: still SLS's error shape, and logged
                    log.exception("SLS request failed: %s %s", scope.get("method"), scope.get("path"))
                    status, headers, out = render(SlsError(500, "InternalServerError",
                                                           "Specified Server Error Message."), rid)
                break
        headers = [*headers, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def _handle(self, scope: dict, body: bytes, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        method = scope["method"].upper()
        path = scope["path"]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = parse_qsl(raw_query, keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authenticate(self.ctx.accounts, method, path, query, headers, body)
        host = headers.get("host", "").split(":", 1)[0]
        project = host.split(".", 1)[0] if host.count(".") > (3 if _is_ip_tail(host) else 0) else ""
        if not project:
            raise SlsError(400, "InvalidHost", f"Host header {host} is invalid.")
        seg = [s for s in path.split("/") if s]
        if len(seg) == 3 and seg[0] == "logstores" and seg[2] == "logs" and method == "POST":
            try:
                params = orjson.loads(body)
                if not isinstance(params, dict):
                    raise ValueError
            except ValueError:
                raise SlsError(400, "PostBodyInvalid", "The request body is not valid JSON object.") from None
            result = self.get_logs(project, seg[1], _int(params, "from"), _int(params, "to"),
                                   str(params.get("query") or ""), _int(params, "line", 100),
                                   _int(params, "offset", 0), bool(params.get("reverse")))
            raw = orjson.dumps(result)
            out = [(b"content-type", b"application/json"), (b"x-log-requestid", rid.encode())]
            if "lz4" in headers.get("accept-encoding", ""):
                out += [(b"x-log-compresstype", b"lz4"), (b"x-log-bodyrawsize", str(len(raw)).encode())]
                return 200, out, lz4.block.compress(raw, store_size=False)
            return 200, out, raw
        if len(seg) == 2 and seg[0] == "logstores" and method == "GET" and dict(query).get("type") == "log":
            p = dict(query)
            result = self.get_logs(project, seg[1], _int(p, "from"), _int(p, "to"), p.get("query", ""),
                                   _int(p, "line", 100), _int(p, "offset", 0), p.get("reverse") == "true")
            meta = result["meta"]
            out = [(b"content-type", b"application/json"), (b"x-log-requestid", rid.encode()),
                   (b"x-log-progress", b"Complete"), (b"x-log-count", str(meta["count"]).encode()),
                   (b"x-log-processed-rows", str(meta["processedRows"]).encode()),
                   (b"x-log-elapsed-millisecond", str(meta["elapsedMillisecond"]).encode()),
                   (b"x-log-has-sql", b"true" if meta["hasSQL"] else b"false"),
                   (b"x-log-where-query", _header_value(meta["whereQuery"])),
                   (b"x-log-agg-query", _header_value(meta["aggQuery"]))]
            return 200, out, orjson.dumps(result["data"])
        raise SlsError(404, "NotFound", f"{method} {path} is not supported by this endpoint")


def _header_value(text: str) -> bytes:
    return " ".join(text.splitlines()).encode("utf-8", "replace")


def _is_ip_tail(host: str) -> bool:
    parts = host.split(".")
    return len(parts) >= 4 and all(p.isdigit() for p in parts[-4:])


def _int(params: dict[str, Any], key: str, default: int | None = None) -> int:
    v = params.get(key, default)
    if v is None:
        raise SlsError(400, "ParameterInvalid", f"{key} is required")
    try:
        return int(v)
    except (TypeError, ValueError):
        raise SlsError(400, "ParameterInvalid", f"{key} must be an integer: {str(v)[:40]!r}") from None
