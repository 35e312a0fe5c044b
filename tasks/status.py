"""What a serving looks like right now: the live version, the canary and its weight, every version's replicas and
HPA, and the users' QPS. Read only; nothing here writes to the cluster.

Where each fact comes from:

* **live**: the main (non-canary) Ingress of the spec's class for its host and path, and the Service it routes to
  (:func:`tasks.live.serving_backend`); the version is that Service's ``servingVersion`` label.
* **canary**: any Ingress of the same class, host and path that ingress-nginx reads as a canary
  (:func:`tasks.live.is_canary`), whatever its name; its Service's ``servingVersion``, and its annotations
  ``canary-weight``, ``canary-weight-total``, ``canary-by-header``, ``canary-by-header-value`` and
  ``canary-by-cookie`` (``internal/ingress/annotations/canary/main.go``: the weights are ``strconv.Atoi``
  integers, missing or invalid -> weight 0, total 100; ``balancer.lua`` uses the total only above 100).
  "Currently a maximum of one canary ingress can be applied per Ingress rule" (ingress-nginx
  ``docs/user-guide/nginx-configuration/annotations.md#canary``): with several, the status says so.
* **versions**: the serving's Deployments (labels ``servingName`` and ``app=tensorflow-serving``, what arena's chart
  sets), their ``spec.replicas`` and ``status.readyReplicas``; the HPA of each is the one whose
  ``spec.scaleTargetRef`` names the Deployment (per-version HPAs are named by release, older ones by serving).
* **traffic**: ``sls_ingress_qps`` of the main route ``<namespace>-<service>-<port>`` from the external metrics
  API, read as the HPA controller reads it (:func:`tasks.timeline.read_external_metric`). ACK's ingress logs a
  request a canary served under the main route's ``proxy_upstream_name`` (only
  ``proxy_alternative_upstream_name`` names the canary) and alibaba-cloud-metrics-adapter selects by
  ``proxy_upstream_name``, so SLS gives the total of both versions, not a per-version figure: the status shows
  that total and the canary's configured weight, and says so.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.live import (
    LiveVersion,
    backend_of,
    go_atoi,
    ingress_class,
    is_canary,
    path_entries,
    serving_backend,
    serving_releases,
    sls_route,
)
from tasks.rollout.canary import BY_HEADER, BY_HEADER_VALUE, WEIGHT
from tasks.timeline import read_external_metric

QPS_METRIC = "sls_ingress_qps"
WEIGHT_TOTAL = WEIGHT + "-total"
BY_COOKIE = "nginx.ingress.kubernetes.io/canary-by-cookie"
DEFAULT_WEIGHT_TOTAL = 100

Role = Literal["live", "canary", "retired"]


class CanaryStatus(BaseModel):
    """A canary Ingress on the spec's host and path, as ingress-nginx reads its annotations."""

    ingress: str
    service: str
    port: int | str
    version: str | None = None
    weight: int = 0
    weight_total: int = DEFAULT_WEIGHT_TOTAL
    header: str | None = None
    header_value: str | None = None
    cookie: str | None = None

    @property
    def percent(self) -> float:
        """The share of requests without the header or cookie that the canary gets, in percent."""
        return 100.0 * max(0, min(self.weight, self.weight_total)) / self.weight_total


class HpaStatus(BaseModel):
    name: str
    min_replicas: int | None = None
    max_replicas: int | None = None
    current_replicas: int | None = None
    desired_replicas: int | None = None


class VersionStatus(BaseModel):
    """One release of the serving: its Deployment, replicas and HPA, and what it does for the users."""

    version: str
    deployment: str
    role: Role
    desired_replicas: int
    ready_replicas: int
    hpa: HpaStatus | None = None
    created: str = ""


class ServiceStatus(BaseModel):
    serving_name: str
    namespace: str
    host: str
    path: str
    class_name: str
    live: LiveVersion | None = None
    canary: CanaryStatus | None = None
    versions: list[VersionStatus] = Field(default_factory=list)
    route: str | None = Field(default=None, description="The main route's SLS name, <namespace>-<service>-<port>")
    qps: float | None = Field(default=None, description="sls_ingress_qps of the main route: both versions' total")
    qps_error: str | None = None
    notes: list[str] = Field(default_factory=list)


# --- pure ---------------------------------------------------------------------------------------------------------
def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def canary_ingresses(
    ingresses: list[dict[str, Any]], class_name: str, host: str, path: str
) -> list[tuple[dict[str, Any], str, int | str]]:
    """(Ingress, Service, port) of every canary Ingress of the class for ``host`` + ``path``, oldest first."""
    found = []
    for ing in ingresses:
        if not is_canary(ing) or ingress_class(ing) != class_name:
            continue
        found += [(ing, *backend) for entry in path_entries(ing, host, path) if (backend := backend_of(entry))]
    found.sort(key=lambda f: (_meta(f[0]).get("creationTimestamp") or "", _meta(f[0]).get("name") or ""))
    return found


def canary_of(ingress: dict[str, Any], service: str, port: int | str, version: str | None) -> CanaryStatus:
    ann = _annotations(ingress)
    total = go_atoi(ann.get(WEIGHT_TOTAL), DEFAULT_WEIGHT_TOTAL)
    return CanaryStatus(
        ingress=_meta(ingress)["name"], service=service, port=port, version=version,
        weight=go_atoi(ann.get(WEIGHT), 0), weight_total=total if total > DEFAULT_WEIGHT_TOTAL else DEFAULT_WEIGHT_TOTAL,
        header=ann.get(BY_HEADER) or None, header_value=ann.get(BY_HEADER_VALUE) or None,
        cookie=ann.get(BY_COOKIE) or None,
    )


def hpa_of(hpa: dict[str, Any]) -> HpaStatus:
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    return HpaStatus(name=_meta(hpa)["name"], min_replicas=spec.get("minReplicas"),
                     max_replicas=spec.get("maxReplicas"), current_replicas=status.get("currentReplicas"),
                     desired_replicas=status.get("desiredReplicas"))


def assemble_status(
    spec: DeploySpec,
    ingresses: list[dict[str, Any]],
    services: list[dict[str, Any]],
    deployments: list[dict[str, Any]],
    hpas: list[dict[str, Any]],
) -> ServiceStatus:
    """The status from the namespace's objects as listed (QPS not included: it needs the live route first)."""
    ns, ing = spec.names.namespace, spec.ingress
    out = ServiceStatus(serving_name=spec.serving.name, namespace=ns, host=ing.host, path=ing.path,
                        class_name=ing.class_name)
    labels = {_meta(s).get("name"): _meta(s).get("labels") or {} for s in services}

    backend = serving_backend(ingresses, ing.class_name, ing.host, ing.path)
    if backend is not None:
        name, service, port = backend
        svc = labels.get(service, {})
        out.live = LiveVersion(ingress=name, service=service, port=port, serving_name=svc.get("servingName"),
                               serving_version=svc.get("servingVersion"))
        out.route = sls_route(ns, service, port)
        if service not in labels:
            out.notes.append(f"the main Ingress {name} routes to Service {service}, which does not exist")

    canaries = canary_ingresses(ingresses, ing.class_name, ing.host, ing.path)
    if canaries:
        first, service, port = canaries[0]
        out.canary = canary_of(first, service, port, labels.get(service, {}).get("servingVersion"))
        if len(canaries) > 1:
            out.notes.append(f"{len(canaries)} canary Ingresses for {ing.host}{ing.path} "
                             f"({', '.join(_meta(c[0])['name'] for c in canaries)}); ingress-nginx applies one "
                             "canary per rule")
        if service not in labels:
            out.notes.append(f"the canary Ingress {out.canary.ingress} routes to Service {service}, which does "
                             "not exist")
        if out.live is None:
            out.notes.append(f"a canary Ingress ({out.canary.ingress}) but no main Ingress: the canary serves "
                             "nothing")

    by_target: dict[str, list[dict[str, Any]]] = {}
    for h in hpas:
        ref = (h.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind", "Deployment") == "Deployment" and ref.get("name"):
            by_target.setdefault(ref["name"], []).append(h)
    live_svc = out.live.service if out.live else None
    canary_svc = out.canary.service if out.canary else None
    for d in sorted(deployments, key=lambda d: (_meta(d).get("creationTimestamp") or "", _meta(d).get("name"))):
        meta, dspec, dstatus = _meta(d), d.get("spec") or {}, d.get("status") or {}
        name = meta["name"]
        # arena names a release's Deployment and Service alike (<release>-tensorflow-serving)
        role: Role = "live" if name == live_svc else "canary" if name == canary_svc else "retired"
        targeting = by_target.get(name, [])
        if len(targeting) > 1:
            out.notes.append(f"{len(targeting)} HPAs target Deployment {name} "
                             f"({', '.join(_meta(h)['name'] for h in targeting)}): the HPA controller refuses both "
                             "(AmbiguousSelector)")
        out.versions.append(VersionStatus(
            version=(meta.get("labels") or {}).get("servingVersion", ""), deployment=name, role=role,
            desired_replicas=int(dspec.get("replicas", 1) or 0), ready_replicas=int(dstatus.get("readyReplicas") or 0),
            hpa=hpa_of(targeting[0]) if targeting else None, created=meta.get("creationTimestamp") or "",
        ))
    names = {v.deployment for v in out.versions}
    for role, svc in (("live", live_svc), ("canary", canary_svc)):
        if svc and svc not in names:
            out.notes.append(f"the {role} Service {svc} has no Deployment of serving {spec.serving.name} "
                             "of that name")
    return out


def _replicas(v: VersionStatus) -> str:
    return f"{v.ready_replicas}/{v.desired_replicas} ready"


def _hpa(h: HpaStatus | None) -> str:
    if h is None:
        return "no HPA"
    current = "-" if h.current_replicas is None else h.current_replicas
    desired = "-" if h.desired_replicas is None else h.desired_replicas
    return f"HPA {h.name} min {h.min_replicas} max {h.max_replicas} current {current} desired {desired}"


def _canary_rules(c: CanaryStatus) -> str:
    rules = [f"weight {c.weight}/{c.weight_total} ({c.percent:g}% of user requests)"]
    if c.header:
        rules.append(f"every request with {c.header}: {c.header_value}" if c.header_value
                     else f"requests with {c.header}: always")
    if c.cookie:
        rules.append(f"cookie {c.cookie}=always")
    return ", ".join(rules)


def traffic_line(status: ServiceStatus) -> str:
    if status.route is None:
        return "traffic: no main route (nothing serves the host and path)"
    if status.qps is None:
        return f"traffic: {QPS_METRIC} of route {status.route} unavailable: {status.qps_error or 'no value'}"
    line = f"traffic: {status.qps:g} req/s on route {status.route} ({QPS_METRIC})"
    if status.canary is not None:
        line += (f"; the total of both versions: SLS logs canary requests under the main route, so there is no "
                 f"per-version figure (the canary's weight is {status.canary.percent:g}% of user requests)")
    return line


def render_status_lines(status: ServiceStatus) -> list[str]:
    """The status as plain lines for a terminal or a log."""
    s = status
    lines = [f"serving {s.serving_name} in namespace {s.namespace}: {s.host}{s.path} (IngressClass {s.class_name})"]
    if s.live is None:
        lines.append("live: none (no main Ingress routes the host and path)")
    else:
        lines.append(f"live: {s.live.serving_version or '(unlabelled)'} (Ingress {s.live.ingress} -> Service "
                     f"{s.live.service}:{s.live.port})")
    if s.canary is None:
        lines.append("canary: none")
    else:
        c = s.canary
        lines.append(f"canary: {c.version or '(unlabelled)'} (Ingress {c.ingress} -> Service {c.service}:{c.port}), "
                     f"{_canary_rules(c)}")
    lines.append(traffic_line(s))
    if not s.versions:
        lines.append(f"versions: none (no Deployment of serving {s.serving_name})")
    else:
        lines.append("versions:")
        rows = [(v.version or "(unlabelled)", v.role, v.deployment, _replicas(v), _hpa(v.hpa)) for v in s.versions]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["  " + "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    lines += [f"note: {n}" for n in s.notes]
    return lines


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def render_status_markdown(status: ServiceStatus) -> str:
    """The status as markdown (the flow's ``status`` artifact): the summary lines, then a table of versions."""
    s = status
    head = render_status_lines(s)
    out = [f"# {_cell(s.serving_name)}", ""]
    out += [f"- {_cell(line)}" for line in head[1:] if not line.startswith("versions") and not line.startswith("  ")]
    out += ["", "| version | role | Deployment | ready / desired | HPA | min | max | current |",
            "|---|---|---|---|---|---|---|---|"]
    for v in s.versions:
        h = v.hpa
        out.append("| " + " | ".join(_cell(x) for x in (
            v.version, v.role, v.deployment, f"{v.ready_replicas} / {v.desired_replicas}",
            h.name if h else "-", h.min_replicas if h else "-", h.max_replicas if h else "-",
            "-" if h is None or h.current_replicas is None else h.current_replicas)) + " |")
    return "\n".join(out) + "\n"


# --- the task -----------------------------------------------------------------------------------------------------
def qps_selector(spec: DeploySpec, route: str) -> dict[str, str]:
    """The labels alibaba-cloud-metrics-adapter selects an SLS ingress metric by (as tasks.autoscaling's)."""
    names = spec.names
    return {"sls.project": names.sls_project or "", "sls.logstore": names.sls_logstore, "sls.ingress.route": route}


@task(name="status", cache_policy=NO_CACHE)
def read_status(kube: KubeClients, spec: DeploySpec) -> ServiceStatus:
    """Read the namespace's Ingresses, Services, the serving's Deployments and the HPAs, then the main route's
    QPS. A failed metric read is reported in the status (``qps_error``), not raised: the rest still holds."""
    ns = spec.names.namespace
    status = assemble_status(
        spec,
        kube.list("Ingress", ns).get("items") or [],
        kube.list("Service", ns).get("items") or [],
        serving_releases(kube, spec),
        kube.list("HorizontalPodAutoscaler", ns).get("items") or [],
    )
    if status.route is not None:
        if not spec.names.sls_project:
            status.qps_error = "no cluster id, so no SLS project (k8s-log-<cluster id>)"
        else:
            try:
                status.qps = read_external_metric(kube, ns, QPS_METRIC, qps_selector(spec, status.route))
                if status.qps is None:
                    status.qps_error = "the external metrics API answered with no value"
            except KubeApiError as exc:
                status.qps_error = str(exc)[:300]
    run_logger().info("status of %s: live %s, canary %s, %d versions", spec.serving.name,
                      status.live.serving_version if status.live else None,
                      status.canary.version if status.canary else None, len(status.versions))
    return status
