"""From "a spec and a block name" to a connected cluster, in one place for every flow (deploy, plan, teardown).

The ``AckCluster`` block holds the cluster id, the credentials, the kubeconfig lifetime and whether to ask for the
API server's internal (VPC) address. :class:`Cluster` builds the clients from exactly those fields, so no flow can
fetch a kubeconfig with other settings than the block's (teardown once asked for a fixed 60 minutes and the
public address, and failed where deploy worked on a cluster reachable only inside its VPC).

The blocks themselves build the SDK clients (``AcsClient``, ``oss2.Bucket``), as prefect-aws' blocks build boto3
clients; the wrappers here add retries, error translation and redaction on top. The layer order
(``clients → blocks``) is why the wrappers are built here from a block rather than by the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from blocks import AckCluster, AlibabaCloudCredentials, load_cluster
from clients.ack import AckApi
from clients.kube import KubeClients
from clients.sls import SlsReader
from core.spec import DeploySpec

# What a plan shows for the OSS endpoint when neither the spec nor a cluster names one.
OSS_URL_PLACEHOLDER = "oss-<region>-internal.aliyuncs.com"


def default_oss_url(region_id: str) -> str:
    """The region's internal (VPC) OSS endpoint, what ACK's documentation puts in ``url`` for in-region mounts."""
    return f"oss-{region_id}-internal.aliyuncs.com"


def resolve_oss_url(spec: DeploySpec, credentials: AlibabaCloudCredentials | None) -> str | None:
    """The endpoint the OSS CSI driver mounts from: the spec's ``storage.oss_url``, else the credentials' OSS
    endpoint override, else the region's internal endpoint; None when there is neither a spec value nor
    credentials (plan mode without a cluster)."""
    if spec.storage.oss_url:
        return spec.storage.oss_url
    if credentials is None:
        return None
    return credentials.oss_endpoint or default_oss_url(credentials.region_id)


@dataclass(frozen=True)
class Cluster:
    """An ACK cluster as a saved block describes it, with the clients built from that block's own settings."""

    block: AckCluster

    @property
    def cluster_id(self) -> str:
        return self.block.cluster_id

    @property
    def credentials(self) -> AlibabaCloudCredentials:
        return self.block.credentials

    @property
    def reference(self) -> AckCluster | str:
        """What a subflow's ``cluster_block`` parameter should carry: the saved block's name (the run's parameters
        then hold the name, not the block's values), or the block itself when it was never saved."""
        return self.block._block_document_name or self.block

    def ack(self) -> AckApi:
        """The ACK OpenAPI client for this cluster."""
        return AckApi(self.credentials, self.cluster_id)

    def user_kubeconfig(self) -> tuple[str, str | None]:
        """DescribeClusterUserKubeconfig with the block's ``kubeconfig_minutes`` and ``private_ip``:
        (kubeconfig text, expiration)."""
        return self.ack().user_kubeconfig(self.block.kubeconfig_minutes, self.block.private_ip)

    def kube(self) -> KubeClients:
        """Kubernetes clients over a fresh temporary kubeconfig (held in memory only); close them after use."""
        text, _ = self.user_kubeconfig()
        return KubeClients.from_kubeconfig_text(text).renewing(lambda: self.user_kubeconfig()[0])

    def sls(self, spec: DeploySpec) -> SlsReader | None:
        """GetLogs on the cluster's ingress access log (``k8s-log-{cluster id}`` / the spec's logstore)."""
        if not spec.names.sls_project:
            return None
        return SlsReader(self.credentials.get_sls_client(), spec.names.sls_project, spec.names.sls_logstore)

    def oss_url(self, spec: DeploySpec) -> str:
        """See :func:`resolve_oss_url`; a cluster always has credentials, so there is always an answer."""
        url = resolve_oss_url(spec, self.credentials)
        assert url is not None
        return url


def check_cluster(spec: DeploySpec, block: AckCluster, block_name: str) -> DeploySpec:
    """``spec`` bound to the block's cluster; refuses a spec that names another cluster than the block's."""
    if spec.cluster_id and spec.cluster_id != block.cluster_id:
        raise ValueError(
            f"spec.cluster_id {spec.cluster_id!r} differs from the cluster of block {block_name!r} "
            f"({block.cluster_id!r}); refusing to act on the wrong cluster"
        )
    return spec.with_cluster(block.cluster_id)


def resolve_cluster(spec: DeploySpec, cluster_block: AckCluster | str) -> tuple[DeploySpec, Cluster]:
    """The ``AckCluster`` block (as the UI's block picker hands it to a flow) or the saved block of that name;
    return the spec bound to its cluster and the cluster."""
    block = load_cluster(cluster_block)
    name = cluster_block if isinstance(cluster_block, str) else block._block_document_name or "(unsaved block)"
    return check_cluster(spec, block, name), Cluster(block)
