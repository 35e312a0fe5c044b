"""A route is retired only once SLS says it is quiet: no request logged on it for :data:`QUIET_S` seconds.

After the main Ingress moves to the new release, ingress-nginx keeps sending to the previous release's route until
its next sync applies the change (a rate-limited queue, then a reload or a dynamic reconfiguration), and a client
may still reach the previous Service some other way (another Ingress on the same Service shares its upstream name,
``<namespace>-<service>-<port>``). Scaling the previous release to zero while its route carries requests turns them
into 503s. So the previous release is retired only when ACK's ingress access log in SLS shows no request on its
route (``proxy_upstream_name``) over a whole window that began after the switch; the window's end is
:data:`~tasks.rollout.analysis.SLS_LAG_S` in the past, since logs become queryable only after the shipping lag.

A route that is still busy, or an SLS that stays unreadable, after :data:`WAIT_S` is an error: the previous
release is then kept at its replicas (the rollout reports "promoted, retire failed" with what is left), never
scaled to zero blind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from clients.logs import run_logger
from clients.sls import SlsReader, read_with_retries, route_requests_query
from tasks.rollout.analysis import SLS_ATTEMPTS, SLS_LAG_S

QUIET_S = 10  # seconds without a request on the route: several of ingress-nginx's syncs and one reload
WAIT_S = 120  # how long, after the first window could end, the route may stay busy (or SLS unreadable)
POLL_S = 2.0


class RouteBusy(RuntimeError):
    """The route still carried requests (or SLS could not say) when the wait ended."""


def wait_until_quiet(sls: SlsReader, route: str, since: float, *, quiet_s: float = QUIET_S, wait_s: float = WAIT_S,
                     clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> str:
    """Block until SLS shows no request on ``route`` over ``quiet_s`` seconds that all fall after ``since`` (the
    moment the route change was made); returns what was read, for the report. Raises :class:`RouteBusy` when that
    has not happened ``wait_s`` seconds after the first such window could be read."""
    query = route_requests_query(route)
    deadline = since + quiet_s + SLS_LAG_S + wait_s
    last = "not read yet"
    while True:
        end = int(clock() - SLS_LAG_S)
        start = int(end - quiet_s)
        if start >= since:
            count, failures = read_with_retries(lambda s=start, e=end: sls.requests(query, s, e), attempts=SLS_ATTEMPTS,
                                                sleep=sleep)
            if count == 0:
                return f"SLS: 0 requests on {route} over [{start}, {end})"
            last = (f"{count} request(s) over [{start}, {end})" if count is not None
                    else f"SLS unreadable ({failures[-1]})")
            run_logger().info("waiting for %s to go quiet: %s", route, last)
        if clock() >= deadline:
            raise RouteBusy(f"{route} is not quiet {deadline - since:.0f}s after the switch: {last}")
        sleep(POLL_S)


@dataclass(frozen=True)
class RouteQuiet:
    """What :func:`~tasks.rollout.versions.retire` waits for: ``route`` quiet in ``sls`` since ``since``."""

    sls: SlsReader
    route: str
    since: float
    quiet_s: float = QUIET_S
    wait_s: float = WAIT_S

    def wait(self) -> str:
        return wait_until_quiet(self.sls, self.route, self.since, quiet_s=self.quiet_s, wait_s=self.wait_s)
