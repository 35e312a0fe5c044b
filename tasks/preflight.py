"""Preflight: is this cluster able to run the procedure? Checked before anything is created.

The deploy flow runs it right after fetching the kubeconfig and BEFORE the node pool, the model upload or any
Kubernetes object (``flows/deploy.py``). What the later steps need, and where it comes from:

* ACK (only when an :class:`~clients.ack.AckApi` is given): DescribeClusterDetail answers and the cluster's
  ``state`` lets work proceed; DescribeClusterNodePools answers. These are the reads the flow needs anyway; a 403
  from either names the RAM action to grant. Write permissions (CreateClusterNodePool...) cannot be told without
  writing: ACK has no "can I" API, so those surface at their step.
* Kubernetes >= 1.23 (``autoscaling/v2`` HPAs; the seed's ``v2beta1`` is gone since 1.25);
* the namespace of the objects;
* the IngressClass of ``ingress.class_name`` (``nginx``): the **Nginx Ingress Controller** add-on;
* the CSIDriver ``ossplugin.csi.alibabacloud.com``: the **csi-plugin** add-on (storage);
* the APIService ``v1beta1.external.metrics.k8s.io``, Available: **ack-alibaba-cloud-metrics-adapter**, which
  serves ``sls_ingress_qps`` from the Ingress access logs in SLS (AliyunContainerService/alibaba-cloud-metrics-adapter);
* **node scaling enabled for the cluster**: "Node pool auto scaling only takes effect after you enable it at the
  cluster level" (ACK docs, "Enable node autoscaling": Nodes > Node Pools > Node Scaling > Enable, which also
  authorises the AliyunCSManagedAutoScalerRole; alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/
  user-guide/auto-scaling-of-nodes). The ACK OpenAPI has no read of that switch (``alibabacloud_cs20151215``
  has CreateAutoscalingConfig to write it and nothing to read it back), so preflight looks where a running
  cluster-autoscaler shows itself: it publishes its status to the ConfigMap ``kube-system/cluster-autoscaler-
  status`` on every loop (kubernetes/autoscaler ``cluster-autoscaler/FAQ.md``: "Check if cluster autoscaler is up
  and running ... it periodically publishes the kube-system/cluster-autoscaler-status config map";
  ``--write-status-configmap`` defaults to true). No ConfigMap: no autoscaler, and the pool's
  ``auto_scaling.enable`` would grow nothing. An identity that may not read it gets a warning, not a failure;
* credentials the OSS volume can use (:func:`tasks.storage.sts_problem`: no STS token with ``storage.auth: secret``).

Namespace policy: a missing namespace is CREATED (server-side apply, labelled
``app.kubernetes.io/managed-by=elastic-inference``) rather than reported, and only once every other check passed,
so a failed preflight creates nothing. The spec names it, it holds nothing but this service's objects, creating it
is idempotent, and ``kubectl apply`` users would otherwise have to run a ``kubectl create namespace`` the procedure
never mentions. ``create_namespace=False`` turns this into a check, for identities without cluster-scope rights; a
403 on the create says exactly that. Every problem is reported in ONE error, each with its remedy, so a new cluster
is fixed in one pass.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from clients.ack import AckApi, AckApiError
from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.storage import OSS_CSI_DRIVER, sts_problem

EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
MIN_MINOR = 23
AUTOSCALER_STATUS = ("kube-system", "cluster-autoscaler-status")
# DescribeClusterDetail ``state`` values in which node pools and workloads can be changed. The SDK model
# (DescribeClusterDetailResponseBody.state) documents initial, failed, running, updating, upgrading, removing,
# draining, scaling, inactive, unavailable, deleting, deleted, delete_failed, waiting, disconnected.
WORKING_STATES = frozenset({"running", "updating", "upgrading", "scaling", "removing", "draining"})
HINT_NODE_SCALING = (
    "enable node scaling for the cluster (ACK console: Clusters > <cluster> > Nodes > Node Pools > Node Scaling > "
    "Enable, and authorise the AliyunCSManagedAutoScalerRole when asked); without it the pool's auto scaling "
    "adds no node and the load test would end as 'no scale-out'"
)

HINT_INGRESS = (
    "install the Nginx Ingress Controller add-on (ACK console: Clusters > <cluster> > Operations > Add-ons > "
    "Networking > Nginx Ingress Controller); it creates the IngressClass 'nginx'"
)
HINT_CSI = (
    "install the csi-plugin add-on (ACK console: Clusters > <cluster> > Operations > Add-ons > Storage > "
    "csi-plugin); it registers the CSIDriver " + OSS_CSI_DRIVER
)
HINT_METRICS = (
    "install ack-alibaba-cloud-metrics-adapter (ACK console: Marketplace > App Marketplace > "
    "ack-alibaba-cloud-metrics-adapter, into kube-system); it registers the APIService "
    f"{EXTERNAL_METRICS_APISERVICE} and serves sls_ingress_qps from the Ingress logs in Simple Log Service "
    "(enable log collection for the Nginx Ingress: logstore nginx-ingress)"
)


class PreflightError(RuntimeError):
    """One or more prerequisites are missing; ``problems`` lists each with its remedy."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"the cluster is not ready for this deploy ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


class PreflightReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    server_version: str
    namespace: str
    namespace_created: bool
    ingress_class: str
    csi_driver: str
    external_metrics_api: str
    node_scaling: str = "not checked"
    cluster_state: str | None = None


def render_namespace(spec: DeploySpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": spec.names.namespace,
            "labels": {"app.kubernetes.io/managed-by": "elastic-inference"},
        },
    }


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None
    )


def _version(kube: KubeClients, problems: list[str]) -> str:
    info = kube.server_version()
    git = str(info.get("gitVersion") or "")
    major = str(info.get("major") or "")
    minor = re.match(r"\d+", str(info.get("minor") or ""))
    if major == "1" and minor and int(minor.group()) < MIN_MINOR:
        problems.append(
            f"Kubernetes {git} is too old: autoscaling/v2 HPAs need 1.{MIN_MINOR} or later (upgrade the cluster "
            "in the ACK console: Clusters > <cluster> > Cluster Information > Upgrade)"
        )
    return git


def _ack(ack: AckApi, problems: list[str]) -> str | None:
    """ACK's side: the cluster answers and can be worked on; the reads the flow needs are allowed."""
    state = None
    for action, call in (("DescribeClusterDetail", ack.describe_cluster),
                         ("DescribeClusterNodePools", ack.describe_node_pools)):
        try:
            out = call()
        except AckApiError as exc:
            if exc.http_status == 403:
                problems.append(f"RAM permission missing: cs:{action} on cluster {ack.cluster_id} was refused "
                                f"({exc.code}: {exc.message}); grant it to this identity (RAM console, or the "
                                "AliyunCSFullAccess policy) and the cluster's RBAC role")
            elif exc.not_found:
                problems.append(f"cluster {ack.cluster_id} not found ({exc.code}: {exc.message}): check the "
                                "cluster id of the AckCluster block and its region")
                return None
            else:
                raise
            continue
        if action == "DescribeClusterDetail":
            state = str((out or {}).get("state") or "")
            if state not in WORKING_STATES:
                problems.append(f"cluster {ack.cluster_id} is {state or 'in no state'}: node pools and workloads "
                                f"can be changed only while it is {'/'.join(sorted(WORKING_STATES))}")
    return state


def _node_scaling(kube: KubeClients, problems: list[str]) -> str:
    ns, name = AUTOSCALER_STATUS
    try:
        cm = kube.get("ConfigMap", name, ns)
    except KubeApiError as exc:
        if exc.forbidden:
            run_logger().warning("preflight: cannot tell whether node scaling is enabled: reading ConfigMap %s/%s "
                                  "is forbidden for this identity", ns, name)
            return "unknown (ConfigMap not readable)"
        raise
    if cm is None:
        problems.append(f"node scaling is not enabled for the cluster (no cluster-autoscaler: ConfigMap {ns}/{name} "
                        f"not found): {HINT_NODE_SCALING}")
        return "disabled"
    return "enabled (cluster-autoscaler status published)"


def check_cluster(
    kube: KubeClients,
    spec: DeploySpec,
    create_namespace: bool = True,
    ack: AckApi | None = None,
    has_security_token: bool = False,
) -> PreflightReport:
    """Every check; raises :class:`PreflightError` listing all problems, else returns the report.

    Nothing is created unless every check passed (then, the namespace if missing and ``create_namespace``).
    """
    names = spec.names
    problems: list[str] = []
    cluster_state = _ack(ack, problems) if ack is not None else None
    sts = sts_problem(spec, has_security_token)
    if sts:
        problems.append(sts)
    version = _version(kube, problems)

    cls = spec.ingress.class_name
    if kube.get("IngressClass", cls) is None:
        others = [i["metadata"]["name"] for i in kube.list("IngressClass").get("items") or []]
        known = f" (the cluster has: {', '.join(others)}; or set ingress.class_name)" if others else ""
        problems.append(f"IngressClass {cls!r} not found{known}: {HINT_INGRESS}")

    if kube.get("CSIDriver", OSS_CSI_DRIVER) is None:
        problems.append(f"CSIDriver {OSS_CSI_DRIVER} not found (OSS volumes cannot mount): {HINT_CSI}")

    api = kube.get("APIService", EXTERNAL_METRICS_APISERVICE)
    metrics_state = "Available"
    if api is None:
        problems.append(
            f"APIService {EXTERNAL_METRICS_APISERVICE} not found (the HPA cannot read "
            f"{spec.autoscaling.metric_name}): {HINT_METRICS}"
        )
        metrics_state = "missing"
    else:
        available = _condition(api, "Available")
        if not available or available.get("status") != "True":
            detail = ": ".join(
                x for x in ((available or {}).get("reason"), (available or {}).get("message")) if x
            )
            problems.append(
                f"APIService {EXTERNAL_METRICS_APISERVICE} exists but is not Available"
                f"{' (' + detail + ')' if detail else ''}: check the metrics adapter's pods and Service "
                f"({(api.get('spec') or {}).get('service') or 'no service'}) or {HINT_METRICS}"
            )
            metrics_state = "not available"

    node_scaling = _node_scaling(kube, problems)

    created = False
    if kube.get("Namespace", names.namespace) is None:
        if not create_namespace:
            problems.append(
                f"namespace {names.namespace!r} does not exist: create it (kubectl create namespace "
                f"{names.namespace}) or let preflight create it"
            )
        elif not problems:
            try:
                kube.apply(render_namespace(spec))
                created = True
                run_logger().info("created namespace %s", names.namespace)
            except KubeApiError as exc:
                hint = (
                    " (this identity may not create namespaces: create it as an administrator)"
                    if (exc.forbidden)
                    else ""
                )
                problems.append(
                    f"namespace {names.namespace!r} does not exist and could not be created: "
                    f"{exc.status} {exc.reason}: {exc.message}{hint}"
                )

    if problems:
        raise PreflightError(problems)
    return PreflightReport(
        server_version=version,
        namespace=names.namespace,
        namespace_created=created,
        ingress_class=cls,
        csi_driver=OSS_CSI_DRIVER,
        external_metrics_api=f"{EXTERNAL_METRICS_APISERVICE} {metrics_state}",
        node_scaling=node_scaling,
        cluster_state=cluster_state,
    )


@task(name="preflight", cache_policy=NO_CACHE)
def preflight(
    kube: KubeClients,
    spec: DeploySpec,
    create_namespace: bool = True,
    ack: AckApi | None = None,
    has_security_token: bool = False,
) -> PreflightReport:
    """ACK, credentials, IngressClass, CSIDriver, external metrics API, node scaling, namespace: see the module
    docstring. Run before anything is created."""
    report = check_cluster(kube, spec, create_namespace=create_namespace, ack=ack,
                           has_security_token=has_security_token)
    run_logger().info(
        "preflight passed: Kubernetes %s, namespace %s%s, node scaling %s",
        report.server_version,
        report.namespace,
        " (created)" if report.namespace_created else "",
        report.node_scaling,
    )
    return report
