"""What the SLS ``nginx-ingress`` logstore would hold, kept in memory: per-route request counts and latencies.

ACK's ingress controller ships one access-log line per request to SLS with ``proxy_upstream_name``
(``{namespace}-{service}-{port}``), ``proxy_alternative_upstream_name`` (the canary that served it, if one did),
``status``, ``request_time`` (seconds) and ``request_length`` (bytes); the metrics adapter queries them
(``count(1)``, ``avg(request_time)``, ``approx_percentile(request_time, q)``, ``sum(request_length)``) by
``proxy_upstream_name`` only, so a request served by a canary counts on the *main* route there, as on ACK.
The log is kept both ways: :meth:`AccessLog.window` by ``proxy_upstream_name`` (what the adapter reads) and by
``proxy_alternative_upstream_name`` (``field=ALTERNATIVE``: what a query on that field would give), each with the
number of 5xx answers (``status >= 500``).
Here each route keeps a ring of per-second buckets (real time: traffic is real time) with the count, the latency
sum, the bytes in, and a log-scale latency histogram (bins 5% wide, so percentiles are approximate like SLS's
``approx_percentile``).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

UPSTREAM = "proxy_upstream_name"
ALTERNATIVE = "proxy_alternative_upstream_name"
RING_SECONDS = 3600  # how far back a query can look (real seconds)
_BIN_SCALE = 1.0 / math.log(1.05)  # histogram bins: 5% wide, in ms
_MIN_MS = 0.001


def _bin(ms: float) -> int:
    return int(math.log(max(ms, _MIN_MS) / _MIN_MS) * _BIN_SCALE)


def _bin_value(b: int) -> float:
    """The middle of a bin, in ms."""
    return _MIN_MS * math.exp((b + 0.5) / _BIN_SCALE)


@dataclass
class Window:
    """Aggregates over a time window."""

    seconds: int
    count: int = 0
    latency_sum: float = 0.0  # seconds
    bytes_in: int = 0
    errors: int = 0  # answers with status >= 500
    hist: dict[int, int] = field(default_factory=dict)

    def percentile_ms(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return _bin_value(b)
        return _bin_value(max(self.hist))

    def avg_ms(self) -> float | None:
        return (self.latency_sum / self.count) * 1000.0 if self.count else None


class RouteStats:
    __slots__ = ("secs", "counts", "lat", "bytes", "errs", "hists", "total")

    def __init__(self) -> None:
        self.secs = [-1] * RING_SECONDS
        self.counts = [0] * RING_SECONDS
        self.lat = [0.0] * RING_SECONDS
        self.bytes = [0] * RING_SECONDS
        self.errs = [0] * RING_SECONDS
        self.hists: list[dict[int, int] | None] = [None] * RING_SECONDS
        self.total = 0

    def record(self, now: float, latency: float, request_length: int, status: int = 200) -> None:
        s = int(now)
        i = s % RING_SECONDS
        if self.secs[i] != s:
            self.secs[i] = s
            self.counts[i] = 0
            self.lat[i] = 0.0
            self.bytes[i] = 0
            self.errs[i] = 0
            self.hists[i] = {}
        self.counts[i] += 1
        if status >= 500:
            self.errs[i] += 1
        self.lat[i] += latency
        self.bytes[i] += request_length
        h = self.hists[i]
        b = _bin(latency * 1000.0)
        h[b] = h.get(b, 0) + 1  # type: ignore[index]
        self.total += 1

    def window(self, end: int, seconds: int) -> Window:
        """Aggregate the complete seconds ``[end - seconds, end)``."""
        w = Window(seconds=seconds)
        for s in range(end - seconds, end):
            i = s % RING_SECONDS
            if self.secs[i] != s:
                continue
            w.count += self.counts[i]
            w.latency_sum += self.lat[i]
            w.bytes_in += self.bytes[i]
            w.errors += self.errs[i]
            for b, n in (self.hists[i] or {}).items():
                w.hist[b] = w.hist.get(b, 0) + n
        return w


class AccessLog:
    """Per-route stats, keyed by ``proxy_upstream_name`` and by ``proxy_alternative_upstream_name``.

    Written from the event loop, read from anywhere."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}
        self.alternatives: dict[str, RouteStats] = {}
        self.lock = threading.Lock()

    def record(self, route: str, latency: float, request_length: int, now: float | None = None, *,
               status: int = 200, alternative: str = "") -> None:
        t = time.time() if now is None else now
        for table, key in ((self.routes, route), (self.alternatives, alternative)):
            if not key:
                continue
            rs = table.get(key)
            if rs is None:
                rs = table.setdefault(key, RouteStats())
            rs.record(t, latency, request_length, status)

    def _table(self, field_name: str) -> dict[str, RouteStats]:
        if field_name == UPSTREAM:
            return self.routes
        if field_name == ALTERNATIVE:
            return self.alternatives
        raise ValueError(f"unknown access-log field {field_name!r}")

    def window(self, route: str, seconds: int, now: float | None = None, field_name: str = UPSTREAM) -> Window:
        """The last ``seconds`` complete seconds of ``route`` (``*``: every route, as the adapter's empty route)."""
        table = self._table(field_name)
        end = int(time.time() if now is None else now)
        if route == "*":
            total = Window(seconds=seconds)
            for rs in list(table.values()):
                w = rs.window(end, seconds)
                total.count += w.count
                total.latency_sum += w.latency_sum
                total.bytes_in += w.bytes_in
                total.errors += w.errors
                for b, n in w.hist.items():
                    total.hist[b] = total.hist.get(b, 0) + n
            return total
        rs = table.get(route)
        return rs.window(end, seconds) if rs else Window(seconds=seconds)

    def total(self, route: str, field_name: str = UPSTREAM) -> int:
        rs = self._table(field_name).get(route)
        return rs.total if rs else 0
