"""The analysis of one rollout step: is the new version as good as the rollout's thresholds ask?

**Where the numbers come from, and why.** Two sources, judged together:

- *The users' requests*, per version, from ACK's ingress access log in SLS (:mod:`clients.sls`, GetLogs): every
  request of the step's window on the main route, split by ``proxy_alternative_upstream_name`` into the new
  release's (the canary's route) and the stable version's, with the analysis client's own requests left out by
  their User-Agent (:data:`ANALYSIS_USER_AGENT`). The window ``[start, end)`` is queried only once its end is older
  than SLS's shipping lag (:data:`SLS_LAG_S`). (alibaba-cloud-metrics-adapter's ``sls_ingress_*`` metrics cannot
  give this: they query by ``proxy_upstream_name`` alone, which counts the canary's requests on the main route.)
- *Synthetic requests*: for the step's window the analysis sends ``rollout.analysis_rps`` ``:predict`` requests
  per second with the canary header (``canary-by-header``), as Flagger's load tester and Argo Rollouts' web
  metrics do, and counts the answers: requests, failures (anything but a 200 with predictions, including timeouts
  and refused connections), and the p95 latency. They are the floor where user traffic is too thin.

It also reads the new version's pods: a Deployment with no available replica or containers that restarted during
the step fail the step (KServe rolls back a canary that is not ready).

**The checks on the users' data** (when the new release served at least ``rollout.min_requests`` of them): the
absolute thresholds (error rate, p95) and a comparison with the stable version over the same window, as Flagger's
and Kayenta's canary analyses compare the canary with the primary/baseline: the new release's error rate may exceed
the stable one's by at most :data:`ERROR_RATE_MARGIN` (absolute), and its p95 may be at most
:data:`P95_RATIO` times the stable one's or :data:`P95_MATERIAL` of the p95 objective above it, whichever is more
(both only when the stable version served ``min_requests`` too, else
there is nothing to compare with). Fewer user requests than that: the step is decided on the synthetic requests
alone, and the report says so (``StepStats.data``). A read of SLS that keeps failing after retries is a failed
check ("no data"), never a pass; the failures are recorded in ``StepStats.sls_failures``.

:func:`judge` is pure: the numbers in, the checks and the decision out.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from clients.kube import KubeClients
from clients.logs import run_logger
from clients.sls import SlsReader, VersionStats, per_version_query, read_with_retries
from core.spec import DeploySpec
from loadtests.common import build_predict_body, predict_ok
from tasks.ingress import IngressEndpoint
from tasks.timeline import read_external_metric

MAX_IN_FLIGHT = 32  # analysis requests outstanding at once; more are counted as failures, not queued
ANALYSIS_USER_AGENT = "elastic-inference-analysis/1"  # the synthetic requests' User-Agent, left out of users' data
# SLS GetLogs API reference: real-time data "becomes queryable in about 3 seconds"; plus Logtail's shipping of the
# controller's log lines, so the window is read once its end is this much in the past.
SLS_LAG_S = 5.0
ERROR_RATE_MARGIN = 0.01  # the new release's user error rate may exceed the stable one's by 1 point at most
P95_RATIO = 1.5  # and its users' p95 may be at most 1.5 times the stable one's ...
P95_MATERIAL = 0.25  # ... or a quarter of the p95 objective above it, whichever is more
SLS_ATTEMPTS = 3


class StepStats(BaseModel):
    """What the new version did during one step."""

    step: str
    weight: int
    seconds: float
    requests: int
    failures: int
    p95_ms: float | None
    restarts: int = 0
    available: int = 0
    stable_available: int | None = None
    """Available replicas of the version users are served by otherwise (the live one), at the step's end."""
    users_qps: float | None = None
    """The main route's ``sls_ingress_qps`` at the step's end: all traffic of the host and path, both versions
    (SLS counts a canary's requests on the main route)."""
    first_failure: str | None = None
    users: VersionStats | None = None
    """The users' requests the new release served in the window (SLS), None when SLS was not read."""
    stable_users: VersionStats | None = None
    """The users' requests the stable version served in the same window (SLS)."""
    sls_window: tuple[int, int] | None = None
    """The window read from SLS, ``[start, end)`` in Unix seconds."""
    sls_read: bool = False
    """SLS was to be read for this step (a canary step with an SLS project)."""
    sls_failures: list[str] = []
    """Failed GetLogs attempts (transient or not), in order."""

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def data(self) -> str:
        """Which data the step's decision used."""
        if not self.sls_read:
            return "synthetic requests"
        if self.users is None:
            return "no user data (SLS unavailable); synthetic requests"
        return f"users' requests from SLS ({self.users.requests} new, " + (
            f"{self.stable_users.requests} stable)" if self.stable_users else "stable -)") + " and synthetic requests"


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class StepAnalysis(BaseModel):
    stats: StepStats
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        return "; ".join(f"{c.name}: {c.detail}" for c in failed) if failed else "every check passed"


def thresholds(spec: DeploySpec) -> tuple[float, float]:
    """(max error rate, max p95 ms): the rollout's own, else the verification SLO."""
    r, v = spec.rollout, spec.verification
    return (v.max_error_rate if r.max_error_rate is None else r.max_error_rate,
            v.p95_ms if r.max_p95_ms is None else r.max_p95_ms)


def judge(stats: StepStats, spec: DeploySpec) -> StepAnalysis:
    """The checks of one step: enough requests, error rate, p95, the new version's pods."""
    max_errors, max_p95 = thresholds(spec)
    need = spec.rollout.min_requests
    users_enough = stats.users is not None and stats.users.requests >= need
    checks = [
        Check(name="requests", passed=stats.requests >= need or users_enough,
              detail=f"{stats.requests} (at least {need} for a decision)" + (
                  f"; {stats.users.requests} user requests decide" if users_enough and stats.users else "")),
        Check(name="error rate", passed=stats.error_rate <= max_errors,
              detail=f"{stats.failures}/{stats.requests} failed, {100 * stats.error_rate:.2f}% (max "
                     f"{100 * max_errors:.2f}%)" + (f"; first: {stats.first_failure}" if stats.first_failure else "")),
        Check(name="p95", passed=stats.p95_ms is not None and stats.p95_ms <= max_p95,
              detail=f"{'-' if stats.p95_ms is None else f'{stats.p95_ms:.0f}'} ms (max {max_p95:.0f} ms)"),
        Check(name="pods", passed=stats.available > 0 and stats.restarts == 0,
              detail=f"{stats.available} available replica(s), {stats.restarts} container restart(s) in the step"),
    ]
    if stats.sls_read:
        checks += user_checks(stats.users, stats.stable_users, stats.sls_failures, need, max_errors, max_p95)
    return StepAnalysis(stats=stats, checks=checks)


def user_checks(new: VersionStats | None, stable: VersionStats | None, failures: list[str], need: int,
                max_errors: float, max_p95: float) -> list[Check]:
    """The checks on the users' requests (see the module docstring)."""
    if new is None:
        last = failures[-1] if failures else "no answer"
        return [Check(name="users", passed=False, detail=f"no data: SLS read failed {len(failures)} time(s); "
                      f"last: {last}")]
    if new.requests < need:
        return [Check(name="users", passed=True, detail=f"{new.requests} user request(s) on the new release (fewer "
                      f"than {need}): decided on the synthetic requests")]
    p95 = "-" if new.p95_ms is None else f"{new.p95_ms:.0f}"
    checks = [
        Check(name="users error rate", passed=new.error_rate <= max_errors,
              detail=f"{new.errors}/{new.requests} failed, {100 * new.error_rate:.2f}% (max {100 * max_errors:.2f}%)"),
        Check(name="users p95", passed=new.p95_ms is not None and new.p95_ms <= max_p95,
              detail=f"{p95} ms (max {max_p95:.0f} ms)"),
    ]
    if stable is not None and stable.requests >= need:
        limit = stable.error_rate + ERROR_RATE_MARGIN
        checks.append(Check(name="users vs stable error rate", passed=new.error_rate <= limit,
                            detail=f"{100 * new.error_rate:.2f}% vs stable {100 * stable.error_rate:.2f}% "
                                   f"(max stable + {100 * ERROR_RATE_MARGIN:.0f} points)"))
        if stable.p95_ms is not None and new.p95_ms is not None:
            # slower only counts when it is both relatively and materially slower: a new release on fewer, just
            # started replicas answers a fast stable version's 140 ms in 250 ms, which no user notices against a
            # 1 s objective; a quarter of the objective is a difference they may
            floor = P95_MATERIAL * max_p95
            slower = new.p95_ms > P95_RATIO * stable.p95_ms and new.p95_ms - stable.p95_ms > floor
            checks.append(Check(name="users vs stable p95", passed=not slower,
                                detail=f"{new.p95_ms:.0f} ms vs stable {stable.p95_ms:.0f} ms (max x{P95_RATIO} "
                                       f"or +{floor:.0f} ms, whichever is more)"))
    return checks


def p95(latencies_ms: list[float]) -> float | None:
    """The 95th percentile (nearest rank), None without samples."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _restarts(kube: KubeClients, spec: DeploySpec) -> tuple[int, int]:
    """(container restarts over the new version's pods, available replicas of its Deployment)."""
    ns = spec.names.namespace
    sel = ",".join(f"{k}={v}" for k, v in (("release", spec.names.release), ("app", spec.names.pod_labels["app"])))
    pods = kube.list("Pod", ns, label_selector=sel).get("items") or []
    restarts = sum(cs.get("restartCount") or 0 for p in pods
                   for cs in (p.get("status") or {}).get("containerStatuses") or [])
    dep = kube.get("Deployment", spec.names.deployment, ns) or {}
    return restarts, int((dep.get("status") or {}).get("availableReplicas") or 0)


def send_requests(endpoint: IngressEndpoint, spec: DeploySpec, seconds: float,
                  stop: threading.Event | None = None) -> tuple[int, int, list[float], str | None]:
    """``rollout.analysis_rps`` predicts per second for ``seconds`` through ``endpoint`` (open loop: the schedule
    does not wait for answers). Returns (requests, failures, latencies of the successes in ms, first failure)."""
    rps = spec.rollout.analysis_rps
    base = endpoint.url.rstrip("/")
    model = spec.model.name
    lock = threading.Lock()
    failures: list[str] = []
    latencies: list[float] = []
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    with httpx.Client(timeout=30.0, headers={"Host": endpoint.host, "User-Agent": ANALYSIS_USER_AGENT,
                                             **endpoint.headers}) as http:
        meta = http.get(f"{base}/v1/models/{model}/metadata")
        if meta.status_code != 200:
            return 1, 1, [], f"metadata answered HTTP {meta.status_code}: {meta.text[:200]}"
        body = build_predict_body(meta.json())

        def one() -> None:
            started = time.perf_counter()
            try:
                res = http.post(f"{base}/v1/models/{model}:predict", json=body)
                problem = predict_ok(res.json()) if res.status_code == 200 else f"HTTP {res.status_code}: " \
                    f"{res.text[:200]}"
            except (httpx.HTTPError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                in_flight.release()
            with lock:
                if problem:
                    failures.append(problem)
                else:
                    latencies.append((time.perf_counter() - started) * 1000)

        sent = 0
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="analysis") as pool:
            while (stop is None or not stop.is_set()) and (due := start + sent / rps) < start + seconds:
                time.sleep(max(0.0, due - time.monotonic()))
                sent += 1
                if not in_flight.acquire(blocking=False):
                    with lock:
                        failures.append(f"more than {MAX_IN_FLIGHT} requests outstanding")
                    continue
                pool.submit(one)
    return sent, len(failures), latencies, failures[0] if failures else None


def _available(kube: KubeClients, namespace: str, deployment: str) -> int:
    dep = kube.get("Deployment", deployment, namespace) or {}
    return int((dep.get("status") or {}).get("availableReplicas") or 0)


def read_users(sls: SlsReader, main_route: str, canary_route: str, start: int, end: int,
               sleep=time.sleep) -> tuple[VersionStats | None, VersionStats | None, list[str]]:
    """(new release's, stable version's, failed attempts): the users' requests of ``[start, end)``, read once the
    window's end is :data:`SLS_LAG_S` in the past."""
    wait = end + SLS_LAG_S - time.time()
    if wait > 0:
        sleep(wait)
    query = per_version_query(main_route, canary_route, ANALYSIS_USER_AGENT)
    result, failures = read_with_retries(lambda: sls.per_version(query, start, end), attempts=SLS_ATTEMPTS,
                                         sleep=sleep)
    if failures:
        run_logger().warning("SLS GetLogs failed %d time(s): %s", len(failures), "; ".join(failures))
    if result is None:
        return None, None, failures
    return result[True], result[False], failures


@task(name="analysis", cache_policy=NO_CACHE)
def analyse_step(kube: KubeClients, endpoint: IngressEndpoint, spec: DeploySpec, step: str, weight: int,
                 seconds: float, stable: str | None = None, main_route: str | None = None,
                 sls: SlsReader | None = None, canary_route: str | None = None) -> StepAnalysis:
    """Measure the new version for ``seconds`` (see the module docstring) and judge the step; ``stable``: the
    live version's Deployment and ``main_route`` its SLS route; with ``sls`` and ``canary_route`` the users'
    requests per version are read from SLS and judged too."""
    restarts_before, _ = _restarts(kube, spec)
    started = time.monotonic()
    window_start = math.ceil(time.time())  # whole seconds at this step's weight only
    requests, failures, latencies, first = send_requests(endpoint, spec, seconds)
    window_end = int(time.time())
    users = stable_users = None
    sls_failures: list[str] = []
    read = bool(sls and main_route and canary_route and window_end > window_start)
    if read:
        users, stable_users, sls_failures = read_users(sls, main_route, canary_route, window_start,  # type: ignore[arg-type]
                                                       window_end)
    restarts_after, available = _restarts(kube, spec)
    users_qps = None
    if main_route and spec.names.sls_project:
        users_qps = read_external_metric(kube, spec.names.namespace, spec.autoscaling.metric_name, {
            "sls.project": spec.names.sls_project, "sls.logstore": spec.names.sls_logstore,
            "sls.ingress.route": main_route})
    stats = StepStats(step=step, weight=weight, seconds=round(time.monotonic() - started, 3), requests=requests,
                      failures=failures, p95_ms=p95(latencies), restarts=max(0, restarts_after - restarts_before),
                      available=available, first_failure=first, users_qps=users_qps,
                      stable_available=_available(kube, spec.names.namespace, stable) if stable else None,
                      users=users, stable_users=stable_users, sls_read=read, sls_failures=sls_failures,
                      sls_window=(window_start, window_end) if read else None)
    result = judge(stats, spec)
    run_logger().info("%s (weight %d%%): %s on %s: %s", step, weight, "passed" if result.passed else "FAILED",
                      stats.data, "; ".join(f"{c.name} {c.detail}" for c in result.checks))
    return result

