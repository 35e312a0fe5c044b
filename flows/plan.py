"""`elastic-inference deploy --plan [--server]`: what the deploy would send, printed or dry-run on the server.

``--plan`` calls nothing: it prints the ACK CreateClusterNodePool request and every Kubernetes manifest as YAML
(secrets masked). ``--plan --server`` also sends each manifest to the cluster's API server as a server-side dry
run (``dryRun=All``), which runs admission and schema validation without storing anything; ACK has no dry run
for CreateClusterNodePool, so that body is only validated locally by the spec model.
"""

from __future__ import annotations

from clients.cluster import Cluster, resolve_oss_url
from clients.kube import ApplyResult
from core.spec import DeploySpec
from tasks.plan import plan_documents, render_all, to_yaml


def render_plan(spec: DeploySpec, cluster: Cluster | None) -> str:
    """The plan as multi-document YAML; ``cluster`` only supplies ids and endpoints (no call is made)."""
    cluster_id = spec.cluster_id or (cluster.cluster_id if cluster else None) or "<cluster-id>"
    credentials = cluster.credentials if cluster else None
    access_key_id = credentials.access_key_id if credentials else None
    return to_yaml(plan_documents(spec, cluster_id, access_key_id, oss_url=resolve_oss_url(spec, credentials)))


def server_dry_run(spec: DeploySpec, cluster: Cluster) -> list[ApplyResult]:
    """Send every manifest as a server-side apply with dryRun=All; raises on the first one the server refuses."""
    manifests = render_all(
        spec,
        cluster.cluster_id,
        cluster.credentials.access_key_id,
        oss_url=cluster.oss_url(spec),
        access_key_secret=cluster.credentials.access_key_secret,
    )
    with cluster.kube() as kube:
        return [kube.apply(manifest, dry_run=True) for manifest in manifests]
