"""The versions of one serving after the analysis decided: promote the new one, or remove it; retire and prune.

Every version is an arena release of the same serving name (label ``servingName``): a Deployment and a Service named
``<name>-<version>-tensorflow-serving``, a model-config ConfigMap ``<fullname>-cm`` and an HPA ``<release>-hpa``.
Live services are sacred: nothing here deletes or scales the version the main Ingress routes to, and each function
re-reads the main Ingress before it acts.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec, truncate_name
from tasks.autoscaling import render_hpa
from tasks.canary import with_backend
from tasks.live import LiveVersion, serving_backend
from tasks.serving import HERITAGE

MANAGED_BY = "app.kubernetes.io/managed-by"


class Version(BaseModel):
    """One release of the serving, as its Deployment says."""

    version: str
    deployment: str
    created: str
    replicas: int

    @property
    def release_objects(self) -> list[tuple[str, str]]:
        """(kind, name) of what the release consists of, in deletion order."""
        return [("Service", self.deployment), ("Deployment", self.deployment),
                ("ConfigMap", truncate_name(f"{self.deployment}-cm"))]


def list_versions(kube: KubeClients, spec: DeploySpec) -> list[Version]:
    """The serving's releases rendered by this tool, oldest first."""
    sel = f"servingName={spec.serving.name},heritage={HERITAGE}"
    items = kube.list("Deployment", spec.names.namespace, label_selector=sel).get("items") or []
    out = [Version(version=(d["metadata"].get("labels") or {}).get("servingVersion", ""),
                   deployment=d["metadata"]["name"], created=d["metadata"].get("creationTimestamp") or "",
                   replicas=int((d.get("spec") or {}).get("replicas") or 0)) for d in items]
    return sorted(out, key=lambda v: (v.created, v.deployment))


def routed_service(kube: KubeClients, spec: DeploySpec) -> str | None:
    """The Service the main Ingress sends the spec's host and path to, read now."""
    items = kube.list("Ingress", spec.names.namespace).get("items") or []
    found = serving_backend(items, spec.ingress.class_name, spec.ingress.host, spec.ingress.path)
    return found[1] if found else None


def hpas_targeting(kube: KubeClients, namespace: str, deployment: str) -> list[str]:
    items = kube.list("HorizontalPodAutoscaler", namespace).get("items") or []
    return [h["metadata"]["name"] for h in items
            if ((h.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == deployment]


def _delete_release(kube: KubeClients, namespace: str, deployment: str, protected: str | None) -> list[str]:
    if deployment == protected:
        raise RuntimeError(f"refusing to delete {deployment}: the main Ingress routes to it")
    gone = [f"HorizontalPodAutoscaler {h}" for h in hpas_targeting(kube, namespace, deployment)
            if kube.delete("HorizontalPodAutoscaler", h, namespace) == "deleted"]
    for kind, name in Version(version="", deployment=deployment, created="", replicas=0).release_objects:
        if kube.delete(kind, name, namespace, "Foreground" if kind == "Deployment" else "Background") == "deleted":
            gone.append(f"{kind} {name}")
    return gone


@task(name="roll-back", cache_policy=NO_CACHE)
def remove_canary(kube: KubeClients, spec: DeploySpec, deployment: str | None = None) -> list[str]:
    """Send no user traffic to the new version and remove it: the preview and canary Ingresses first, then its
    HPA, Service, Deployment and ConfigMap (``deployment``: another version's release, for a half-done rollout of
    an earlier run).
    The version the main Ingress routes to is never touched."""
    ns = spec.names.namespace
    target = deployment or spec.names.deployment
    protected = routed_service(kube, spec)
    removed = []
    if kube.delete("Ingress", spec.names.preview_ingress, ns) == "deleted":
        removed.append(f"Ingress {spec.names.preview_ingress}")
    if kube.delete("Ingress", spec.names.canary_ingress, ns) == "deleted":
        removed.append(f"Ingress {spec.names.canary_ingress}")
    if target != protected:
        removed += _delete_release(kube, ns, target, protected)
    run_logger().info("rolled back %s: removed %s", target, ", ".join(removed) or "nothing (already gone)")
    return removed


def switch_main(kube: KubeClients, spec: DeploySpec, live: LiveVersion, service: str) -> None:
    """Point the main Ingress's rule for the host and path at ``service`` (a read-modify-replace, so a concurrent
    change to the Ingress fails with a conflict instead of being overwritten)."""
    ns = spec.names.namespace
    current = kube.get("Ingress", live.ingress, ns)
    if current is None:
        raise RuntimeError(f"the main Ingress {live.ingress} is gone")
    kube.replace(with_backend(current, spec.ingress.host, spec.ingress.path, service, spec.ingress.service_port))


class Promotion(BaseModel):
    previous: str
    retired_hpas: list[str]
    scaled_to_zero: str
    pruned: list[str]


@task(name="promote", cache_policy=NO_CACHE)
def promote(kube: KubeClients, spec: DeploySpec, live: LiveVersion, drain_s: float | None = None,
            retire_previous: bool = True) -> Promotion:
    """The new version becomes the live one: its HPA on its own route, the main Ingress to its Service, the canary
    Ingress removed; then (``retire_previous``) the previous version's HPAs removed and, after ``drain_s``
    seconds for requests in flight, its Deployment scaled to zero; releases beyond ``rollout.keep_versions``
    deleted."""
    ns = spec.names.namespace
    logger = run_logger()
    kube.apply(render_hpa(spec))  # on its own route: the main route once the Ingress points at it
    switch_main(kube, spec, live, spec.names.service)
    kube.delete("Ingress", spec.names.canary_ingress, ns)
    logger.info("promoted %s: the main Ingress %s routes to %s", spec.serving.version, live.ingress,
                spec.names.service)
    if not retire_previous:
        return Promotion(previous=live.service, retired_hpas=[], scaled_to_zero="", pruned=[])
    return retire(kube, spec, live.service, drain_s)


def retire(kube: KubeClients, spec: DeploySpec, previous: str, drain_s: float | None = None) -> Promotion:
    """The previous version stops serving: its HPAs go, its replicas drain and go to zero; old releases pruned."""
    ns = spec.names.namespace
    if routed_service(kube, spec) == previous:
        raise RuntimeError(f"refusing to retire {previous}: the main Ingress still routes to it")
    hpas = hpas_targeting(kube, ns, previous)
    for h in hpas:
        kube.delete("HorizontalPodAutoscaler", h, ns)
    time.sleep(spec.rollout.drain_seconds if drain_s is None else drain_s)
    try:
        kube.scale(previous, ns, 0)
    except KubeApiError as exc:
        if not exc.not_found:
            raise
    pruned = prune(kube, spec)
    run_logger().info("retired %s (HPA %s removed, scaled to zero); pruned %s", previous, ", ".join(hpas) or "-",
                      ", ".join(pruned) or "nothing")
    return Promotion(previous=previous, retired_hpas=hpas, scaled_to_zero=previous, pruned=pruned)


def prune(kube: KubeClients, spec: DeploySpec) -> list[str]:
    """Delete the oldest releases beyond ``rollout.keep_versions`` (the routed one always kept)."""
    ns = spec.names.namespace
    routed = routed_service(kube, spec)
    versions = [v for v in list_versions(kube, spec) if v.deployment not in (routed, spec.names.deployment)]
    keep_others = spec.rollout.keep_versions - 1  # the live one is one of those kept
    doomed = versions[: max(0, len(versions) - keep_others)]
    out: list[str] = []
    for v in doomed:
        out += _delete_release(kube, ns, v.deployment, routed)
    return out



@task(name="hold-replicas", cache_policy=NO_CACHE)
def hold_replicas(kube: KubeClients, spec: DeploySpec, deployment: str) -> list[dict[str, Any]]:
    """Keep ``deployment`` at its replicas: its HPAs are removed (an HPA whose route no longer gets traffic would
    scale it down) and returned as manifests, to be re-created by :func:`restore`."""
    ns = spec.names.namespace
    saved = []
    for name in hpas_targeting(kube, ns, deployment):
        obj = kube.get("HorizontalPodAutoscaler", name, ns) or {}
        meta = obj.get("metadata") or {}
        saved.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                      "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels") or {}},
                      "spec": obj.get("spec") or {}})
        kube.delete("HorizontalPodAutoscaler", name, ns)
    return saved


def restore(kube: KubeClients, spec: DeploySpec, live: LiveVersion, hpas: list[dict[str, Any]]) -> list[str]:
    """Blue-green switched back: the main Ingress to the previous version (kept at its replicas), its HPAs
    re-created, then the new version removed."""
    switch_main(kube, spec, live, live.service)
    for manifest in hpas:
        kube.apply(manifest)
    return remove_canary.fn(kube, spec)


def _canary_backend(kube: KubeClients, spec: DeploySpec) -> str | None:
    obj = kube.get("Ingress", spec.names.canary_ingress, spec.names.namespace)
    if obj is None:
        return None
    for rule in (obj.get("spec") or {}).get("rules") or []:
        for p in (rule.get("http") or {}).get("paths") or []:
            name = ((p.get("backend") or {}).get("service") or {}).get("name")
            if name:
                return str(name)
    return ""


@task(name="recover", cache_policy=NO_CACHE)
def recover(kube: KubeClients, spec: DeploySpec) -> list[str]:
    """Finish or undo what a run that died mid-rollout left, before this run changes anything:

    - a canary Ingress for another version: that rollout never promoted; its canary is removed (the version the
      main Ingress routes to is untouched);
    - a canary for this run's version: left, this run rolls it out again from the isolated stress test;
    - after a promotion whose run died before retiring: a version the main Ingress no longer routes to that still
      has an HPA, or still has replicas (blue-green holds the previous version at its replicas without its HPA
      through the bake), is retired (HPA removed, scaled to zero).
    """
    logger = run_logger()
    done: list[str] = []
    ns = spec.names.namespace
    routed = routed_service(kube, spec)
    backend = _canary_backend(kube, spec)
    if backend is not None and backend != spec.names.service:
        logger.warning("an earlier run left a canary for %s: undoing that rollout", backend or "(no Service)")
        done += remove_canary.fn(kube, spec, deployment=backend or None)
    if routed is None:
        return done
    for v in list_versions(kube, spec):
        if v.deployment in (routed, spec.names.deployment):
            continue
        if not v.replicas and not hpas_targeting(kube, ns, v.deployment):
            continue
        logger.warning("%s still runs though the main Ingress routes to %s: retiring it", v.deployment, routed)
        retire(kube, spec, v.deployment, drain_s=0)
        done.append(f"retired {v.deployment}")
    return done
