"""The deploy flow: ACK's "elastic inference on ECS" procedure as one Prefect flow.

    validate spec ─┬─ ensure_node_pool (ACK) ─┐
                   └─ upload_model (OSS) ─────┴─ kubeconfig (ACK) ─ preflight ─ storage ─ serving ─ hpa ─ ingress
                      ─ smoke predict ─ load test ‖ timeline sampler ─ verify ─ report ─ fail on a failed check

The node pool (minutes on ACK) and the model upload run concurrently. The flow reaches the cloud, real or
sandbox, only through the ``AckCluster`` block it is given by name: endpoints, credentials and a cluster id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from clients.ack import Node
from clients.cluster import Cluster, resolve_cluster
from clients.kube import KubeClients
from core.spec import DeploySpec
from tasks.autoscaling import apply_autoscaling
from tasks.ingress import IngressEndpoint, apply_ingress
from tasks.live import LiveVersion, RunKind, classify_run, find_live_version
from tasks.loadtest import LoadTestResult, run_load_test
from tasks.model import upload_model
from tasks.model_plan import UploadReport
from tasks.nodepool import NodePoolResult, ensure_node_pool
from tasks.preflight import preflight
from tasks.report import ReportFiles, run_label, safe_dir_name, write_report
from tasks.serving import apply_serving
from tasks.smoke import SmokeResult, smoke_predict
from tasks.storage import apply_storage
from tasks.timeline import TimelineSampler
from tasks.verify import VerificationReport, collect_facts, raise_if_failed, verify


class DeployResult(BaseModel):
    cluster_id: str
    node_pool: NodePoolResult
    nodes: list[Node]
    upload: UploadReport
    run_kind: RunKind = "first-deploy"
    live_before: LiveVersion | None = None
    endpoint: IngressEndpoint | None = None
    smoke: SmokeResult | None = None
    load_test: LoadTestResult | None = None
    verification: VerificationReport | None = None
    report: ReportFiles | None = None


@task(name="kubeconfig", cache_policy=NO_CACHE)
def fetch_kubeconfig(cluster: Cluster) -> KubeClients:
    """ACK DescribeClusterUserKubeconfig: a kubeconfig with a temporary token, held in memory only."""
    text, expiration = cluster.user_kubeconfig()
    get_run_logger().info("kubeconfig for cluster %s (expires %s)", cluster.cluster_id, expiration)
    return KubeClients.from_kubeconfig_text(text)


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
    reports_dir: str = "reports",
    teardown_on_failure: bool = False,
) -> DeployResult:
    """Run the procedure with ``spec`` against the ACK cluster saved as the ``AckCluster`` block ``cluster_block``.

    Every step is idempotent: running the flow twice leaves the same cloud and cluster state. Any failed
    verification check fails the run after the report is written. With ``teardown_on_failure`` a failed run
    removes what it created (the model objects stay).
    """
    logger = get_run_logger()
    spec, cluster = resolve_cluster(spec, cluster_block)
    logger.info("deploying %s (model %s) to cluster %s", spec.names.deployment, spec.model.name, cluster.cluster_id)
    try:
        return _deploy(spec, cluster, show_progress, Path(reports_dir).resolve())
    except BaseException:
        if teardown_on_failure:
            from flows.teardown import teardown

            logger.error("deploy failed: tearing down what it created (teardown_on_failure)")
            teardown(spec=spec, cluster_block=cluster_block, return_state=True)
        raise


def _deploy(spec: DeploySpec, cluster: Cluster, show_progress: bool, reports_dir: Path) -> DeployResult:
    logger = get_run_logger()
    creds = cluster.credentials
    pool_future = ensure_node_pool.submit(spec.node_pool, creds, cluster.cluster_id)
    upload_future = upload_model.submit(spec, creds, show_progress=show_progress)
    pool: NodePoolResult = pool_future.result()
    upload: UploadReport = upload_future.result()

    with fetch_kubeconfig(cluster) as kube:
        preflight(kube, spec)
        live = find_live_version(kube, spec)
        apply_storage(kube, spec, cluster.oss_url(spec), creds.access_key_id, creds.access_key_secret)
        apply_serving(kube, spec)
        apply_autoscaling(kube, spec)
        _, endpoint = apply_ingress(kube, spec)
        smoke = smoke_predict(endpoint, spec)
        logger.info("serving at %s (Host: %s)", endpoint.url, endpoint.host)

        run_dir = reports_dir / safe_dir_name(run_label())
        load: LoadTestResult | None = None
        sampler = TimelineSampler(kube, spec, pool.nodepool_id).start()
        try:
            if spec.load_test.enabled:
                load = run_load_test(endpoint, spec, run_dir / "locust")
        finally:
            timeline = sampler.stop()
        facts = collect_facts(kube, cluster.ack(), spec, pool.nodepool_id)
        verification = verify(facts, spec, load, timeline)
        files = write_report(spec, verification, endpoint, load, timeline, facts, reports_dir=reports_dir,
                             run_name=run_dir.name, nodepool_id=pool.nodepool_id)
    raise_if_failed(verification, where=str(files.directory))
    return DeployResult(
        cluster_id=cluster.cluster_id, run_kind=classify_run(spec, live), live_before=live, node_pool=pool,
        nodes=cluster.ack().describe_nodes(nodepool_id=pool.nodepool_id),
        upload=upload, endpoint=endpoint, smoke=smoke, load_test=load, verification=verification, report=files,
    )


def summarize(result: DeployResult) -> dict[str, Any]:
    """A short, printable summary (no secrets: the result holds none)."""
    spot = sum(1 for n in result.nodes if n.spot_strategy in ("SpotAsPriceGo", "SpotWithPriceLimit"))
    out: dict[str, Any] = {
        "cluster": result.cluster_id,
        "node_pool": f"{result.node_pool.name} ({result.node_pool.nodepool_id}), "
        f"{'created' if result.node_pool.created else 'existing'}, state {result.node_pool.state}",
        "nodes": f"{len(result.nodes)} ({len(result.nodes) - spot} pay-as-you-go, {spot} spot)",
        "upload": result.upload.summary(),
        "run": result.run_kind + (f" (live before: {result.live_before})" if result.live_before else ""),
    }
    if result.endpoint:
        out["endpoint"] = f"{result.endpoint.url} (Host: {result.endpoint.host})"
    if result.load_test:
        lt = result.load_test
        out["load test"] = (f"{lt.requests} requests, {lt.failures} failures, {lt.rps:.1f} req/s, "
                            f"p50 {lt.p50_ms} ms, p95 {lt.p95_ms} ms, p99 {lt.p99_ms} ms")
    if result.verification:
        out["checks"] = ", ".join(f"{c.name} {'PASSED' if c.passed else 'FAILED'}" for c in result.verification.checks)
    if result.report:
        out["report"] = str(result.report.directory)
    return out
