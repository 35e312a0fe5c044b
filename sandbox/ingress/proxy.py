"""The data plane: a raw ASGI app (served by uvicorn + httptools) proxying to the ready endpoints of a route.

nginx semantics followed (ingress-nginx defaults, ``nginx.tmpl``):

- no Ingress rule matches the Host and path -> the default backend's ``404``;
- a rule matches but its Service has no ready endpoints -> ``503 Service Temporarily Unavailable``;
- round robin over the endpoints; a connection error moves to the next endpoint (``proxy_next_upstream error
  timeout``, ``proxy_next_upstream_tries 3``); when every try failed -> ``502 Bad Gateway``; a response that does
  not come within ``proxy-read-timeout`` -> ``504 Gateway Time-out``; an upstream that breaks the response -> 502;
- request headers with a name nginx finds invalid (anything but letters, digits and ``-``) are dropped, as
  ``ignore_invalid_headers on`` does (:func:`.canary.valid_header_name`): neither forwarded nor seen by the canary
  rules;
- request headers as ``nginx.tmpl`` sets them: ``Host`` kept, ``X-Request-ID``, ``X-Real-IP``,
  ``X-Forwarded-For``/``-Host``/``-Port``/``-Proto``/``-Scheme``, ``X-Scheme``; hop-by-hop headers dropped; the
  upstream's ``Server`` and ``Date`` hidden (``proxy_hide_header`` defaults);
- every request that matched a route is logged for SLS under its ``proxy_upstream_name`` with ``request_time``
  (first byte in to last byte out), ``request_length`` and ``status``;
- canaries: the location's upstream may hand the request to its first alternative (canary) upstream
  (:meth:`.routes.Backend.choose`, ``balancer.lua`` ``get_balancer``). As in ingress-nginx, ``$proxy_upstream_name``
  stays the location's (main) upstream and ``$proxy_alternative_upstream_name`` names the canary that served the
  request (empty otherwise): ``nginx.tmpl`` sets the former per location, ``balancer.lua`` only the latter. ACK's
  SLS ingress log has both fields (SLS "Kubernetes Nginx Ingress access log fields", help.aliyun.com/zh/sls/
  log-fields-20: ``proxy_alternative_upstream_name`` "when present, proxy_upstream_name can usually be ignored").
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .canary import valid_header_name
from .upstream import ConnectFailed, UpstreamBroken, UpstreamTimeout

if TYPE_CHECKING:
    from .service import IngressService

_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
        b"host", b"content-length", b"x-request-id", b"x-real-ip", b"x-forwarded-for", b"x-forwarded-host",
        b"x-forwarded-port", b"x-forwarded-proto", b"x-forwarded-scheme", b"x-scheme"}
_HIDE = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection",
         b"content-length", b"server", b"date"}
_REASONS = {404: "Not Found", 413: "Request Entity Too Large", 502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
MAX_TRIES = 3
# nginx's client_max_body_size defaults to 1m (ngx_http_core_module), and so does ingress-nginx's proxy-body-size
# (ConfigMap key and nginx.ingress.kubernetes.io/proxy-body-size annotation, default "1m"): a bigger request body
# is answered 413 without reaching the upstream.
MAX_BODY_BYTES = 1024 * 1024


def _error_page(code: int) -> bytes:
    title = f"{code} {_REASONS[code]}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            f"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode()


_PAGES = {code: _error_page(code) for code in _REASONS}


class IngressProxy:
    def __init__(self, service: IngressService) -> None:
        self.svc = service
        self.port = b"80"

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        host = ua = b""
        for k, v in scope["headers"]:
            if k == b"host":
                host = v
            elif k == b"user-agent":
                ua = v
        hostname = host.split(b":", 1)[0].decode("latin-1").lower()
        backend = self.svc.table.match(hostname, scope["path"])
        if backend is None:
            await self._page(send, 404)
            return

        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await self._page(send, 413)
            return
        chunks, size = [], 0
        more = True
        while more:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await self._page(send, 413)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)

        chosen = backend.choose(scope["headers"])
        upstream: list = []  # [upstream_response_time, upstream_status] once an upstream answered
        status = await self._proxy(scope, send, chosen, host, body, upstream)
        req_len = len(body) + sum(len(k) + len(v) + 4 for k, v in scope["headers"]) + len(scope.get("raw_path") or b"")
        elapsed = time.perf_counter() - t0
        alternative = chosen.upstream if chosen is not backend else ""
        self.svc.log.record(backend.upstream, elapsed, req_len, status=status, alternative=alternative)
        self.svc.requests.append((time.time(), backend.upstream, alternative, status, elapsed,  # .requestlog
                                  upstream[0] if upstream else None, upstream[1] if upstream else None, req_len,
                                  ua, host, scope["method"], scope["path"], scope.get("query_string") or b"",
                                  (scope.get("client") or ("", 0))[0]))

    async def _proxy(self, scope, send, backend, host: bytes, body: bytes, upstream: list) -> int:
        eps = backend.endpoints
        if not eps:
            return await self._page(send, 503)
        method = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        client = (scope.get("client") or ("", 0))[0].encode()
        xff = client
        lines = [f"{method} ".encode() + target + b" HTTP/1.1", b"host: " + host]
        for k, v in scope["headers"]:
            if k in _HOP:
                if k == b"x-forwarded-for":
                    xff = v + b", " + client
                continue
            if valid_header_name(k):
                lines.append(k + b": " + v)
        scheme = scope.get("scheme", "http").encode()
        lines += [b"x-request-id: " + os.urandom(16).hex().encode(), b"x-real-ip: " + client,
                  b"x-forwarded-for: " + xff, b"x-forwarded-host: " + host, b"x-forwarded-port: " + self.port,
                  b"x-forwarded-proto: " + scheme, b"x-forwarded-scheme: " + scheme, b"x-scheme: " + scheme]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: " + str(len(body)).encode())
        head = b"\r\n".join(lines) + b"\r\n\r\n"

        n = len(eps)
        start = backend.rr
        backend.rr = (start + 1) % n
        resolve = self.svc.resolve
        pool = self.svc.pool
        for i in range(min(n, MAX_TRIES)):
            ip, port = eps[(start + i) % n]
            addr = resolve(ip, port)
            if addr is None:
                continue  # not reachable from here: like a connect() failure
            t_up = time.perf_counter()
            try:
                resp = await pool.request(addr[0], addr[1], head, body, head_only=method == "HEAD")
            except ConnectFailed:
                continue
            except UpstreamTimeout:
                return await self._page(send, 504)
            except UpstreamBroken:
                return await self._page(send, 502)
            upstream += (time.perf_counter() - t_up, resp.status)
            headers = [(k, v) for k, v in resp.headers if k.lower() not in _HIDE]
            if method != "HEAD" or not any(k.lower() == b"content-length" for k, _ in resp.headers):
                headers.append((b"content-length", str(len(resp.body)).encode()))
            else:
                headers += [(k, v) for k, v in resp.headers if k.lower() == b"content-length"]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": resp.body})
            return resp.status
        return await self._page(send, 502)

    @staticmethod
    async def _page(send, code: int) -> int:
        page = _PAGES[code]
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(page)).encode())]})
        await send({"type": "http.response.body", "body": page})
        return code
