"""A new version next to the live one, the way ACK's nginx ingress does canaries: the objects, rendered and applied.

ingress-nginx (``internal/ingress/annotations/canary/main.go``; ACK's "Use the NGINX Ingress controller to
implement canary releases and blue-green deployments") takes a second Ingress on the same host and path, annotated
``nginx.ingress.kubernetes.io/canary: "true"``, as an *alternative backend* of the main one:

- ``canary-by-header`` + ``canary-by-header-value``: a request whose header has that value goes to the canary
  (what the isolated stress test and the analysis send: header ``rollout.header``, value the serving version);
- ``canary-weight``: that percentage of the other requests goes to the canary (the users' share of a step).

The per-version HPA. Each version owns its HPA (``<release>-hpa``), but on ACK a canary's requests are logged in
SLS under the **main** route (``proxy_upstream_name`` stays the main Service's; only
``proxy_alternative_upstream_name`` names the canary: ingress-nginx ``balancer.lua`` and its log-format docs), and
alibaba-cloud-metrics-adapter selects ``sls_ingress_qps`` by ``proxy_upstream_name`` only
(``pkg/metrics/sls/ingress.go``). An HPA on the canary's own route would read 0 and never scale. So while it is a
canary, its HPA reads the **main** route, the users' total, with a target raised by the share the canary gets:
``averageValue = target_qps * 100 / share`` gives ``ceil(total * share / 100 / target_qps)`` replicas, the canary's
part of the load. During the isolated stress test the share is 100 (the stress load is counted on the main route
too). At promotion the HPA is re-rendered on its own route, which is then the main one. (The stable version's HPA
also sees the stress traffic on the main route and may scale out for it: more capacity, never less.)
"""

from __future__ import annotations

import copy
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from clients.kube import KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import IngressEndpoint, render_ingress
from tasks.live import go_atoi

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
WEIGHT = PREFIX + "canary-weight"


def canary_headers(spec: DeploySpec) -> dict[str, str]:
    """The header that sends a request to the new version whatever the weight."""
    return {spec.rollout.header: str(spec.serving.version)}


def canary_endpoint(endpoint: IngressEndpoint, spec: DeploySpec) -> IngressEndpoint:
    """The production address, with the header that selects the new version."""
    return endpoint.model_copy(update={"headers": canary_headers(spec)})


def render_canary_ingress(spec: DeploySpec, weight: int) -> dict[str, Any]:
    """The canary Ingress: the main rule for the new version's Service, selected by header and ``weight`` %."""
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight {weight} is not a percentage")
    obj = render_ingress(spec)
    obj["metadata"]["name"] = spec.names.canary_ingress
    obj["metadata"]["labels"]["servingVersion"] = str(spec.serving.version)
    obj["metadata"]["annotations"] = {
        CANARY: "true",
        BY_HEADER: spec.rollout.header,
        BY_HEADER_VALUE: str(spec.serving.version),
        WEIGHT: str(weight),
    }
    return obj


def canary_weight(ingress: dict[str, Any] | None) -> int | None:
    """The weight a canary Ingress gives, as ingress-nginx parses it (an integer; anything else is 0)."""
    if ingress is None:
        return None
    return go_atoi(((ingress.get("metadata") or {}).get("annotations") or {}).get(WEIGHT), 0)


def milli_quantity(value: float) -> str:
    """A Kubernetes quantity in thousandths (``83333m``): exact enough for a raised HPA target."""
    return f"{round(value * 1000)}m"


def render_canary_hpa(spec: DeploySpec, main_route: str, share: int, min_replicas: int | None = None) -> dict[str, Any]:
    """The new version's HPA while it is a canary: the main route's QPS, target raised by 100/``share``; with
    ``min_replicas``, at least that many (the capacity its share needs: tasks/capacity.py), within the spec's
    maximum."""
    if not 1 <= share <= 100:
        raise ValueError(f"canary share {share} is not a percentage above 0")
    obj = render_hpa(spec)
    if min_replicas is not None:
        obj["spec"]["minReplicas"] = max(obj["spec"]["minReplicas"], min(min_replicas, obj["spec"]["maxReplicas"]))
    metric = obj["spec"]["metrics"][0]["external"]
    metric["metric"]["selector"]["matchLabels"]["sls.ingress.route"] = main_route
    metric["target"]["averageValue"] = milli_quantity(spec.autoscaling.target_qps * 100 / share)
    return obj


def with_backend(ingress: dict[str, Any], host: str, path: str, service: str, port: int | str) -> dict[str, Any]:
    """A copy of a main Ingress whose rule for ``host`` + ``path`` sends to ``service:port`` (other rules as
    they were). Raises when the Ingress has no such rule."""
    out = copy.deepcopy(ingress)
    found = False
    for rule in (out.get("spec") or {}).get("rules") or []:
        if (rule.get("host") or "") != host:
            continue
        for p in (rule.get("http") or {}).get("paths") or []:
            if (p.get("path") or "/") == path:
                port_ref = {"number": port} if isinstance(port, int) else {"name": port}
                p["backend"] = {"service": {"name": service, "port": port_ref}}
                found = True
    if not found:
        raise ValueError(f"Ingress {out['metadata']['name']} has no rule for {host}{path}")
    return out


@task(name="canary-ingress", cache_policy=NO_CACHE)
def set_canary(kube: KubeClients, spec: DeploySpec, weight: int) -> None:
    """Apply the canary Ingress at ``weight`` % and wait until the controller has taken it (it publishes the
    address on every Ingress it serves)."""
    kube.apply(render_canary_ingress(spec, weight))
    kube.wait_for("Ingress", spec.names.canary_ingress, spec.names.namespace,
                  lambda o: bool(((o.get("status") or {}).get("loadBalancer") or {}).get("ingress")), 300,
                  what="be taken by the ingress controller")
    run_logger().info("canary %s: %d%% of user traffic, and every request with %s", spec.serving.version, weight,
                      ", ".join(f"{k}: {v}" for k, v in canary_headers(spec).items()))


@task(name="canary-hpa", cache_policy=NO_CACHE)
def set_canary_hpa(kube: KubeClients, spec: DeploySpec, main_route: str, share: int,
                   min_replicas: int | None = None) -> None:
    kube.apply(render_canary_hpa(spec, main_route, share, min_replicas))
