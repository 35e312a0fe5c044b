"""The teardown flow: remove what a deploy created, idempotently, also after a deploy that failed midway.

Order (dependents first): Ingress, HPA, Service, Deployment (``propagationPolicy=Foreground``: the call returns
once its ReplicaSets and pods are gone, so no pod still mounts the volume), then the serving pods are awaited
gone, then ConfigMap, PVC, PV, Secret (``Background``), then the node pool (ACK DeleteClusterNodepool with
``force``, through :func:`tasks.nodepool.delete_node_pool`), and the model objects in OSS only when
``delete_model`` is true: the release's own prefix (``spec.names.model_oss_prefix``), and only when no Deployment
left in the cluster reads it (:mod:`tasks.model_readers`; the live version's model is never deleted). Every object delete waits until the object is gone (finalizers such as
``kubernetes.io/pvc-protection`` hold it until its users are gone); 404 is "already gone".

Each step is independent: a failing step (a 5xx that outlasts the retries, a timeout, a cluster we cannot reach)
is recorded and the next steps still run; at the end :class:`TeardownFailed` names every failed step. The
namespace is left alone (it may be shared, e.g. ``default``). Every name comes from ``spec.names``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks import AckClusterRef
from clients.cluster import resolve_cluster
from clients.kube import KubeClients, Propagation
from clients.logs import run_logger
from clients.waiting import poll_until
from core.spec import DeploySpec, form_title
from tasks.live import LiveUsage, LiveVersion, classify_run, find_live_version, live_usage
from tasks.model import delete_model as delete_model_task
from tasks.model_readers import ModelPrefix, readers_of, unread
from tasks.nodepool import delete_node_pool
from tasks.rollout.state import state_name
from tasks.serving import selector as serving_selector


class StepResult(BaseModel):
    step: str
    outcome: Literal["deleted", "absent", "failed", "skipped", "kept"]
    detail: str = ""


class TeardownResult(BaseModel):
    cluster_id: str
    steps: list[StepResult] = Field(default_factory=list)
    kubeconfig_expires: str | None = None
    """When the temporary kubeconfig used for the teardown expires (ACK's ``expiration``, from the block's
    ``kubeconfig_minutes``)."""

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.outcome == "failed"]


class TeardownFailed(RuntimeError):
    """Some steps failed; the others ran. Names each failed step with its error."""

    def __init__(self, result: TeardownResult) -> None:
        self.result = result
        lines = [f"teardown failed: {', '.join(s.step for s in result.failed)}"]
        lines += [f"  {s.step}: {s.detail}" for s in result.failed]
        super().__init__("\n".join(lines))


def objects_to_delete(spec: DeploySpec) -> list[tuple[str, str, str | None, Propagation]]:
    """(kind, name, namespace, propagation) in deletion order, every name from ``spec.names``."""
    n = spec.names
    ns = n.namespace
    return [
        ("Ingress", n.ingress, ns, "Background"),
        ("ConfigMap", state_name(spec), ns, "Background"),  # the service's rollout state: it goes with its Ingress
        ("HorizontalPodAutoscaler", n.hpa, ns, "Background"),
        ("Service", n.service, ns, "Background"),
        ("Deployment", n.deployment, ns, "Foreground"),
        ("ConfigMap", n.model_config_map, ns, "Background"),
        ("PersistentVolumeClaim", n.pvc, ns, "Background"),
        ("PersistentVolume", n.pv, None, "Background"),
        ("Secret", n.oss_secret, ns, "Background"),
    ]


def keep_reasons(spec: DeploySpec, live: LiveVersion | None, usage: LiveUsage | None, keep_live: bool,
                 nodepool_id: str | None) -> dict[tuple[str, str], str]:
    """What the teardown must leave, (kind, name) -> why; ``("NodePool", name)`` for the pool.

    Live services are sacred: whatever the version that serves the spec's host and path uses (its Ingress, the
    HPA scaling it, the volume its pods mount with its Secret, the node pool its pods run on) stays, unless that
    version is the spec's own and the teardown is deliberate. After a failed run (``keep_live``, the deploy's
    ``teardown_on_failure``) the spec's own live version stays whole.
    """
    if live is None:
        return {}
    items = [(kind, name) for kind, name, *_ in objects_to_delete(spec)] + [("NodePool", spec.node_pool.name)]
    if classify_run(spec, live) == "re-run":
        return {item: f"it serves now: {live}" for item in items} if keep_live else {}
    used = usage or LiveUsage(ingress=live.ingress)
    keep = {
        (kind, name): f"the live version uses it: {live}"
        for kind, name in items
        if (nodepool_id in used.nodepool_ids if kind == "NodePool" else used.uses(kind, name))
    }
    if ("Ingress", spec.names.ingress) in keep:
        keep[("ConfigMap", state_name(spec))] = f"the rollout state of the live service: {live}"
    return keep


def _wait(check: Any, timeout_s: float, what: str) -> None:
    """Wait until ``check()`` (what is still there, or None) returns None; time out naming what was left."""
    left: list[Any] = []

    def gone() -> bool | None:
        left[:] = [check()]
        return True if left[0] is None else None

    if poll_until(gone, timeout_s, interval=0.1, max_interval=2.0) is None:
        raise TimeoutError(f"{what} still there after {timeout_s:.0f}s: {left[0]}")


@task(name="teardown-object", cache_policy=NO_CACHE)
def delete_object_task(
    kube: KubeClients, kind: str, name: str, namespace: str | None, propagation: Propagation, timeout_s: float
) -> str:
    outcome = kube.delete(kind, name, namespace, propagation, timeout_s)
    run_logger().info("%s %s: %s", kind, name, outcome)
    return outcome


def _serving_pods(kube: KubeClients, spec: DeploySpec) -> str | None:
    sel = ",".join(f"{k}={v}" for k, v in serving_selector(spec).items())
    items = kube.list("Pod", spec.names.namespace, label_selector=sel).get("items") or []
    return f"{len(items)} pods: {', '.join(p['metadata']['name'] for p in items[:5])}" if items else None


def _model_readers(kube: KubeClients, spec: DeploySpec) -> str | None:
    """Why the spec's model prefix must stay, or None: a Deployment left in the cluster (after the deletes above;
    the live version's when it was kept) reads it, read from its pod template and model config ConfigMap, or
    what some Deployment reads cannot be told."""
    mine = ModelPrefix(bucket=spec.storage.bucket, prefix=spec.names.model_oss_prefix)
    try:
        _, held = unread([mine], readers_of(kube))
    except Exception as exc:
        return f"cannot tell that no release reads it: {_short(exc)}"
    return f"{held[mine]} reads it" if mine in held else None


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]


@flow(name="elastic-inference-teardown", description="Remove what a deploy created (objects, node pool, model).",
      validate_parameters=True)
def teardown(
    spec: Annotated[DeploySpec, form_title("Deploy spec")],
    cluster_block: Annotated[AckClusterRef, form_title("ACK cluster block")] = "sandbox",
    delete_model: Annotated[bool, form_title("Delete the model")] = False,
    delete_pool: Annotated[bool, form_title("Delete the node pool")] = True,
    timeout_s: Annotated[float, form_title("Timeout per object (s)")] = 600.0,
    keep_live: Annotated[bool, form_title("Keep a serving version")] = False,
) -> TeardownResult:
    """Remove the Ingress, HPA, Service, Deployment, ConfigMap, PVC, PV and Secret of ``spec``, then its node
    pool (``delete_pool``), then the uploaded model (``delete_model``). Idempotent; see the module docstring.

    Args:
        spec: The spec of the deploy to remove: every name comes from it (the same spec the deploy ran with).
        cluster_block: The cluster to remove it from: a saved ACK Cluster block, picked from the list or given
            by name.
        delete_model: Also delete the release's model objects in the OSS bucket (its own prefix), unless a
            Deployment left in the cluster reads them.
        delete_pool: Also delete the node pool (ACK DeleteClusterNodepool with force), unless a version that
            serves the spec's host and path runs on it.
        timeout_s: How long to wait, in seconds, for each object to be gone.
        keep_live: When the spec's own version is the one serving, leave it whole (what a teardown after a
            failed run does). Whatever another serving version uses is always left.
    """
    logger = get_run_logger()
    spec, cluster = resolve_cluster(spec, cluster_block)
    result = TeardownResult(cluster_id=cluster.cluster_id)
    logger.info("tearing down %s in cluster %s", spec.names.deployment, cluster.cluster_id)

    kube: KubeClients | None = None
    model_kept: str | None = None
    try:
        text, result.kubeconfig_expires = cluster.user_kubeconfig()
        kube = KubeClients.from_kubeconfig_text(text).renewing(lambda: cluster.user_kubeconfig()[0])
    except Exception as exc:
        result.steps.append(StepResult(step="kubeconfig", outcome="failed", detail=_short(exc)))
        logger.error("cannot reach the cluster: %s", _short(exc))

    pool_step = ("NodePool", spec.node_pool.name)
    keep: dict[tuple[str, str], str] = {pool_step: "no cluster access to check that no live version runs on it"}
    if kube is not None:
        try:
            live = find_live_version(kube, spec)
            usage = live_usage(kube, spec, live) if live is not None else None
            pool = cluster.ack().find_node_pool(spec.node_pool.name) if usage is not None else None
            keep = keep_reasons(spec, live, usage, keep_live, pool.nodepool_id if pool else None)
        except Exception as exc:
            result.steps.append(StepResult(step="live-version", outcome="failed", detail=_short(exc)))
            logger.error("cannot tell what serves %s%s: %s", spec.ingress.host, spec.ingress.path, _short(exc))
            keep = {pool_step: "no way to check that no live version runs on it"}
    for (kind, name), why in keep.items():
        logger.warning("keeping %s/%s: %s", kind, name, why)

    try:
        for kind, name, namespace, propagation in objects_to_delete(spec):
            step = f"{kind}/{name}"
            if kube is None:
                result.steps.append(StepResult(step=step, outcome="skipped", detail="no cluster access"))
                continue
            if (kind, name) in keep:
                result.steps.append(StepResult(step=step, outcome="kept", detail=keep[kind, name]))
                continue
            try:
                outcome = delete_object_task(kube, kind, name, namespace, propagation, timeout_s)
                result.steps.append(StepResult(step=step, outcome=outcome))
            except Exception as exc:
                result.steps.append(StepResult(step=step, outcome="failed", detail=_short(exc)))
                logger.error("%s: %s", step, _short(exc))
            if kind == "Deployment":
                try:
                    _wait(lambda: _serving_pods(kube, spec), timeout_s, "serving pods")
                except Exception as exc:
                    result.steps.append(StepResult(step="pods", outcome="failed", detail=_short(exc)))
                    logger.error("serving pods: %s", _short(exc))
        model_kept = _model_readers(kube, spec) if delete_model and kube is not None else None
    finally:
        if kube is not None:
            kube.close()

    if delete_pool and pool_step in keep:
        result.steps.append(StepResult(step=f"NodePool/{spec.node_pool.name}", outcome="kept", detail=keep[pool_step]))
    elif delete_pool:
        step = f"NodePool/{spec.node_pool.name}"
        try:
            res = delete_node_pool(spec.node_pool.name, cluster.credentials, cluster.cluster_id, force=True,
                                   timeout=timeout_s)
            result.steps.append(StepResult(step=step, outcome="deleted" if res.existed else "absent",
                                           detail=res.nodepool_id or ""))
        except Exception as exc:
            result.steps.append(StepResult(step=step, outcome="failed", detail=_short(exc)))
            logger.error("%s: %s", step, _short(exc))
    if delete_model:
        step = f"Model/oss://{spec.storage.bucket}/{spec.names.model_oss_prefix}"
        if kube is None:
            result.steps.append(StepResult(step=step, outcome="skipped", detail="no cluster access to check that no "
                                           "release reads it"))
        elif model_kept is not None:
            result.steps.append(StepResult(step=step, outcome="kept", detail=model_kept))
            logger.warning("keeping %s: %s", step, model_kept)
        else:
            try:
                n = delete_model_task(spec, cluster.credentials)
                result.steps.append(StepResult(step=step, outcome="deleted" if n else "absent",
                                               detail=f"{n} objects"))
            except Exception as exc:
                result.steps.append(StepResult(step=step, outcome="failed", detail=_short(exc)))
                logger.error("%s: %s", step, _short(exc))

    summary = ", ".join(f"{s.step} {s.outcome}" for s in result.steps)
    if result.failed:
        raise TeardownFailed(result)
    logger.info("teardown done: %s", summary)
    return result
