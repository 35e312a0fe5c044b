"""The smoke test after the Ingress: one real predict through it, with a body built from the model's signature."""

from __future__ import annotations

import time

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from clients.logs import run_logger
from core.spec import DeploySpec
from loadtests.common import build_predict_body, predict_ok
from tasks.ingress import IngressEndpoint


class SmokeResult(BaseModel):
    url: str
    status: int
    latency_ms: float
    predictions: int


class SmokeFailed(RuntimeError):
    pass


class _NotYet(Exception):
    pass


@task(name="smoke_predict", cache_policy=NO_CACHE)
def smoke_predict(endpoint: IngressEndpoint, spec: DeploySpec, timeout_s: float = 120.0) -> SmokeResult:
    """GET the model's metadata and POST one ``:predict`` through the Ingress (with its Host header).

    Retries while the route is not there yet (404/502/503 from the ingress right after it got its address);
    any other answer, or a body that is not a prediction, fails the step with what came back.
    """
    model = spec.model.name
    base = endpoint.url.rstrip("/")
    headers = {"Host": endpoint.host, **endpoint.headers}
    with httpx.Client(timeout=30.0, headers=headers) as http:
        for attempt in Retrying(
            retry=retry_if_exception_type(_NotYet), stop=stop_after_delay(timeout_s),
            wait=wait_exponential(multiplier=0.5, max=5), reraise=True,
        ):
            with attempt:
                meta = http.get(f"{base}/v1/models/{model}/metadata")
                if meta.status_code in (404, 502, 503, 504):
                    raise _NotYet(f"metadata answered {meta.status_code}: {meta.text[:200]}")
        if meta.status_code != 200:
            raise SmokeFailed(f"GET {base}/v1/models/{model}/metadata answered {meta.status_code}: {meta.text[:300]}")
        body = build_predict_body(meta.json())
        started = time.perf_counter()
        res = http.post(f"{base}/v1/models/{model}:predict", json=body)
        latency_ms = (time.perf_counter() - started) * 1000
    problem = predict_ok(res.json()) if res.status_code == 200 else f"HTTP {res.status_code}: {res.text[:300]}"
    if problem:
        raise SmokeFailed(f"predict through the Ingress failed: {problem}")
    predictions = res.json().get("predictions") or res.json().get("outputs") or []
    run_logger().info("smoke predict through %s (Host %s): %d ms", base, endpoint.host, latency_ms)
    return SmokeResult(url=f"{base}/v1/models/{model}:predict", status=res.status_code, latency_ms=latency_ms,
                       predictions=len(predictions) if isinstance(predictions, list) else 1)
