"""The ingress access log, one entry per request, as ACK ships it to the SLS ``nginx-ingress`` logstore.

ACK's ingress-nginx writes each request with its own ``log-format-upstream`` (ACK "Analyze and monitor the access
log of nginx-ingress"; the SLS field list: SLS "Kubernetes Nginx Ingress access log fields") and Logtail ships the
lines to the cluster's ``k8s-log-{cluster id}`` project. The fields kept here are the ones that format has and the
SLS ingress dashboards and alibaba-cloud-metrics-adapter query:

====================================  ==========================================================================
``__time__``                          the request's time (Unix seconds), the log time SLS filters ``from``/``to`` on
``proxy_upstream_name``               the location's (main) upstream, ``{namespace}-{service}-{port}``
``proxy_alternative_upstream_name``   the canary upstream that served the request (empty otherwise):
                                      ``balancer.lua`` sets ``ngx.var.proxy_alternative_upstream_name`` only when
                                      it routes to the alternative backend; ``proxy_upstream_name`` stays the main
``status``                            the status sent to the client (``$status``)
``request_time``                      seconds from the first byte read to the last byte sent (``$request_time``)
``upstream_response_time``            seconds spent waiting on the upstream (``$upstream_response_time``); ``-``
                                      when no upstream was reached (a 503 without endpoints)
``upstream_status``                   the upstream's status (``$upstream_status``), ``-`` as above
``request_length``                    bytes of the request line, headers and body (``$request_length``)
``http_user_agent``                   the ``User-Agent`` header, ``-`` when absent (nginx's rendering of an empty
                                      variable in a log format)
``host``                              the ``Host`` header without port (``$host``)
``method``                            ``$request_method``
``url``                               the path (``$uri``); ``request_uri`` adds the query string
``remote_addr``                       the TCP peer
====================================  ==========================================================================

**Cost on the data plane.** :meth:`RequestLog.append` appends one tuple of values the proxy already has (bytes as
received) to a bounded ``deque``; nothing is decoded or formatted per request. :meth:`RequestLog.entries`
renders the dicts when SLS is queried, off the hot path.

**Memory.** At most ``capacity`` entries (the oldest drop first): 300-400 bytes each (measured with tracemalloc),
so the default 200,000 is 60-80 MB and covers a minute at 3,000 requests/s (the sandbox's ingress tops out near
that on 2 cores, bench/ingress.py); option ``options["sls"]["log_capacity"]``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

DEFAULT_CAPACITY = 200_000
# (time, upstream, alternative, status, request_time, upstream_time | None, upstream_status | None,
#  request_length, user_agent bytes, host bytes, method, path, query_string bytes, remote addr)
Entry = tuple[float, str, str, int, float, "float | None", "int | None", int, bytes, bytes, str, str, bytes, str]


class RequestLog:
    """A bounded ring of access-log entries, appended by the ingress data plane (its event loop)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.ring: deque[Entry] = deque(maxlen=capacity)
        self.append = self.ring.append  # the data plane's one call per request

    def snapshot(self) -> list[Entry]:
        """A copy of the ring (appends from the event loop may run concurrently in another thread: retry)."""
        while True:
            try:
                return list(self.ring)
            except RuntimeError:  # deque mutated during iteration
                continue

    def entries(self, start: float, end: float) -> Iterator[dict[str, Any]]:
        """The entries with ``start <= __time__ < end``, as SLS stores them (numbers as numbers)."""
        for e in self.snapshot():
            if not start <= e[0] < end:
                continue
            t, up, alt, status, rt, urt, ust, length, ua, host, method, path, qs, remote = e
            uri = path + ("?" + qs.decode("latin-1") if qs else "")
            yield {"__time__": int(t), "proxy_upstream_name": up, "proxy_alternative_upstream_name": alt,
                   "status": status, "request_time": round(rt, 3),
                   "upstream_response_time": "-" if urt is None else round(urt, 3),
                   "upstream_status": "-" if ust is None else ust, "request_length": length,
                   "http_user_agent": ua.decode("latin-1") or "-",
                   "host": host.split(b":", 1)[0].decode("latin-1").lower(), "method": method, "url": path,
                   "request_uri": uri, "remote_addr": remote}
