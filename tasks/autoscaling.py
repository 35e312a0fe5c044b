"""Step 5: the HorizontalPodAutoscaler on the SLS ingress QPS external metric, in ``autoscaling/v2``.

The seed's HPA is ``autoscaling/v2beta1`` (``metricName``, ``metricSelector``, ``targetAverageValue``), an API
that Kubernetes removed in 1.25 (kubernetes.io "Deprecated API Migration Guide"). In ``autoscaling/v2`` the same
metric reads ``external: {metric: {name, selector}, target: {type: AverageValue, averageValue}}``.

The metric is served by alibaba-cloud-metrics-adapter (APIService ``v1beta1.external.metrics.k8s.io``); its SLS
selector labels are ``sls.project`` (``k8s-log-<cluster id>``), ``sls.logstore`` and ``sls.ingress.route``
(``<namespace>-<service>-<port>``), from ``pkg/metrics/sls/sls.go`` of that repository. All three come from
``spec.names``, the same place the Ingress and the Service take theirs.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from clients.kube import ApplyResult, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec


def metric_selector(spec: DeploySpec) -> dict[str, str]:
    names = spec.names
    if not names.sls_project:
        raise ValueError(
            "the HPA's sls.project label needs the ACK cluster id (k8s-log-<cluster id>): set cluster_id or "
            "render with spec.with_cluster(cluster_id)"
        )
    return {
        "sls.project": names.sls_project,
        "sls.logstore": names.sls_logstore,
        "sls.ingress.route": names.sls_route,
    }


def render_hpa(spec: DeploySpec) -> dict[str, Any]:
    names = spec.names
    a = spec.autoscaling
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment},
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": a.metric_name, "selector": {"matchLabels": metric_selector(spec)}},
                    "target": {"type": "AverageValue", "averageValue": str(a.target_qps)},
                },
            }
        ],
    }
    if a.behavior:
        hpa_spec["behavior"] = a.behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": names.hpa,
            "namespace": names.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "elastic-inference",
                "servingName": spec.serving.name,
                "release": names.release,
            },
        },
        "spec": hpa_spec,
    }


@task(name="autoscaling", cache_policy=NO_CACHE)
def apply_autoscaling(kube: KubeClients, spec: DeploySpec) -> ApplyResult:
    """Apply the HPA. Nothing to wait for: it acts as soon as the external metric answers.

    Two HPAs on one Deployment fight (the HPA controller refuses both: ``AmbiguousSelector``), so another HPA of
    this tool aimed at the same Deployment (one named ``<serving name>-hpa``, before each version had its own) is
    removed first."""
    names = spec.names
    for other in kube.list("HorizontalPodAutoscaler", names.namespace,
                           label_selector=f"app.kubernetes.io/managed-by=elastic-inference,servingName={spec.serving.name}"
                           ).get("items") or []:
        if other["metadata"]["name"] != names.hpa and \
                ((other.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == names.deployment:
            kube.delete("HorizontalPodAutoscaler", other["metadata"]["name"], names.namespace)
    result = kube.apply(render_hpa(spec))
    run_logger().info(
        "HPA %s/%s targets Deployment %s", spec.names.namespace, spec.names.hpa, spec.names.deployment
    )
    return result
