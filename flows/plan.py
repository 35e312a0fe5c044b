"""`elastic-inference deploy --plan [--server]`: what the deploy would send, printed or dry-run on the server.

``--plan`` calls nothing: it prints the ACK CreateClusterNodePool request and every Kubernetes manifest as YAML
(secrets masked). ``--plan --server`` also sends each manifest to the cluster's API server as a server-side dry
run (``dryRun=All``), which runs admission and schema validation without storing anything; ACK has no dry run
for CreateClusterNodePool, so that body is only validated locally by the spec model.
"""

from __future__ import annotations

from blocks import AckCluster
from flows.spec import DeploySpec
from tasks.ack_api import AckApi
from tasks.kube import ApplyResult, KubeClients
from tasks.plan import plan_documents, render_all, to_yaml
from tasks.storage import default_oss_url


def oss_url_for(spec: DeploySpec, cluster: AckCluster | None) -> str | None:
    """The endpoint the OSS CSI driver mounts from: the spec's, the credentials' override, or the region's internal."""
    if spec.storage.oss_url:
        return spec.storage.oss_url
    if cluster is None:
        return None
    return cluster.credentials.oss_endpoint or default_oss_url(cluster.credentials.region_id)


def render_plan(spec: DeploySpec, cluster: AckCluster | None) -> str:
    """The plan as multi-document YAML; ``cluster`` only supplies ids and endpoints (no call is made)."""
    cluster_id = spec.cluster_id or (cluster.cluster_id if cluster else None) or "<cluster-id>"
    access_key_id = cluster.credentials.access_key_id if cluster else None
    region = cluster.credentials.region_id if cluster else None
    return to_yaml(
        plan_documents(spec, cluster_id, access_key_id, oss_url=oss_url_for(spec, cluster), region_id=region)
    )


def server_dry_run(spec: DeploySpec, cluster: AckCluster) -> list[ApplyResult]:
    """Send every manifest as a server-side apply with dryRun=All; raises on the first one the server refuses."""
    api = AckApi(cluster.credentials, cluster.cluster_id)
    kubeconfig, _ = api.user_kubeconfig(cluster.kubeconfig_minutes, cluster.private_ip)
    manifests = render_all(
        spec,
        cluster.cluster_id,
        cluster.credentials.access_key_id,
        oss_url=oss_url_for(spec, cluster),
        region_id=cluster.credentials.region_id,
        access_key_secret=cluster.credentials.access_key_secret,
    )
    with KubeClients.from_kubeconfig_text(kubeconfig) as kube:
        return [kube.apply(manifest, dry_run=True) for manifest in manifests]
