"""Back to the previous kept version, by hand (``elastic-inference rollback SPEC``, or the ``rollback`` deployment).

    lock ─ live version ─ previous kept release ─ scale it to the live replica count ─ wait Available
         ─ its HPA ─ main Ingress → its Service ─ retire the version that served (HPA removed, drained, to zero)

The previous release is the newest one of the serving, other than the live one, that a promotion kept
(``rollout.keep_versions``); it takes over only once its replicas are Available, so users are served throughout.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import BaseModel

from blocks import AckClusterRef
from clients.cluster import resolve_cluster
from core.spec import DeploySpec, form_title
from flows.deploy import service_lock
from tasks.autoscaling import apply_autoscaling
from tasks.live import find_live_version
from tasks.serving import deployment_available, deployment_failed
from tasks.versions import Promotion, list_versions, retire, switch_main


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
        live = find_live_version(kube, spec)
        if live is None:
            raise NothingToRollBackTo(f"nothing serves {spec.ingress.host}{spec.ingress.path}: no live version")
        kept = [v for v in list_versions(kube, spec) if v.deployment != live.service]
        if not kept:
            raise NothingToRollBackTo(f"no previous version of {spec.serving.name} is kept besides the live "
                                      f"{live} (rollout.keep_versions)")
        previous = kept[-1]
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
        switch_main(kube, spec, live, previous.deployment)
        retired = retire(kube, target, live.service)
    logger.info("%s serves again; %s retired", previous.deployment, live.service)
    return RollbackResult(from_service=live.service, to_service=previous.deployment, to_version=previous.version,
                          replicas=replicas, retired=retired)
