"""Per-version request stats from ACK's ingress access log in SLS, with ``aliyun-log-python-sdk`` (GetLogs).

On ACK the ingress controller's access log goes to the ``nginx-ingress`` logstore of the cluster's
``k8s-log-{cluster id}`` project (ACK "Analyze and monitor the access log of nginx-ingress"). Every request a canary
serves is logged with ``proxy_upstream_name`` = the main route and ``proxy_alternative_upstream_name`` = the
canary's route (ingress-nginx ``balancer.lua``); requests the stable version serves have the main route and an
empty alternative. So one query gives both versions over the same window::

    proxy_upstream_name: "<main route>" not http_user_agent: "<analysis UA>"
    | SELECT proxy_alternative_upstream_name = '<canary route>' AS canary, count(1) AS requests,
      count_if(status >= 500) AS errors, approx_percentile(request_time, 0.95) AS p95 GROUP BY canary

``canary`` is ``true`` for the new release's requests and ``false`` for the stable version's; the analysis
client's own requests (its User-Agent) are left out, so the figures are the users'.

Reads are retried (:func:`read_with_retries`): the SDK already retries a 5xx ten times a second apart
(``LogClient._send``); what still fails is retried here with backoff and every failure is recorded; a read that
keeps failing returns no stats (the caller fails the step as "no data", never passes it nor rolls back on it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

from aliyun.log import LogClient, LogException
from pydantic import BaseModel

T = TypeVar("T")
_ROUTE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_UA = re.compile(r"[A-Za-z0-9._/+() -]{1,200}")


class VersionStats(BaseModel):
    """One version's requests in a window, from SLS."""

    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def per_version_query(main_route: str, canary_route: str, exclude_user_agent: str) -> str:
    """The query of the module docstring; the names are checked, so nothing the query quotes can break out."""
    for what, value in (("main route", main_route), ("canary route", canary_route)):
        if not _ROUTE.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not an upstream name (namespace-service-port)")
    if not _UA.fullmatch(exclude_user_agent) or '"' in exclude_user_agent:
        raise ValueError(f"user agent {exclude_user_agent!r}: letters, digits, spaces and ._/+()- only")
    return (f'proxy_upstream_name: "{main_route}" not http_user_agent: "{exclude_user_agent}" | SELECT '
            f"proxy_alternative_upstream_name = '{canary_route}' AS canary, count(1) AS requests, "
            "count_if(status >= 500) AS errors, approx_percentile(request_time, 0.95) AS p95 GROUP BY canary")


def route_requests_query(route: str) -> str:
    """Every request logged on ``route`` (``proxy_upstream_name``), counted: whether a route still carries traffic.
    The route is checked as in :func:`per_version_query`."""
    if not _ROUTE.fullmatch(route):
        raise ValueError(f"route {route!r} is not an upstream name (namespace-service-port)")
    return f'proxy_upstream_name: "{route}" | SELECT count(1) AS requests'


def _float(v: str | None) -> float | None:
    if v in (None, "", "null"):
        return None
    return float(v)


class SlsReader:
    """GetLogs on one project and logstore."""

    def __init__(self, client: LogClient, project: str, logstore: str) -> None:
        self.client = client
        self.project = project
        self.logstore = logstore

    def per_version(self, query: str, start: int, end: int) -> dict[bool, VersionStats]:
        """{is_canary: stats} over ``[start, end)`` (Unix seconds); a version without requests is absent from
        SLS's answer and given here with zero requests."""
        res = self.client.get_log(self.project, self.logstore, start, end, query=query)
        out = {flag: VersionStats(requests=0, errors=0, p95_ms=None) for flag in (True, False)}
        for row in res.get_logs():
            c = row.get_contents()
            if c.get("canary") not in ("true", "false"):
                raise LogException("InvalidResponse", f"unexpected row {dict(c)!r}")
            p95 = _float(c.get("p95"))
            out[c["canary"] == "true"] = VersionStats(requests=int(c.get("requests") or 0),
                                                      errors=int(c.get("errors") or 0),
                                                      p95_ms=None if p95 is None else p95 * 1000.0)
        return out


    def requests(self, query: str, start: int, end: int) -> int:
        """The ``requests`` of a counting query (:func:`route_requests_query`) over ``[start, end)``."""
        rows = [row.get_contents() for row in self.client.get_log(self.project, self.logstore, start, end,
                                                                  query=query).get_logs()]
        if len(rows) != 1 or not str(rows[0].get("requests", "")).isdigit():
            raise LogException("InvalidResponse", f"unexpected rows {rows!r}")
        return int(rows[0]["requests"])


def describe(exc: Exception) -> str:
    """A one-line description of a failed read (code and message: never a secret; the SDK's messages hold none)."""
    if isinstance(exc, LogException):
        return f"{exc.get_error_code()} (HTTP {exc.resp_status}): {exc.get_error_message()[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_with_retries(read: Callable[[], T], attempts: int = 3, backoff_s: float = 1.0,
                      sleep: Callable[[float], None] = time.sleep) -> tuple[T | None, list[str]]:
    """``(result, failures)``: ``read()`` tried up to ``attempts`` times, ``backoff_s`` doubling between tries;
    ``result`` is None when every try failed. Errors that retrying cannot fix (a bad query, a missing project or
    logstore, a refused signature) end at once."""
    failures: list[str] = []
    for i in range(attempts):
        try:
            return read(), failures
        except (LogException, OSError) as e:
            failures.append(describe(e))
            if isinstance(e, LogException) and e.get_error_code() in PERMANENT:
                break
            if i + 1 < attempts:
                sleep(backoff_s * 2 ** i)
    return None, failures


PERMANENT = {"ParameterInvalid", "ProjectNotExist", "LogStoreNotExist", "SignatureNotMatch", "Unauthorized",
             "InvalidAccessKeyId"}
