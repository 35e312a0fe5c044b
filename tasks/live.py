"""Before anything changes: which version, if any, serves the spec's host and path right now.

Nearly every run after the first replaces a model that serves real traffic, so the deploy first looks at what the
cluster already routes: the **main** Ingress of the spec's class for the spec's host and path (ingress-nginx routes
a host/path by its non-canary Ingress; an Ingress annotated ``nginx.ingress.kubernetes.io/canary: "true"`` only
takes a share of it, ``internal/ingress/annotations/canary/main.go``), its backend Service, and the arena labels
``servingName``/``servingVersion`` that the chart puts on that Service (``charts/tfserving/templates/service.yaml``).

What the run is follows from it (:func:`classify_run`): no live version, the first deploy; the live version is the
spec's own serving name and version, an idempotent re-run; any other, a replacement of a live model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from clients.kube import KubeClients
from clients.logs import run_logger
from core.spec import CHART_NAME, DeploySpec

CANARY = "nginx.ingress.kubernetes.io/canary"
NODEPOOL_LABEL = "alibabacloud.com/nodepool-id"  # set on every node of an ACK node pool
LEGACY_CLASS = "kubernetes.io/ingress.class"

RunKind = Literal["first-deploy", "re-run", "replace-live"]


class LiveVersion(BaseModel):
    """What serves the spec's host and path, as the cluster says."""

    ingress: str
    service: str
    port: int | str
    serving_name: str | None = None
    serving_version: str | None = None

    def __str__(self) -> str:
        who = f"{self.serving_name}/{self.serving_version}" if self.serving_version else "an unlabelled Service"
        return f"{who} (Ingress {self.ingress} -> Service {self.service}:{self.port})"


_ATOI = re.compile(r"[+-]?[0-9]+")  # Go's strconv.Atoi (Python's int() also takes " 30" and "3_0")


def go_atoi(value: str | None, default: int) -> int:
    """An integer annotation as ingress-nginx reads it (``parser.GetIntAnnotation``: ``strconv.Atoi``), else
    ``default``."""
    return int(value) if value is not None and _ATOI.fullmatch(value) else default


def sls_route(namespace: str, service: str, port: int | str) -> str:
    """The SLS route of a Service behind the ingress: ingress-nginx's upstream name ``<namespace>-<service>-<port>``
    (``proxy_upstream_name``), what the metrics adapter's ``sls.ingress.route`` selects."""
    return f"{namespace}-{service}-{port}"


def is_canary(ingress: dict[str, Any]) -> bool:
    """Whether ingress-nginx reads the canary annotation as true: ``parser.GetBoolAnnotation`` parses it with
    Go's ``strconv.ParseBool`` (``internal/ingress/annotations/parser/main.go``), which takes "1", "t", "T",
    "TRUE", "true" and "True"."""
    value = (((ingress.get("metadata") or {}).get("annotations")) or {}).get(CANARY)
    return value in ("true", "True", "TRUE", "t", "T", "1")


def ingress_class(ingress: dict[str, Any]) -> str | None:
    """The Ingress's class: ``spec.ingressClassName``, else the legacy ``kubernetes.io/ingress.class`` annotation."""
    spec = ingress.get("spec") or {}
    return spec.get("ingressClassName") or (((ingress.get("metadata") or {}).get("annotations")) or {}).get(
        LEGACY_CLASS
    )


def path_entries(ingress: dict[str, Any], host: str, path: str) -> Iterator[dict[str, Any]]:
    """The path entries of ``ingress`` for ``host`` + ``path`` (a path left out is "/"): the one walk of an
    Ingress's rules that every reader and writer of a serving's route goes through."""
    for rule in (ingress.get("spec") or {}).get("rules") or []:
        if (rule.get("host") or "") != host:
            continue
        for entry in (rule.get("http") or {}).get("paths") or []:
            if (entry.get("path") or "/") == path:
                yield entry


def backend_of(entry: dict[str, Any]) -> tuple[str, int | str] | None:
    """(Service name, port number or name) a path entry sends to, or None when it names no Service."""
    svc = (entry.get("backend") or {}).get("service") or {}
    if not svc.get("name"):
        return None
    port = svc.get("port") or {}
    return svc["name"], port.get("number") or port.get("name") or ""


def serving_backend(
    ingresses: list[dict[str, Any]], class_name: str, host: str, path: str
) -> tuple[str, str, int | str] | None:
    """(Ingress name, Service name, port number or name) of the main Ingress routing ``host`` + ``path``, or
    None. Canary Ingresses are passed over; of several main ones, the oldest wins, as ingress-nginx keeps the
    first Ingress it sorted by creation time for a host/path (``store.ListIngresses`` sorts by
    creationTimestamp)."""
    main = [i for i in ingresses if not is_canary(i) and ingress_class(i) == class_name]
    main.sort(key=lambda i: ((i.get("metadata") or {}).get("creationTimestamp") or "",
                             (i.get("metadata") or {}).get("name") or ""))
    for ing in main:
        for entry in path_entries(ing, host, path):
            if backend := backend_of(entry):
                return ing["metadata"]["name"], *backend
    return None


def classify_run(spec: DeploySpec, live: LiveVersion | None) -> RunKind:
    """First deploy, idempotent re-run of the live version, or a replacement of a live model."""
    if live is None:
        return "first-deploy"
    if live.serving_name == spec.serving.name and live.serving_version == spec.serving.version:
        return "re-run"
    return "replace-live"


# --- the one reader of a serving's state on the cluster --------------------------------------------------------
# Every part of the tool that asks "what routes this host and path" or "which releases does this serving have"
# reads through these two functions: one Ingress walk (serving_backend / path_entries), one selector.
def main_backend(kube: KubeClients, spec: DeploySpec) -> tuple[str, str, int | str] | None:
    """(Ingress, Service, port) the spec's host and path are routed to now (:func:`serving_backend` over the
    namespace's Ingresses)."""
    ingresses = kube.list("Ingress", spec.names.namespace).get("items") or []
    return serving_backend(ingresses, spec.ingress.class_name, spec.ingress.host, spec.ingress.path)


def release_selector(spec: DeploySpec) -> str:
    """The label selector of the serving's releases: arena's ``servingName`` and ``app`` labels, whoever rendered
    them (this tool's carry ``heritage=elastic-inference`` as well, tasks/serving.py)."""
    return f"servingName={spec.serving.name},app={CHART_NAME}"


def serving_releases(kube: KubeClients, spec: DeploySpec) -> list[dict[str, Any]]:
    """The Deployments of the spec's serving (:func:`release_selector`), oldest first."""
    items = kube.list("Deployment", spec.names.namespace, label_selector=release_selector(spec)).get("items") or []
    return sorted(items, key=lambda d: ((d.get("metadata") or {}).get("creationTimestamp") or "",
                                        (d.get("metadata") or {}).get("name") or ""))


@task(name="live-version", cache_policy=NO_CACHE)
def find_live_version(kube: KubeClients, spec: DeploySpec) -> LiveVersion | None:
    """Read the spec namespace's Ingresses and the live backend Service; log what serves the host and path."""
    ns = spec.names.namespace
    ing = spec.ingress
    backend = main_backend(kube, spec)
    logger = run_logger()
    if backend is None:
        logger.info("no live version serves %s%s: first deploy", ing.host, ing.path)
        return None
    ingress_name, service_name, port = backend
    labels = ((kube.get("Service", service_name, ns) or {}).get("metadata") or {}).get("labels") or {}
    live = LiveVersion(ingress=ingress_name, service=service_name, port=port,
                       serving_name=labels.get("servingName"), serving_version=labels.get("servingVersion"))
    logger.info("live version at %s%s: %s; this run: %s", ing.host, ing.path, live, classify_run(spec, live))
    return live


class LiveUsage(BaseModel):
    """What the live version serves with, read from the cluster: its Ingress, the HPA that scales its
    Deployment, the claims its pods mount with their volumes and the Secrets those reference, and the node
    pools its pods run on."""

    ingress: str
    hpas: set[str] = set()
    pvcs: set[str] = set()
    pvs: set[str] = set()
    secrets: set[str] = set()
    nodepool_ids: set[str] = set()

    def uses(self, kind: str, name: str) -> bool:
        return name in {
            "Ingress": {self.ingress},
            "HorizontalPodAutoscaler": self.hpas,
            "PersistentVolumeClaim": self.pvcs,
            "PersistentVolume": self.pvs,
            "Secret": self.secrets,
        }.get(kind, set())


@task(name="live-usage", cache_policy=NO_CACHE)
def live_usage(kube: KubeClients, spec: DeploySpec, live: LiveVersion) -> LiveUsage:
    """Follow the live Service to its pods, their volumes and nodes, and the HPA aimed at its Deployment
    (arena names the Deployment and the Service alike, ``<release>-tensorflow-serving``)."""
    ns = spec.names.namespace
    usage = LiveUsage(ingress=live.ingress)
    service = kube.get("Service", live.service, ns) or {}
    selector = (service.get("spec") or {}).get("selector") or {}
    pods = (kube.list("Pod", ns, label_selector=",".join(f"{k}={v}" for k, v in selector.items())).get("items")
            or []) if selector else []
    nodes = {p.get("spec", {}).get("nodeName") for p in pods} - {None, ""}
    for node in nodes:
        pool = ((kube.get("Node", node) or {}).get("metadata", {}).get("labels") or {}).get(NODEPOOL_LABEL)
        if pool:
            usage.nodepool_ids.add(pool)
    for pod in pods:
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                usage.pvcs.add(claim)
    for claim in usage.pvcs:
        pv_name = ((kube.get("PersistentVolumeClaim", claim, ns) or {}).get("spec") or {}).get("volumeName")
        if pv_name:
            usage.pvs.add(pv_name)
            csi = ((kube.get("PersistentVolume", pv_name) or {}).get("spec") or {}).get("csi") or {}
            ref = csi.get("nodePublishSecretRef") or {}
            if ref.get("name") and ref.get("namespace", ns) == ns:
                usage.secrets.add(ref["name"])
    for hpa in kube.list("HorizontalPodAutoscaler", ns).get("items") or []:
        if ((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == live.service:
            usage.hpas.add(hpa["metadata"]["name"])
    return usage
