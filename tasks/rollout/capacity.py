"""Capacity before traffic: a release gets the replicas its share of the users needs, Available, before the share
moves to it.

An HPA cannot do this on its own in a rollout. It acts on what it measured: ``sls_ingress_qps`` from SLS through
alibaba-cloud-metrics-adapter, whose query window ends ``DelaySeconds`` (10 s on ACK) in the past, plus the log
shipping lag, plus the HPA's own 15 s sync. A weight raised before the replicas are there sends users to a release
sized for the previous weight for tens of seconds, and a promotion that switches 100% to a release sized for the
last step does so while its HPA still reads the old share.

So each weight change is preceded by its capacity, as Argo Rollouts sizes a canary with traffic routing
(``setCanaryScale``/``dynamicStableScale``: canary replicas = ``ceil(stable replicas * weight / 100)``): the new
release's HPA gets that number as its ``minReplicas`` (so it cannot scale below it on its next sync), the
Deployment is scaled up to it at once (the HPA's next sync would do so only after its period), and the weight
changes only once that many replicas are Available. Before the switch to 100%, the same with the live release's
current replicas.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from clients.kube import KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec

CAPACITY_TIMEOUT_S = 900.0  # pods on a node the autoscaler must first add: ECS create, boot, image pull, model load


def share_replicas(live_replicas: int, weight: int, minimum: int = 1) -> int:
    """Replicas a release needs for ``weight`` % of what ``live_replicas`` serve now: ``ceil(live * weight / 100)``,
    at least ``minimum``."""
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is not a percentage")
    return max(minimum, math.ceil(live_replicas * weight / 100))


def ready_replicas(obj: dict[str, Any] | None) -> int:
    """Replicas of a Deployment that serve now (``status.availableReplicas``)."""
    return int(((obj or {}).get("status") or {}).get("availableReplicas") or 0)


def live_replicas(kube: KubeClients, spec: DeploySpec, deployment: str) -> int:
    """The live release's Available replicas now (what serves the users' traffic)."""
    return ready_replicas(kube.get("Deployment", deployment, spec.names.namespace))


@task(name="capacity", cache_policy=NO_CACHE)
def ensure_available(kube: KubeClients, spec: DeploySpec, replicas: int, why: str,
                     timeout_s: float = CAPACITY_TIMEOUT_S) -> int:
    """Scale the new release up to ``replicas`` if it has fewer (never down: its HPA may already hold more) and wait
    until that many are Available; returns the Available count. Raises (naming ``why``) when they are not there in
    ``timeout_s`` seconds, with what was last seen and the recent Events."""
    ns, name = spec.names.namespace, spec.names.deployment
    current = kube.get("Deployment", name, ns) or {}
    if int((current.get("spec") or {}).get("replicas") or 0) < replicas:
        kube.scale(name, ns, replicas)
    run_logger().info("capacity for %s: waiting for %d replica(s) of %s Available", why, replicas, name)
    obj = kube.wait_for("Deployment", name, ns, lambda o: ready_replicas(o) >= replicas, timeout_s,
                        what=f"have {replicas} replica(s) Available ({why})")
    return ready_replicas(obj)
