"""Preflight: is this cluster able to run the procedure? Checked before anything is applied.

What the later steps need from the cluster, and the ACK add-on that provides it:

* Kubernetes >= 1.23 (``autoscaling/v2`` HPAs; the seed's ``v2beta1`` is gone since 1.25);
* the namespace of the objects;
* the IngressClass of ``ingress.class_name`` (``nginx``): the **Nginx Ingress Controller** add-on;
* the CSIDriver ``ossplugin.csi.alibabacloud.com``: the **csi-plugin** add-on (storage);
* the APIService ``v1beta1.external.metrics.k8s.io``, Available: **ack-alibaba-cloud-metrics-adapter**, which
  serves ``sls_ingress_qps`` from the Ingress access logs in SLS (AliyunContainerService/alibaba-cloud-metrics-adapter).

Namespace policy: a missing namespace is CREATED (server-side apply, labelled
``app.kubernetes.io/managed-by=elastic-inference``) rather than reported. The spec names it, it holds nothing but
this service's objects, creating it is idempotent, and ``kubectl apply`` users would otherwise have to run a
``kubectl create namespace`` the procedure never mentions. ``create_namespace=False`` turns this into a check, for
identities without cluster-scope rights; a 403 on the create says exactly that. Every missing add-on is reported
in ONE error, each with where to install it, so a new cluster is fixed in one pass.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from clients.kube import KubeApiError, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.storage import OSS_CSI_DRIVER

EXTERNAL_METRICS_APISERVICE = "v1beta1.external.metrics.k8s.io"
MIN_MINOR = 23

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


def check_cluster(kube: KubeClients, spec: DeploySpec, create_namespace: bool = True) -> PreflightReport:
    """Every check; raises :class:`PreflightError` listing all problems, else returns the report."""
    names = spec.names
    problems: list[str] = []
    version = _version(kube, problems)

    created = False
    if kube.get("Namespace", names.namespace) is None:
        if not create_namespace:
            problems.append(
                f"namespace {names.namespace!r} does not exist: create it (kubectl create namespace "
                f"{names.namespace}) or let preflight create it"
            )
        else:
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

    if problems:
        raise PreflightError(problems)
    return PreflightReport(
        server_version=version,
        namespace=names.namespace,
        namespace_created=created,
        ingress_class=cls,
        csi_driver=OSS_CSI_DRIVER,
        external_metrics_api=f"{EXTERNAL_METRICS_APISERVICE} {metrics_state}",
    )


@task(name="preflight", cache_policy=NO_CACHE)
def preflight(kube: KubeClients, spec: DeploySpec, create_namespace: bool = True) -> PreflightReport:
    """Namespace (created if missing), IngressClass, CSIDriver, external metrics API: see the module docstring."""
    report = check_cluster(kube, spec, create_namespace=create_namespace)
    run_logger().info(
        "preflight passed: Kubernetes %s, namespace %s%s",
        report.server_version,
        report.namespace,
        " (created)" if report.namespace_created else "",
    )
    return report
