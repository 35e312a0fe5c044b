"""A pooled HTTP/1.1 upstream client for the ingress data plane: asyncio protocols + httptools' response parser.

nginx keeps idle keep-alive connections to its upstreams (ingress-nginx ``upstream-keepalive-connections: 320``)
and buffers responses (``proxy_buffering``); this client does the same: one request at a time per connection,
LIFO idle pool per upstream address, whole response buffered. Timeouts follow ingress-nginx's defaults
(``proxy-connect-timeout: 5``, ``proxy-read-timeout: 60``). httpx was measured several times slower per request for
this job (see ``bench/ingress.py``); the HTTP parsing itself is httptools (uvicorn's parser), not hand-written.

Errors: :class:`ConnectFailed` (nothing was sent: the caller may try the next endpoint, like
``proxy_next_upstream error``), :class:`UpstreamTimeout` (504), :class:`UpstreamBroken` (502: the upstream closed
or sent garbage after the request went out).
"""

from __future__ import annotations

import asyncio
import contextlib

import httptools

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
MAX_IDLE_PER_UPSTREAM = 320


class UpstreamError(Exception):
    pass


class ConnectFailed(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamBroken(UpstreamError):
    def __init__(self, msg: str, received: bool) -> None:
        super().__init__(msg)
        self.received = received  # any response byte arrived (if not, a reused connection was just stale)


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Conn(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.fut: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.received = False
        self.headers_done = False
        self.head_only = False
        self.keep_alive = True
        self.delimited = False  # body length known (content-length or chunked)

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken("upgrade responses are not proxied", True))
        except httptools.HttpParserError as e:
            self._fail(UpstreamBroken(f"upstream sent an invalid response: {e}", True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self.fut
        if fut is None or fut.done():
            return
        if self.headers_done and not self.delimited:
            # body delimited by connection close
            fut.set_result(Response(self.status, self.headers, b"".join(self.body)))
        else:
            fut.set_exception(UpstreamBroken("upstream prematurely closed connection while reading response header "
                                             "from upstream", self.received))

    # ---- httptools callbacks ---------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.delimited = True
        if self.head_only:
            # a HEAD response has no body whatever its Content-Length says: finish here, never reuse the connection
            self.keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self._finish()

    # ---- helpers ---------------------------------------------------------------------------------------------------
    def _finish(self) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(Response(self.status, self.headers, b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 max_idle: int = MAX_IDLE_PER_UPSTREAM) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Conn(self, key), key[0], key[1])
        except TimeoutError as e:
            raise ConnectFailed(f"upstream timed out (110: Connection timed out) while connecting to {key}") from e
        except OSError as e:
            raise ConnectFailed(f"connect() failed ({e.errno}: {e.strerror}) while connecting to upstream") from e
        return conn

    def _checkout(self, key: tuple[str, int]) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _checkin(self, conn: _Conn) -> None:
        if conn.closed or not conn.keep_alive:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        idle.append(conn)

    async def request(self, host: str, port: int, head: bytes, body: bytes, head_only: bool = False) -> Response:
        """Send ``head`` (request line + headers + CRLF) and ``body``; return the buffered response."""
        key = (host, port)
        conn = self._checkout(key)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(key)
        try:
            return await self._exchange(conn, head, body, head_only)
        except UpstreamBroken as e:
            if reused and not e.received:
                # a stale keep-alive connection closed by the upstream before our request: retry once, fresh
                conn = await self._connect(key)
                return await self._exchange(conn, head, body, head_only)
            raise

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes, head_only: bool) -> Response:
        loop = asyncio.get_running_loop()
        conn._reset()
        conn.head_only = head_only
        fut = conn.fut = loop.create_future()
        assert conn.transport is not None
        if body:
            conn.transport.writelines((head, body))
        else:
            conn.transport.write(head)
        timer = loop.call_later(self.read_timeout, _expire, fut)
        try:
            resp = await fut
        except BaseException:
            conn.close()
            raise
        finally:
            timer.cancel()
            conn.fut = None
        self._checkin(conn)
        return resp

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.close()
        self._idle.clear()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(UpstreamTimeout("upstream timed out (110: Connection timed out) while reading response "
                                          "header from upstream"))
