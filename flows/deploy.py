"""The deploy flow: ACK's "elastic inference on ECS" procedure as one Prefect flow.

    validate spec ─┬─ ensure_node_pool (ACK) ─┐
                   └─ upload_model (OSS) ─────┴─ (Kubernetes steps, load test, verification: later issues)

The node pool (minutes on ACK) and the model upload run concurrently. The flow reaches the cloud, real or
sandbox, only through the ``AckCluster`` block it is given by name: endpoints, credentials and a cluster id.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from blocks import AckCluster
from flows.spec import DeploySpec
from tasks.ack_api import AckApi, Node
from tasks.model import UploadReport, upload_model
from tasks.nodepool import NodePoolResult, ensure_node_pool


class DeployResult(BaseModel):
    cluster_id: str
    node_pool: NodePoolResult
    nodes: list[Node]
    upload: UploadReport


def list_pool_nodes(cluster: AckCluster, nodepool_id: str) -> list[Node]:
    """The pool's instances as ACK's DescribeClusterNodes reports them (charge type and spot strategy)."""
    return AckApi(cluster.credentials, cluster.cluster_id).describe_nodes(nodepool_id=nodepool_id)


@flow(
    name="elastic-inference-deploy",
    description="Deploy a TF Serving model to an elastic spot/pay-as-you-go node pool on ACK and prove it scales.",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    validate_parameters=True,
)
def deploy(
    spec: DeploySpec,
    cluster_block: str = "sandbox",
    show_progress: bool = False,
) -> DeployResult:
    """Run the procedure with ``spec`` against the ACK cluster saved as the ``AckCluster`` block ``cluster_block``."""
    logger = get_run_logger()
    cluster = AckCluster.load(cluster_block)
    if spec.cluster_id and spec.cluster_id != cluster.cluster_id:
        raise ValueError(
            f"spec.cluster_id {spec.cluster_id!r} differs from the cluster of block {cluster_block!r} "
            f"({cluster.cluster_id!r}); refusing to deploy to the wrong cluster"
        )
    spec = spec.with_cluster(cluster.cluster_id)
    logger.info("deploying %s (model %s) to cluster %s", spec.names.deployment, spec.model.name, cluster.cluster_id)

    pool_future = ensure_node_pool.submit(spec.node_pool, cluster.credentials, cluster.cluster_id)
    upload_future = upload_model.submit(spec, cluster.credentials, show_progress=show_progress)
    pool: NodePoolResult = pool_future.result()
    upload: UploadReport = upload_future.result()

    nodes = list_pool_nodes(cluster, pool.nodepool_id)
    logger.info("node pool %s (%s): %d instances", pool.name, pool.nodepool_id, len(nodes))
    return DeployResult(cluster_id=cluster.cluster_id, node_pool=pool, nodes=nodes, upload=upload)


def summarize(result: DeployResult) -> dict[str, Any]:
    """A short, printable summary (no secrets: the result holds none)."""
    spot = sum(1 for n in result.nodes if n.spot_strategy in ("SpotAsPriceGo", "SpotWithPriceLimit"))
    return {
        "cluster": result.cluster_id,
        "node_pool": f"{result.node_pool.name} ({result.node_pool.nodepool_id}), "
        f"{'created' if result.node_pool.created else 'existing'}, state {result.node_pool.state}",
        "nodes": f"{len(result.nodes)} ({len(result.nodes) - spot} pay-as-you-go, {spot} spot)",
        "upload": result.upload.summary(),
    }
