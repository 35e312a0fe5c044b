"""Back to the previous release, by hand (``elastic-inference rollback SPEC``, or the ``rollback`` deployment).

    lock ─ recover (finish or undo what a dead run left) ─ live version ─ the release that served before it
         ─ scale it to the live replica count ─ wait Available ─ its HPA ─ main Ingress → its Service
         ─ retire the version that served (HPA removed, drained, to zero)

The previous release is the one the main Ingress routed to before the live one, as its release history says
(the ``elastic-inference/release-history`` annotation, written with every switch: tasks/rollout/versions.py), and still
kept (``rollout.keep_versions``). A half-done canary of a dead run is never taken for it: recovery removes it
first, and the history only holds releases that served. An Ingress from before the history was kept falls back to
the newest kept release, saying so. The previous release takes over only once its replicas are Available, so users
are served throughout.
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel

from blocks import AckClusterRef
from clients.cluster import resolve_cluster
from core.spec import DeploySpec, form_title
from flows.deploy import service_lock
from tasks.autoscaling import apply_autoscaling
from tasks.live import find_live_version, sls_route
from tasks.rollout.quiet import RouteQuiet
from tasks.rollout.versions import Promotion, Version, history, list_versions, recover, retire, switch_main
from tasks.serving import deployment_available, deployment_failed


class RollbackResult(BaseModel):
    from_service: str
    to_service: str
    to_version: str
    replicas: int
    retired: Promotion


class NothingToRollBackTo(RuntimeError):
    pass


def for_version(spec: DeploySpec, version: str) -> DeploySpec:
    """The spec with another serving version: the names of that release."""
    return spec.model_copy(update={"serving": spec.serving.model_copy(update={"version": version})})


def previous_release(entries: list[dict[str, str]], live_service: str, kept: list[Version]) -> Version | None:
    """The kept release the main Ingress routed to last before ``live_service``, from its history (newest first);
    None when the history names none (empty, or only the live one)."""
    by_service = {v.deployment: v for v in kept}
    if not entries:
        return None
    for entry in reversed(entries[:-1] if entries[-1].get("service") == live_service else entries):
        if entry.get("service") != live_service and entry.get("service") in by_service:
            return by_service[entry["service"]]
    return None


@flow(name="elastic-inference-rollback", description="Serve the previous kept version again, then retire the "
      "current one.", validate_parameters=True)
def rollback(
    spec: Annotated[DeploySpec, form_title("Deploy spec")],
    cluster_block: Annotated[AckClusterRef, form_title("ACK cluster block")] = "sandbox",
) -> RollbackResult:
    """Make the previous kept version of the spec's serving the live one again.

    Args:
        spec: The deploy spec of the service (its serving name, namespace, host and path say which service).
        cluster_block: The cluster: a saved ACK Cluster block, picked from the list or given by name.
    """
    logger = get_run_logger()
    spec, cluster = resolve_cluster(spec, cluster_block)
    with cluster.kube() as kube, service_lock(kube, spec) as lock:
        for done in recover(kube, spec, cluster.credentials, own_canary=False, still_held=lock.check):
            logger.warning("recovered first: %s", done)
        live = find_live_version(kube, spec)
        if live is None:
            raise NothingToRollBackTo(f"nothing serves {spec.ingress.host}{spec.ingress.path}: no live version")
        kept = [v for v in list_versions(kube, spec) if v.deployment != live.service]
        entries = history(kube.get("Ingress", live.ingress, spec.names.namespace))
        if entries:
            previous = previous_release(entries, live.service, kept)
        else:
            logger.warning("the main Ingress %s has no release history (deployed before it was kept): taking the "
                           "newest kept release", live.ingress)
            previous = kept[-1] if kept else None
        if previous is None:
            served = ", ".join(e.get("version") or e["service"] for e in entries) or "none recorded"
            raise NothingToRollBackTo(f"no release of {spec.serving.name} that served before the live {live} is "
                                      f"kept (rollout.keep_versions); served: {served}")
        target = for_version(spec, previous.version)
        ns = spec.names.namespace
        current = kube.get("Deployment", live.service, ns) or {}
        replicas = max(spec.autoscaling.min_replicas, int((current.get("status") or {}).get("replicas") or 0))
        logger.info("rolling back %s to %s: scaling it to %d replica(s)", live, previous.version, replicas)
        kube.scale(previous.deployment, ns, replicas)
        kube.wait_for("Deployment", previous.deployment, ns, deployment_available, 900, failed=deployment_failed,
                      what="be Available")
        lock.check()  # the wait above may be long: switch only while this run still holds the service
        apply_autoscaling(kube, target)
        switch_main(kube, spec, live, previous.deployment, previous.version)
        sls = cluster.sls(spec)
        quiet = RouteQuiet(sls, sls_route(ns, live.service, live.port), time.time()) if sls is not None else None
        retired = retire(kube, target, live.service, cluster.credentials, still_held=lock.check, quiet=quiet)
    logger.info("%s serves again; %s retired", previous.deployment, live.service)
    return RollbackResult(from_service=live.service, to_service=previous.deployment, to_version=previous.version,
                          replicas=replicas, retired=retired)
