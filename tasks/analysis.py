"""The analysis of one rollout step: is the new version as good as the rollout's thresholds ask?

**Where the numbers come from, and why.** A per-version figure is what a decision needs, and ACK's SLS ingress
metrics cannot give one: a request a canary serves is logged under the main route (``proxy_upstream_name``), the
canary named only in ``proxy_alternative_upstream_name``, and alibaba-cloud-metrics-adapter queries by
``proxy_upstream_name`` alone (see tasks/canary.py). So the analysis measures the new version itself, through the
production ingress and the same upstream users reach it by: for the step's window it sends ``rollout.analysis_rps``
``:predict`` requests per second with the canary header (``canary-by-header``), as Flagger's load tester and
Argo Rollouts' web metrics do, and counts the answers: requests, failures (anything but a 200 with predictions,
including timeouts and refused connections), and the p95 latency. It also reads the new version's pods: a
Deployment with no available replica or containers that restarted during the step fail the step (KServe rolls
back a canary that is not ready).

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
from core.spec import DeploySpec
from loadtests.common import build_predict_body, predict_ok
from tasks.ingress import IngressEndpoint
from tasks.timeline import read_external_metric

MAX_IN_FLIGHT = 32  # analysis requests outstanding at once; more are counted as failures, not queued


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

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


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
    checks = [
        Check(name="requests", passed=stats.requests >= need,
              detail=f"{stats.requests} (at least {need} for a decision)"),
        Check(name="error rate", passed=stats.error_rate <= max_errors,
              detail=f"{stats.failures}/{stats.requests} failed, {100 * stats.error_rate:.2f}% (max "
                     f"{100 * max_errors:.2f}%)" + (f"; first: {stats.first_failure}" if stats.first_failure else "")),
        Check(name="p95", passed=stats.p95_ms is not None and stats.p95_ms <= max_p95,
              detail=f"{'-' if stats.p95_ms is None else f'{stats.p95_ms:.0f}'} ms (max {max_p95:.0f} ms)"),
        Check(name="pods", passed=stats.available > 0 and stats.restarts == 0,
              detail=f"{stats.available} available replica(s), {stats.restarts} container restart(s) in the step"),
    ]
    return StepAnalysis(stats=stats, checks=checks)


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
    with httpx.Client(timeout=30.0, headers={"Host": endpoint.host, **endpoint.headers}) as http:
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


@task(name="analysis", cache_policy=NO_CACHE)
def analyse_step(kube: KubeClients, endpoint: IngressEndpoint, spec: DeploySpec, step: str, weight: int,
                 seconds: float, stable: str | None = None, main_route: str | None = None) -> StepAnalysis:
    """Measure the new version for ``seconds`` (see the module docstring) and judge the step; ``stable``: the
    live version's Deployment and ``main_route`` its SLS route, read for the record (not judged)."""
    restarts_before, _ = _restarts(kube, spec)
    started = time.monotonic()
    requests, failures, latencies, first = send_requests(endpoint, spec, seconds)
    restarts_after, available = _restarts(kube, spec)
    users_qps = None
    if main_route and spec.names.sls_project:
        users_qps = read_external_metric(kube, spec.names.namespace, spec.autoscaling.metric_name, {
            "sls.project": spec.names.sls_project, "sls.logstore": spec.names.sls_logstore,
            "sls.ingress.route": main_route})
    stats = StepStats(step=step, weight=weight, seconds=round(time.monotonic() - started, 3), requests=requests,
                      failures=failures, p95_ms=p95(latencies), restarts=max(0, restarts_after - restarts_before),
                      available=available, first_failure=first, users_qps=users_qps,
                      stable_available=_available(kube, spec.names.namespace, stable) if stable else None)
    result = judge(stats, spec)
    run_logger().info("%s (weight %d%%): %s: %s", step, weight, "passed" if result.passed else "FAILED",
                      "; ".join(f"{c.name} {c.detail}" for c in result.checks))
    return result

