"""The timeline recorded beside the load test: metric, HPA, pods and the pool's nodes, every few seconds.

A :class:`TimelineSampler` is a thread started before Locust and stopped after it::

    with TimelineSampler(kube, spec, nodepool_id) as sampler:     # first sample taken before returning
        result = run_load_test(endpoint, spec, out_dir)
    timeline = sampler.samples                                    # last sample taken on exit

Each :class:`TimelineSample` holds, at ``t`` seconds from the start of sampling:

* the external metric the HPA reads (``sls_ingress_qps`` by default), from the external metrics API exactly as the
  HPA controller reads it: ``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=``
  with the HPA's selector (sum of the items' values; None when the API has no answer);
* the HPA's ``status.currentReplicas`` / ``desiredReplicas``;
* the Deployment's replicas and ready replicas;
* the pool's Nodes (label ``alibabacloud.com/nodepool-id=<pool id>``) by billing, from the labels
  ``node.alibabacloud.com/spot-strategy`` / ``node.alibabacloud.com/instance-charge-type``, and by readiness
  (condition ``Ready=True``). cloud-controller-manager sets each label only when ECS returns a value, and the
  spot-strategy label only since CCM v2.10.2 (kubernetes/cloud-provider-alibaba-cloud
  ``pkg/controller/node/manager.go``), so a node whose labels do not settle its billing is looked up in ACK's
  DescribeClusterNodes (the authority; ``instance_nodes``, one call per sample and only then) and otherwise
  counted in ``nodes_billing_unknown``, never as pay-as-you-go.

Every source is read on its own: a failed read (throttling, 5xx, a timeout) leaves that field None, is noted in
``errors`` of the sample, counted in :attr:`TimelineSampler.failures` and logged (the first few, then every tenth);
the sampler goes on. Nothing here writes to the cluster.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.utils import parse_quantity
from pydantic import BaseModel, Field

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.autoscaling import metric_selector
from tasks.cost import SPOT_STRATEGIES, billing_of

NODEPOOL_LABEL = "alibabacloud.com/nodepool-id"
SPOT_LABEL = "node.alibabacloud.com/spot-strategy"
CHARGE_LABEL = "node.alibabacloud.com/instance-charge-type"
INSTANCE_ID_LABEL = "alibabacloud.com/ecs-instance-id"


class TimelineSample(BaseModel):
    t: float = Field(description="Seconds since the sampler started")
    timestamp: str = Field(description="UTC time of the sample, ISO 8601")
    unix: float
    metric_value: float | None = None
    hpa_current: int | None = None
    hpa_desired: int | None = None
    replicas: int | None = None
    pods_ready: int | None = None
    nodes_total: int | None = None
    nodes_ready: int | None = None
    nodes_pay_as_you_go: int | None = None
    nodes_spot: int | None = None
    nodes_subscription: int | None = None
    nodes_billing_unknown: int | None = None
    nodes_pay_as_you_go_ready: int | None = None
    nodes_spot_ready: int | None = None
    errors: list[str] = Field(default_factory=list)


# --- pure ---------------------------------------------------------------------------------------------------------
def node_ready(node: dict[str, Any]) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def node_instance_id(node: dict[str, Any]) -> str | None:
    """The ECS instance id of a Node: ACK's label, else ``spec.providerID`` (``<region>.<instance id>``)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    iid = labels.get(INSTANCE_ID_LABEL)
    provider = (node.get("spec") or {}).get("providerID") or ""
    if not iid and provider:
        iid = provider.rsplit(".", 1)[-1].rsplit("/", 1)[-1] or None
    return iid


def label_billing(node: dict[str, Any]) -> str | None:
    """Billing as the CCM labels tell it, or None when they do not settle it (a label is missing)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    charge, strategy = labels.get(CHARGE_LABEL), labels.get(SPOT_LABEL)
    if strategy in SPOT_STRATEGIES or charge == "PrePaid":
        return billing_of(charge, strategy)
    if charge is None or strategy is None:
        return None
    return billing_of(charge, strategy)


def node_billing(node: dict[str, Any], ack_billing: dict[str, str] | None = None) -> str:
    """``spot`` | ``pay-as-you-go`` | ``subscription`` from the labels, else from DescribeClusterNodes
    (``ack_billing``: instance id -> billing), else ``unknown``."""
    known = label_billing(node)
    if known is not None:
        return known
    return (ack_billing or {}).get(node_instance_id(node) or "", "unknown")


def node_counts(nodes: list[dict[str, Any]], ack_billing: dict[str, str] | None = None) -> dict[str, int]:
    """The node fields of a sample from the pool's Node objects."""
    out = {
        "nodes_total": len(nodes), "nodes_ready": 0, "nodes_pay_as_you_go": 0, "nodes_spot": 0,
        "nodes_subscription": 0, "nodes_billing_unknown": 0, "nodes_pay_as_you_go_ready": 0, "nodes_spot_ready": 0,
    }
    for n in nodes:
        ready = node_ready(n)
        billing = node_billing(n, ack_billing)
        key = {"pay-as-you-go": "nodes_pay_as_you_go", "spot": "nodes_spot",
               "subscription": "nodes_subscription"}.get(billing, "nodes_billing_unknown")
        out[key] += 1
        if ready:
            out["nodes_ready"] += 1
            if key in ("nodes_pay_as_you_go", "nodes_spot"):
                out[key + "_ready"] += 1
    return out


def metric_sum(metric_list: dict[str, Any]) -> float | None:
    """Sum of the values of an ``ExternalMetricValueList`` (quantities such as ``"10"`` or ``"10500m"``)."""
    items = metric_list.get("items")
    if not items:
        return None
    return float(sum(parse_quantity(str(i.get("value", "0"))) for i in items))


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# --- reads --------------------------------------------------------------------------------------------------------
def read_external_metric(
    kube: KubeClients, namespace: str, metric: str, selector: dict[str, str], timeout_s: float = 10.0
) -> float | None:
    """What the HPA controller reads from the external metrics API (None when it answers with no items)."""
    path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
    api = kube.api_client
    try:
        method, url, headers, body, post = api.param_serialize(
            "GET",
            path,
            query_params=[("labelSelector", label_selector(selector))],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = api.call_api(method, url, header_params=headers, body=body, post_params=post,
                            _request_timeout=timeout_s)
        data = resp.read()
    except Exception as exc:  # urllib3 errors, TLS errors: the caller records them
        raise KubeApiError(f"GET {path}", None, type(exc).__name__, str(exc)[:200]) from None
    if not 200 <= resp.status < 300:
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        try:
            message = json.loads(text).get("message") or text[:200]
        except ValueError:
            message = text[:200]
        raise KubeApiError(f"GET {path}", resp.status, str(resp.reason or ""), message)
    return metric_sum(json.loads(data) if data else {})


def list_pool_nodes(kube: KubeClients, nodepool_id: str) -> list[dict[str, Any]]:
    """The Kubernetes Nodes of one ACK node pool (label ``alibabacloud.com/nodepool-id``)."""
    data = kube._call(  # Node is not among KubeClients' apply kinds; _call gives the same retries and errors
        "LIST Node", kube.core.list_node, label_selector=f"{NODEPOOL_LABEL}={nodepool_id}"
    )
    return list(data.get("items") or [])


# --- the sampler --------------------------------------------------------------------------------------------------
class TimelineSampler:
    """Samples every ``interval_s`` seconds in a daemon thread; see the module docstring."""

    def __init__(
        self,
        kube: KubeClients,
        spec: DeploySpec,
        nodepool_id: str | None,
        interval_s: float | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        instance_nodes: Callable[[], list[Any]] | None = None,
    ) -> None:
        """``instance_nodes``: DescribeClusterNodes of the pool (items with ``instance_id``,
        ``instance_charge_type``, ``spot_strategy``), asked only for nodes whose labels do not settle the billing."""
        self.instance_nodes = instance_nodes
        self.kube = kube
        self.spec = spec
        self.names = spec.names
        self.nodepool_id = nodepool_id
        self.interval_s = float(interval_s if interval_s is not None else spec.load_test.sample_interval_s)
        self.samples: list[TimelineSample] = []
        self.failures = 0
        self._logger = logger
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        try:
            self._selector: dict[str, str] | None = metric_selector(spec)
        except ValueError:
            self._selector = None

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        if self._logger is None:
            self._logger = run_logger()
        return self._logger

    def _note(self, errors: list[str], what: str, exc: BaseException) -> None:
        self.failures += 1
        text = f"{what}: {exc}".splitlines()[0][:300]
        errors.append(text)
        if self.failures <= 3 or self.failures % 10 == 0:
            self.logger.warning("timeline: %s (failed reads so far: %d)", text, self.failures)

    def sample_once(self) -> TimelineSample:
        now = time.time()
        fields: dict[str, Any] = {}
        errors: list[str] = []
        ns = self.names.namespace
        if self._selector is not None:
            try:
                fields["metric_value"] = read_external_metric(
                    self.kube, ns, self.spec.autoscaling.metric_name, self._selector
                )
            except Exception as exc:
                self._note(errors, "external metric", exc)
        try:
            hpa = self.kube.get("HorizontalPodAutoscaler", self.names.hpa, ns)
            if hpa is not None:
                st = hpa.get("status") or {}
                fields["hpa_current"] = st.get("currentReplicas")
                fields["hpa_desired"] = st.get("desiredReplicas")
        except Exception as exc:
            self._note(errors, "HPA", exc)
        try:
            dep = self.kube.get("Deployment", self.names.deployment, ns)
            if dep is not None:
                st = dep.get("status") or {}
                fields["replicas"] = (dep.get("spec") or {}).get("replicas", st.get("replicas"))
                fields["pods_ready"] = int(st.get("readyReplicas") or 0)
        except Exception as exc:
            self._note(errors, "Deployment", exc)
        if self.nodepool_id:
            try:
                nodes = list_pool_nodes(self.kube, self.nodepool_id)
                ack_billing = None
                if self.instance_nodes is not None and any(label_billing(n) is None for n in nodes):
                    try:
                        ack_billing = {i.instance_id: billing_of(i.instance_charge_type, i.spot_strategy)
                                       for i in self.instance_nodes()}
                    except Exception as exc:
                        self._note(errors, "DescribeClusterNodes", exc)
                fields.update(node_counts(nodes, ack_billing))
            except Exception as exc:
                self._note(errors, "nodes", exc)
        sample = TimelineSample(
            t=round(time.monotonic() - self._t0, 3),
            timestamp=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            unix=now,
            errors=errors,
            **fields,
        )
        with self._lock:
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> TimelineSampler:
        """Take the first sample now (the state before the load), then sample in the background."""
        _ = self.logger  # bind the run logger in the caller's (task/flow) context
        self._t0 = time.monotonic()
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="timeline-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[TimelineSample]:
        """Stop the thread and take a last sample; returns every sample in time order."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, 2 * self.interval_s))
            self._thread = None
        self.sample_once()
        if self.failures:
            self.logger.warning("timeline: %d reads failed over %d samples", self.failures, len(self.samples))
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)

    def __enter__(self) -> TimelineSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
