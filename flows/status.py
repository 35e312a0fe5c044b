"""The status flow: what serves a spec's host and path right now, its canary and weight, every version's replicas
and HPA, and the users' QPS (tasks/status.py). Read only: it changes nothing, so it takes no rollout lock."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger

from blocks import AckClusterRef
from clients.cluster import Cluster, resolve_cluster
from clients.logs import in_prefect_run
from core.spec import DeploySpec, form_title
from tasks.status import ServiceStatus, read_status, render_status_lines, render_status_markdown

ARTIFACT_KEY = "serving-status"


@flow(name="elastic-inference-status", description="Show the live version, the canary and its weight, every "
      "version's replicas and HPA, and the users' QPS.", validate_parameters=True)
def status(
    spec: Annotated[DeploySpec, form_title("Deploy spec")],
    cluster_block: Annotated[AckClusterRef, form_title("ACK cluster block")] = "sandbox",
) -> ServiceStatus:
    """Read the status of the serving of ``spec`` (its name, namespace, host and path) in the cluster of
    ``cluster_block``; log it and publish it as the markdown artifact ``serving-status``.

    Args:
        spec: The spec of the serving to look at: its serving name, namespace, ingress host, path and class.
        cluster_block: The cluster to look in: a saved ACK Cluster block, picked from the list or given by name.
    """
    logger = get_run_logger()
    spec, cluster = resolve_cluster(spec, cluster_block)
    with cluster.kube() as kube:
        result = read_status(kube, spec)
    for line in render_status_lines(result):
        logger.info("%s", line)
    publish_status(result)
    return result


def current_status(spec: DeploySpec, cluster: Cluster) -> ServiceStatus:
    """The same read outside a flow run (the CLI: no Prefect server needed for a look)."""
    with cluster.kube() as kube:
        return read_status.fn(kube, spec)


def publish_status(result: ServiceStatus) -> None:
    """The markdown artifact (inside a run only); a failure to create it is logged, never raised."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(markdown=render_status_markdown(result), key=ARTIFACT_KEY,
                                 description=f"Status of {result.serving_name}")
    except Exception as exc:  # an artifact is a view: never fail the run for one
        get_run_logger().warning("artifact %s not created: %s", ARTIFACT_KEY, exc)
