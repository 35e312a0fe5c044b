"""Plan mode: every request body and manifest the deploy would send, rendered without calling anything.

``render_all`` is pure: it takes the spec and the few facts that normally come from the cloud (cluster id,
AccessKey id, OSS endpoint or region) and returns the Kubernetes manifests in apply order. The OSS Secret is
rendered with its secret REDACTED (only the AccessKey id stays visible), so a printed plan is safe to share. The
CLI's ``deploy --plan`` prints :func:`plan_documents` as YAML; ``--plan --server`` applies the manifests with
``dryRun=All`` (the Secret then needs the real key, which the plan never holds).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import SecretStr

from clients.cluster import OSS_URL_PLACEHOLDER
from core.spec import DeploySpec
from tasks.autoscaling import render_hpa
from tasks.ingress import render_ingress
from tasks.nodepool import redacted, render_create_nodepool_request
from tasks.preflight import render_namespace
from tasks.serving import render_serving
from tasks.storage import REDACTED, redact_secret, render_storage


def _with_cluster(spec: DeploySpec, cluster_id: str | None) -> DeploySpec:
    cid = cluster_id or spec.cluster_id
    if not cid:
        raise ValueError("the plan needs the ACK cluster id (the HPA's sls.project is k8s-log-<cluster id>)")
    return spec if spec.cluster_id == cid else spec.with_cluster(cid)


def render_all(
    spec: DeploySpec,
    cluster_id: str | None,
    access_key_id: str | None,
    *,
    oss_url: str | None = None,
    access_key_secret: SecretStr | None = None,
) -> list[dict[str, Any]]:
    """Every manifest in apply order: [Namespace], [Secret], PV, PVC, ConfigMap, Deployment, Service, HPA, Ingress.

    The Namespace is listed unless it is ``default`` (preflight creates it when missing). The OSS endpoint is
    ``oss_url`` (see ``clients.cluster.resolve_oss_url``), else ``storage.oss_url``, else a placeholder.
    The Secret is redacted unless ``access_key_secret`` is given (a server-side dry run needs the real one; such
    a list must never be printed).
    """
    spec = _with_cluster(spec, cluster_id)
    url = oss_url or spec.storage.oss_url or OSS_URL_PLACEHOLDER
    manifests: list[dict[str, Any]] = []
    if spec.names.namespace != "default":
        manifests.append(render_namespace(spec))
    if access_key_secret is not None:
        manifests += render_storage(spec, url, access_key_id, access_key_secret)
    else:
        storage = render_storage(spec, url, access_key_id or "<AccessKey id>", REDACTED)
        manifests += [redact_secret(m, keep=("akId",)) for m in storage]
    manifests += render_serving(spec)
    manifests.append(render_hpa(spec))
    manifests.append(render_ingress(spec))
    return manifests


def nodepool_request(spec: DeploySpec, cluster_id: str | None) -> dict[str, Any]:
    """The ACK CreateClusterNodePool request as ``{"CreateClusterNodePool": {method, path, body}}``, login
    password masked."""
    spec = _with_cluster(spec, cluster_id)
    return {
        "CreateClusterNodePool": {
            "method": "POST",
            "path": f"/clusters/{spec.cluster_id}/nodepools",
            "body": redacted(render_create_nodepool_request(spec.node_pool)),
        }
    }


def plan_documents(
    spec: DeploySpec,
    cluster_id: str | None,
    access_key_id: str | None,
    *,
    oss_url: str | None = None,
) -> list[dict[str, Any]]:
    """The ACK request (when available) followed by every manifest, each a YAML document of the plan."""
    docs: list[dict[str, Any]] = [nodepool_request(spec, cluster_id)]
    docs += render_all(spec, cluster_id, access_key_id, oss_url=oss_url)
    return docs


class _PlanDumper(yaml.SafeDumper):
    """Multi-line strings (the model config file) as YAML literal blocks, as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _str)


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """The plan as a multi-document YAML stream (``kubectl apply -f`` reads the manifests back as they are)."""
    return yaml.dump_all(documents, Dumper=_PlanDumper, sort_keys=False, default_flow_style=False)
