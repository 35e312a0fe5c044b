"""The SLS ingress metrics of alibaba-cloud-metrics-adapter, computed from the ingress access log in memory.

Followed from AliyunContainerService/alibaba-cloud-metrics-adapter ``pkg/metrics/sls/sls.go`` (metric names, the
``sls.*`` selector labels, ``getSLSParams``: project and logstore required, interval minimum and default 15,
max_retry default 5) and ``pkg/metrics/sls/ingress.go`` (``getSLSIngressQuery`` / ``getSLSIngressMetrics``):

- query ``* and proxy_upstream_name: <route> | SELECT <item> as value from log WHERE __time__ >= now-delay-interval
  and __time__ < now-delay`` with ``<item>`` = ``count(1) / interval`` (qps), ``avg(request_time) * 1000``,
  ``approx_percentile(request_time, q) * 1000`` (latency, ms), ``sum(request_length) / interval`` (inflow, B/s);
  an empty route means ``*`` (every route);
- the window ends ``DelaySeconds`` in the past: label ``sls.query.delay``, default 10 (``getSLSParams``);
  transient SLS failures (``--faults`` ``sls``) make the adapter return the SDK's error (the API server answers
  500), and logs younger than SLS's shipping lag are not counted yet (:mod:`sandbox.sls.service`);
- the value string is reduced to its digits and dots (``null`` -> ``0``), parsed as a float and truncated to an
  int64 quantity: so an unknown route or an idle one gives ``0``, not an error; a wrong project or logstore is an
  SLS error (``ProjectNotExist`` / ``LogStoreNotExist``) that the adapter returns as the metric's error.

**Time.** Traffic is real time; the control plane (HPA sync, SLS query interval) runs ``speed`` times faster.
The adapter's ``interval`` is a simulated duration; the window actually aggregated is the last
``n = max(1, round(interval / speed))`` complete *real* seconds, and the QPS is ``int(count / n)``: requests per
real second, which is what a load generator measures. (At speed 1 this is exactly the adapter's ``count(1) / 15``
over 15 s.) Inflow is divided the same way; latencies are real durations in ms.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SLS_INGRESS_QPS = "sls_ingress_qps"
SLS_INGRESS_LATENCY_AVG = "sls_ingress_latency_avg"
SLS_INGRESS_LATENCY_P50 = "sls_ingress_latency_p50"
SLS_INGRESS_LATENCY_P95 = "sls_ingress_latency_p95"
SLS_INGRESS_LATENCY_P99 = "sls_ingress_latency_p99"
SLS_INGRESS_LATENCY_P9999 = "sls_ingress_latency_p9999"
SLS_INGRESS_INFLOW = "sls_ingress_inflow"
METRICS = [SLS_INGRESS_QPS, SLS_INGRESS_LATENCY_AVG, SLS_INGRESS_LATENCY_P50, SLS_INGRESS_LATENCY_P95,
           SLS_INGRESS_LATENCY_P99, SLS_INGRESS_LATENCY_P9999, SLS_INGRESS_INFLOW]
_PERCENTILES = {SLS_INGRESS_LATENCY_P50: 0.50, SLS_INGRESS_LATENCY_P95: 0.95, SLS_INGRESS_LATENCY_P99: 0.99,
                SLS_INGRESS_LATENCY_P9999: 0.9999}

LABEL_PROJECT = "sls.project"
LABEL_LOGSTORE = "sls.logstore"
LABEL_INTERVAL = "sls.query.interval"
LABEL_DELAY = "sls.query.delay"
LABEL_MAX_RETRY = "sls.query.max_retry"
LABEL_ROUTE = "sls.ingress.route"
MIN_INTERVAL = 15
# getSLSParams sets DelaySeconds: 10 before reading the labels (pkg/metrics/sls/sls.go; the label's comment and
# docs/metrics/sls.md still say "default 0s", the code says 10): the window ends 10 s in the past.
DELAY_DEFAULT = 10
MAX_RETRY_DEFAULT = 5
DEFAULT_LOGSTORE = "nginx-ingress"


class MetricError(Exception):
    """What the adapter's provider returns as an error (the API server answers 500 InternalError)."""


class SlsParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    project: str = ""
    logstore: str = ""
    route: str = ""
    interval: int = MIN_INTERVAL
    delay: int = DELAY_DEFAULT
    max_retry: int = MAX_RETRY_DEFAULT


class ExternalMetricValue(BaseModel):
    """``external.metrics.k8s.io/v1beta1`` ExternalMetricValue."""

    metricName: str
    metricLabels: dict[str, str] = Field(default_factory=dict)
    timestamp: str
    window: int | None = None
    value: str


class ExternalMetricValueList(BaseModel):
    kind: str = "ExternalMetricValueList"
    apiVersion: str = "external.metrics.k8s.io/v1beta1"
    metadata: dict[str, Any] = Field(default_factory=dict)
    items: list[ExternalMetricValue] = Field(default_factory=list)


def _atoi(label: str, value: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", value):
        raise MetricError(f'failed to get sls params,because of strconv.Atoi: parsing "{value}": invalid syntax')
    return int(value)


def parse_params(requirements: list[tuple[str, str, tuple[str, ...]]]) -> SlsParams:
    """``getSLSParams``: the first value of each known label, whatever the operator."""
    p: dict[str, Any] = {}
    for key, _op, values in requirements:
        if not values:
            continue
        value = values[0]
        if key == LABEL_PROJECT:
            p["project"] = value
        elif key == LABEL_LOGSTORE:
            p["logstore"] = value
        elif key == LABEL_ROUTE:
            p["route"] = value
        elif key == LABEL_INTERVAL:
            p["interval"] = _atoi(key, value)
        elif key == LABEL_DELAY:
            p["delay"] = _atoi(key, value)
        elif key == LABEL_MAX_RETRY:
            p["max_retry"] = _atoi(key, value)
    if not p.get("project") or not p.get("logstore"):
        raise MetricError(f"failed to get sls params,because of {LABEL_PROJECT} and {LABEL_LOGSTORE} must be provided")
    p["interval"] = max(p.get("interval", MIN_INTERVAL), MIN_INTERVAL)
    if p.get("max_retry", MAX_RETRY_DEFAULT) < 1:
        p["max_retry"] = MAX_RETRY_DEFAULT
    return SlsParams(**p)


def sls_error(http_code: int, code: str, message: str) -> MetricError:
    """An aliyun-log-go-sdk ``Error`` as its ``String()`` prints it (indented JSON)."""
    body = {"httpCode": http_code, "errorCode": code, "errorMessage": message,
            "requestID": uuid.uuid4().hex[:24].upper()}
    return MetricError(json.dumps(body, indent=4))


@dataclass
class Query:
    """Where the sandbox's SLS answers from: the project/logstore that exist and the access log."""

    project: str
    logstore: str
    access_log: Any  # sandbox.ingress.stats.AccessLog
    speed: float
    lag: float = 0.0  # SLS shipping lag (seconds, taken as simulated: the adapter runs at the control plane speed)
    fault: Any = None  # the SLS error this query meets (sandbox.sls.errors.SlsError), if the faults say so


def window_seconds(interval: int, speed: float) -> int:
    return max(1, round(interval / speed))


def query_value(q: Query, params: SlsParams, metric: str, now: float | None = None) -> int:
    """The integer the adapter turns into the metric value (after SLS would have answered the query)."""
    if params.project != q.project:
        raise sls_error(404, "ProjectNotExist", f"The Project does not exist : {params.project}")
    if params.logstore != q.logstore:
        raise sls_error(404, "LogStoreNotExist", f"logstore {params.logstore} does not exist")
    if q.fault is not None:  # GetLogs failed: the adapter returns the SDK's error (getSLSIngressMetrics)
        raise sls_error(q.fault.status, q.fault.code, q.fault.message)
    route = params.route or "*"
    n = window_seconds(params.interval, q.speed)
    delay = window_seconds(params.delay, q.speed) if params.delay else 0
    t = time.time() if now is None else now
    end = t - delay
    # Logs younger than the shipping lag are not in SLS yet: the window's newest seconds may be empty.
    visible = int(t - q.lag / q.speed) if q.lag else int(end)
    seen = max(0, min(int(end), visible) - (int(end) - n))
    w = q.access_log.window(route, seen, now=int(end) - n + seen) if seen else q.access_log.window(route, 0, now=end)
    if metric == SLS_INGRESS_QPS:
        value: float | None = w.count / n
    elif metric == SLS_INGRESS_INFLOW:
        value = w.bytes_in / n
    elif metric == SLS_INGRESS_LATENCY_AVG:
        value = w.avg_ms()
    elif metric in _PERCENTILES:
        value = w.percentile_ms(_PERCENTILES[metric])
    else:
        raise MetricError("MetricNotSupport")
    return int(value) if value is not None else 0  # SQL null -> "" -> "0"
