"""A new version next to the live one, the way ACK's nginx ingress does canaries: the objects, rendered and applied.

ingress-nginx (``internal/ingress/annotations/canary/main.go``; ACK's "Use the NGINX Ingress controller to
implement canary releases and blue-green deployments") takes a second Ingress on the same host and path, annotated
``nginx.ingress.kubernetes.io/canary: "true"``, as an *alternative backend* of the main one:

- ``canary-by-header`` + ``canary-by-header-value``: a request whose header has that value goes to the canary
  (what the isolated stress test and the analysis send: header ``rollout.header``, value the serving version);
- ``canary-weight``: that percentage of the other requests goes to the canary (the users' share of a step).

**The canary is the live Ingress's twin.** ingress-nginx merges a canary into a main location only when host, path
and pathType are the same (``internal/ingress/controller/controller.go`` ``mergeAlternativeBackends``: ``loc.Path ==
path.Path && *loc.PathType == *path.PathType``); otherwise it logs "unable to find real backend for alternative
backend ... Deleting." and every request, the canary header's included, goes to the main backend. So the canary is
not rendered from the spec but derived from the **live** main Ingress, as Flagger's nginx router does
(fluxcd/flagger ``pkg/router/ingress.go`` ``IngressRouter.Reconcile``: a deep copy of the apex Ingress with the
backend swapped; ``makeAnnotations``: its annotations without the canary ones and
``kubectl.kubernetes.io/last-applied-configuration``): its class (``spec.ingressClassName`` or the legacy
annotation), the rule of the spec's host with the live path entry (path and pathType as they are), the TLS entry
of that host, the other annotations. Whether the header then reaches the new release is proven by requests
(:mod:`tasks.rollout.probe`), not by the Ingress's status: the controller writes the status from its own 60 s loop
(``internal/ingress/status/status.go``), whether or not the canary merged.

**The preview Ingress** (the isolated stress test). Through the canary header, the stress test's requests are
logged on the main route and move the live version's HPA. So the isolated stress test goes through an Ingress of
its own, as Argo Rollouts' blue-green ``previewService`` does: an ordinary (non-canary) Ingress on the preview host
(``rollout.preview_host``, default ``preview.<host>``), same class, path, pathType and annotations as the live
Ingress, backend the new release's Service. Its requests are logged under the new release's own route
``<ns>-<new service>-<port>``, which the new release's HPA reads during the test. It is removed before the canary
Ingress is created, and a canary a dead run left for this version is removed before the preview is made: one
upstream per Service, made by the oldest Ingress naming it (``createUpstreams``), is either a canary's (``NoServer``,
so the preview's location is skipped in ``getBackendServers``) or an ordinary one (then the canary's traffic-shaping
policy is never set and its header selects nothing), so the two must never coexist.

The per-version HPA. Each version owns its HPA (``<release>-hpa``), but on ACK a canary's requests are logged in
SLS under the **main** route (``proxy_upstream_name`` stays the main Service's; only
``proxy_alternative_upstream_name`` names the canary: ingress-nginx ``balancer.lua`` and its log-format docs), and
alibaba-cloud-metrics-adapter selects ``sls_ingress_qps`` by ``proxy_upstream_name`` only
(``pkg/metrics/sls/ingress.go``). An HPA on the canary's own route would read 0 and never scale. So while it is a
canary, its HPA reads the **main** route, the users' total, with a target raised by the share the canary gets:
``averageValue = target_qps * 100 / share`` gives ``ceil(total * share / 100 / target_qps)`` replicas, the canary's
part of the load. During the isolated stress test it reads its own route, the preview's. At promotion the HPA is
re-rendered on its own route, which is then the main one.
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
from tasks.live import LiveVersion, backend_of, go_atoi, path_entries

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


NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration",)


def copied_annotations(main: dict[str, Any]) -> dict[str, str]:
    """The live Ingress's annotations a twin keeps: all but the canary ones (``nginx.ingress.kubernetes.io/canary*``)
    and ``kubectl.kubernetes.io/last-applied-configuration`` (Flagger's ``makeAnnotations``)."""
    ann = (main.get("metadata") or {}).get("annotations") or {}
    return {k: v for k, v in ann.items() if not k.startswith(CANARY) and k not in NOT_COPIED}


def _live_path(main: dict[str, Any], host: str, path: str) -> dict[str, Any]:
    """The live Ingress's path entry for ``host`` + ``path`` (as :func:`tasks.live.serving_backend` found it)."""
    for entry in path_entries(main, host, path):
        if backend_of(entry):
            return entry
    raise ValueError(f"the live Ingress {main['metadata']['name']} has no rule for {host}{path}")


def _twin(spec: DeploySpec, main: dict[str, Any], name: str, host: str, tls: bool) -> dict[str, Any]:
    """An Ingress with the live one's class, annotations and path entry for the spec's host and path (path and
    pathType as the live one has them), on ``host``, sending to the new release's Service."""
    live = _live_path(main, spec.ingress.host, spec.ingress.path)
    entry = {"path": live.get("path") or "/", "pathType": live.get("pathType") or "ImplementationSpecific",
             "backend": {"service": {"name": spec.names.service, "port": {"number": spec.ingress.service_port}}}}
    obj = render_ingress(spec)
    obj["metadata"]["name"] = name
    obj["metadata"]["labels"]["servingVersion"] = str(spec.serving.version)
    obj["metadata"]["annotations"] = copied_annotations(main)
    main_spec = main.get("spec") or {}
    out: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [entry]}}]}
    if main_spec.get("ingressClassName"):
        out["ingressClassName"] = main_spec["ingressClassName"]
    if tls:
        entries = [copy.deepcopy(t) for t in main_spec.get("tls") or [] if host in (t.get("hosts") or [])]
        if entries:
            out["tls"] = entries
    obj["spec"] = out
    return obj


def render_canary_ingress(spec: DeploySpec, weight: int, main: dict[str, Any]) -> dict[str, Any]:
    """The canary Ingress, derived from the live main Ingress ``main``: its twin for the spec's host and path,
    sending to the new release's Service, selected by header and ``weight`` %."""
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight {weight} is not a percentage")
    obj = _twin(spec, main, spec.names.canary_ingress, spec.ingress.host, tls=True)
    obj["metadata"]["annotations"].update({
        CANARY: "true",
        BY_HEADER: spec.rollout.header,
        BY_HEADER_VALUE: str(spec.serving.version),
        WEIGHT: str(weight),
    })
    return obj


def render_preview_ingress(spec: DeploySpec, main: dict[str, Any]) -> dict[str, Any]:
    """The preview Ingress: the live Ingress's twin on the preview host, an ordinary Ingress of the new release
    (no TLS: the flow speaks HTTP to the ingress address; a certificate for the preview host is the user's)."""
    return _twin(spec, main, spec.names.preview_ingress, spec.names.preview_host, tls=False)


def preview_endpoint(endpoint: IngressEndpoint, spec: DeploySpec) -> IngressEndpoint:
    """The production ingress address with the preview host: the new release alone."""
    return endpoint.model_copy(update={"host": spec.names.preview_host, "headers": {}})


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
    ``min_replicas``, at least that many (the capacity its share needs: tasks/rollout/capacity.py), within the spec's
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
    entries = list(path_entries(out, host, path))
    for entry in entries:
        port_ref = {"number": port} if isinstance(port, int) else {"name": port}
        entry["backend"] = {"service": {"name": service, "port": port_ref}}
    if not entries:
        raise ValueError(f"Ingress {out['metadata']['name']} has no rule for {host}{path}")
    return out


def live_ingress(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> dict[str, Any]:
    """The live main Ingress as the cluster has it now."""
    main = kube.get("Ingress", live.ingress, spec.names.namespace)
    if main is None:
        raise RuntimeError(f"the live Ingress {spec.names.namespace}/{live.ingress} is gone")
    return main


@task(name="canary-ingress", cache_policy=NO_CACHE)
def set_canary(kube: KubeClients, spec: DeploySpec, live: LiveVersion, weight: int) -> None:
    """Apply the canary Ingress, derived from the live one, at ``weight`` %. It is in effect after the
    controller's next sync and reload (seconds), which nothing in the Ingress object tells: the header is proven
    by requests (:func:`tasks.rollout.probe.prove_header`)."""
    kube.apply(render_canary_ingress(spec, weight, live_ingress(kube, spec, live)))
    run_logger().info("canary %s: %d%% of user traffic, and every request with %s", spec.serving.version, weight,
                      ", ".join(f"{k}: {v}" for k, v in canary_headers(spec).items()))


@task(name="preview-ingress", cache_policy=NO_CACHE)
def set_preview(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> None:
    """Apply the preview Ingress (the new release alone on the preview host). Refuses a preview host another
    Ingress of the class already routes (its requests would reach that one, or be counted on its route)."""
    ns = spec.names.namespace
    host = spec.names.preview_host
    for other in kube.list("Ingress", ns).get("items") or []:
        name = (other.get("metadata") or {}).get("name")
        if name == spec.names.preview_ingress:
            continue
        if any((r.get("host") or "") == host for r in (other.get("spec") or {}).get("rules") or []):
            raise RuntimeError(f"rollout.preview_host {host!r} is already routed by Ingress {ns}/{name}: give the "
                               "preview a host of its own (rollout.preview_host)")
    kube.apply(render_preview_ingress(spec, live_ingress(kube, spec, live)))
    run_logger().info("preview %s: Host %s reaches the new release alone", spec.serving.version, host)


def remove_preview(kube: KubeClients, spec: DeploySpec) -> bool:
    """Delete the preview Ingress (and wait until it is gone); True when there was one."""
    return kube.delete("Ingress", spec.names.preview_ingress, spec.names.namespace) == "deleted"


@task(name="canary-hpa", cache_policy=NO_CACHE)
def set_canary_hpa(kube: KubeClients, spec: DeploySpec, main_route: str, share: int,
                   min_replicas: int | None = None) -> None:
    kube.apply(render_canary_hpa(spec, main_route, share, min_replicas))
