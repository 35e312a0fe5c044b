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

from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from clients.kube import KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec

CANARY = "nginx.ingress.kubernetes.io/canary"
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


def is_canary(ingress: dict[str, Any]) -> bool:
    """Whether ingress-nginx reads the canary annotation as true: ``parser.GetBoolAnnotation`` parses it with
    Go's ``strconv.ParseBool`` (``internal/ingress/annotations/parser/main.go``), which takes "1", "t", "T",
    "TRUE", "true" and "True"."""
    value = (((ingress.get("metadata") or {}).get("annotations")) or {}).get(CANARY)
    return value in ("true", "True", "TRUE", "t", "T", "1")


def _class_of(ingress: dict[str, Any]) -> str | None:
    spec = ingress.get("spec") or {}
    return spec.get("ingressClassName") or (((ingress.get("metadata") or {}).get("annotations")) or {}).get(
        LEGACY_CLASS
    )


def serving_backend(
    ingresses: list[dict[str, Any]], class_name: str, host: str, path: str
) -> tuple[str, str, int | str] | None:
    """(Ingress name, Service name, port number or name) of the main Ingress routing ``host`` + ``path``, or
    None. Canary Ingresses are passed over; of several main ones, the oldest wins, as ingress-nginx keeps the
    first Ingress it sorted by creation time for a host/path (``store.ListIngresses`` sorts by
    creationTimestamp)."""
    main = [i for i in ingresses if not is_canary(i) and _class_of(i) == class_name]
    main.sort(key=lambda i: ((i.get("metadata") or {}).get("creationTimestamp") or "",
                             (i.get("metadata") or {}).get("name") or ""))
    for ing in main:
        for rule in (ing.get("spec") or {}).get("rules") or []:
            if (rule.get("host") or "") != host:
                continue
            for p in (rule.get("http") or {}).get("paths") or []:
                if (p.get("path") or "/") != path:
                    continue
                svc = (p.get("backend") or {}).get("service") or {}
                port = svc.get("port") or {}
                if svc.get("name"):
                    return ing["metadata"]["name"], svc["name"], port.get("number") or port.get("name") or ""
    return None


def classify_run(spec: DeploySpec, live: LiveVersion | None) -> RunKind:
    """First deploy, idempotent re-run of the live version, or a replacement of a live model."""
    if live is None:
        return "first-deploy"
    if live.serving_name == spec.serving.name and live.serving_version == spec.serving.version:
        return "re-run"
    return "replace-live"


@task(name="live-version", cache_policy=NO_CACHE)
def find_live_version(kube: KubeClients, spec: DeploySpec) -> LiveVersion | None:
    """Read the spec namespace's Ingresses and the live backend Service; log what serves the host and path."""
    ns = spec.names.namespace
    ing = spec.ingress
    items = kube.list("Ingress", ns).get("items") or []
    backend = serving_backend(items, ing.class_name, ing.host, ing.path)
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
