"""The deploy flow: ACK's "elastic inference on ECS" procedure as one Prefect flow.

    validate spec ─ kubeconfig (ACK) ─ preflight ─ service lock ─ recover ─ live version (its node pools) ─┐
        ┌─ ensure_node_pool (ACK) ─┐                                                                     │
        └─ upload_model (OSS) ─────┴─ storage ─ serving ─ hpa ─ ingress  <────────────────────────────────┘
                      ─ smoke predict ─ load test ‖ timeline sampler ─ verify ─ report ─ fail on a failed check

Preflight (ACK reads, credentials, add-ons, node scaling) runs before anything is created, so a cluster that
cannot run the procedure is told so in one message without a node pool, an upload or an object left behind. Then
the run takes the service lock: the node pool is reconciled only under it, once the run knows which pools the live
version runs on (a change that would disrupt it is refused, tasks/nodepool.py). The node pool (minutes on ACK) and
the model upload run concurrently; the upload goes to the release's own prefix (``<model_path>/<release>``,
``core.spec.DerivedNames``), so it changes nothing another release's pods read. The flow reaches the cloud, real or
sandbox, only through the ``AckCluster`` block it is given (picked in the UI, or by name): endpoints, credentials
and a cluster id.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from blocks import AckClusterRef
from clients.ack import Node
from clients.cluster import Cluster, resolve_cluster
from clients.kube import KubeClients
from clients.lease import LeaseLock, acquire, rollout_lease_name
from core.spec import DeploySpec, form_title
from flows.rollout import RolloutReport, roll_out
from tasks.autoscaling import apply_autoscaling
from tasks.ingress import IngressEndpoint, apply_ingress, wait_for_address
from tasks.live import LiveVersion, RunKind, classify_run, find_live_version, live_usage
from tasks.loadtest import LoadTestResult, run_load_test
from tasks.model import upload_model
from tasks.model_plan import UploadReport
from tasks.nodepool import NodePoolResult, ensure_node_pool, refuse_disruptive_change
from tasks.preflight import preflight
from tasks.report import ReportFiles, run_label, safe_dir_name, write_report
from tasks.rollout.versions import record_release, recover
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
    recovered: list[str] = []
    rollout: RolloutReport | None = None
    endpoint: IngressEndpoint | None = None
    smoke: SmokeResult | None = None
    load_test: LoadTestResult | None = None
    verification: VerificationReport | None = None
    report: ReportFiles | None = None


# How long a run waits for another run of the same service (the nightly schedule and a registry event, say) to
# finish before it gives up, in seconds.
SERVICE_LOCK_WAIT_S = 1800.0


def service_lock(kube: KubeClients, spec: DeploySpec) -> LeaseLock:
    """One run at a time changes a service: the Lease :func:`clients.lease.rollout_lease_name` of the spec's
    Ingress host and path, in its namespace, held by this flow run until the run ends (see clients/lease.py). It
    is named by what users reach, not by the serving name, so two specs that serve the same host and path with
    different serving names exclude each other."""
    holder = f"{socket.gethostname()}/{flow_run.id or 'local'}"
    name = rollout_lease_name(spec.ingress.host, spec.ingress.path)
    return acquire(kube, spec.names.namespace, name, holder, SERVICE_LOCK_WAIT_S)


@task(name="kubeconfig", cache_policy=NO_CACHE)
def fetch_kubeconfig(cluster: Cluster) -> KubeClients:
    """ACK DescribeClusterUserKubeconfig: a kubeconfig with a temporary token, held in memory only."""
    text, expiration = cluster.user_kubeconfig()
    get_run_logger().info("kubeconfig for cluster %s (expires %s)", cluster.cluster_id, expiration)
    return KubeClients.from_kubeconfig_text(text).renewing(lambda: cluster.user_kubeconfig()[0])


@flow(
    name="elastic-inference-deploy",
    description="Deploy a TF Serving model to an elastic spot/pay-as-you-go node pool on ACK and prove it scales.",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    validate_parameters=True,
)
def deploy(
    spec: Annotated[DeploySpec, form_title("Deploy spec")],
    cluster_block: Annotated[AckClusterRef, form_title("ACK cluster block")] = "sandbox",
    show_progress: Annotated[bool, form_title("Show progress bars")] = False,
    reports_dir: Annotated[str, form_title("Reports directory")] = "reports",
    teardown_on_failure: Annotated[bool, form_title("Tear down on failure")] = False,
) -> DeployResult:
    """Run the procedure with ``spec`` against the ACK cluster of the ``AckCluster`` block ``cluster_block``.

    Every step is idempotent: running the flow twice leaves the same cloud and cluster state. Any failed
    verification check fails the run after the report is written. With ``teardown_on_failure`` a failed run
    removes what it created (the model objects stay), never what a live version serves with.

    Args:
        spec: What to deploy and how: one section per step of the procedure (node pool, model, storage, serving,
            autoscaling, ingress, load test, verification).
        cluster_block: The cluster to deploy to: a saved ACK Cluster block (its cluster id, credentials and
            endpoints), picked from the list or given by name. `sandbox` is the block `elastic-inference sandbox
            up` saves.
        show_progress: Draw progress bars of the model upload on the worker's terminal (the run's logs and its
            upload progress artifact report the upload either way).
        reports_dir: Directory the run's report (report.md, report.json, timeline.png) is written under, on the
            worker's machine, relative to its working directory (the repository); one sub-directory per run.
        teardown_on_failure: When the run fails, remove what it created: Ingress, HPA, serving objects, PV/PVC
            and node pool (the uploaded model stays), never what a version that served before the run uses.
    """
    logger = get_run_logger()
    spec, cluster = resolve_cluster(spec, cluster_block)
    logger.info("deploying %s (model %s) to cluster %s", spec.names.deployment, spec.model.name, cluster.cluster_id)
    found: list[LiveVersion | None] = []  # what served before this run, once looked up
    try:
        return _deploy(spec, cluster, show_progress, Path(reports_dir).resolve(), found)
    except BaseException:
        if teardown_on_failure:
            from flows.teardown import teardown

            # Only a run that found nothing live may remove all it made; otherwise (something served before, or
            # the run failed before it could look) the teardown leaves whatever serves at that moment.
            first_deploy = bool(found) and found[0] is None
            logger.error("deploy failed: tearing down what it created (teardown_on_failure)")
            teardown(spec=spec, cluster_block=cluster.reference, keep_live=not first_deploy, return_state=True)
        raise


def _deploy(spec: DeploySpec, cluster: Cluster, show_progress: bool, reports_dir: Path,
            found: list[LiveVersion | None]) -> DeployResult:
    creds = cluster.credentials
    ack = cluster.ack()
    with fetch_kubeconfig(cluster) as kube:
        preflight(kube, spec, ack=ack, has_security_token=creds.security_token is not None)
        with service_lock(kube, spec) as lock:
            recovered = recover(kube, spec, creds, still_held=lock.check)
            live = find_live_version(kube, spec)
            found.append(live)
            kind = classify_run(spec, live)
            # The pool is reconciled under the lock, knowing which pools the live version's pods run on: a change
            # that would evict or hold back those pods is refused before anything changes (tasks/nodepool.py).
            live_pools = live_usage(kube, spec, live).nodepool_ids if live is not None else set()
            refuse_disruptive_change(spec.node_pool, creds, cluster.cluster_id, live_pools)
            lock.check()
            pool_future = ensure_node_pool.submit(spec.node_pool, creds, cluster.cluster_id,
                                                  live_nodepool_ids=live_pools)
            upload_future = upload_model.submit(spec, creds, show_progress=show_progress)
            pool: NodePoolResult = pool_future.result()
            upload: UploadReport = upload_future.result()
            apply_storage(kube, spec, cluster.oss_url(spec), creds.access_key_id, creds.access_key_secret,
                          security_token=creds.security_token)
            apply_serving(kube, spec)
            rollout: RolloutReport | None = None
            if kind != "replace-live":
                apply_autoscaling(kube, spec)
                _, endpoint = apply_ingress(kube, spec)
                record_release(kube, spec, spec.names.ingress)
                proof = _prove(kube, ack, spec, pool, endpoint, reports_dir)
            else:  # a rollout: users stay on the live version until the new one has proved itself
                assert live is not None
                endpoint = wait_for_address(kube, spec, live.ingress)
                rollout, proof = roll_out(kube, spec, live, lock, creds, cluster.sls(spec), endpoint,
                                          lambda preview: _judged(_prove(kube, ack, spec, pool, preview, reports_dir)),
                                          reports_dir / safe_dir_name(run_label()))
    verification, files = proof.verification, proof.files
    raise_if_failed(verification, where=str(files.directory))
    return DeployResult(
        cluster_id=cluster.cluster_id, run_kind=kind, live_before=live, node_pool=pool,
        nodes=cluster.ack().describe_nodes(nodepool_id=pool.nodepool_id), recovered=recovered, rollout=rollout,
        upload=upload, endpoint=endpoint, smoke=proof.smoke, load_test=proof.load, verification=verification,
        report=files,
    )


def _short(text: str, limit: int = 160) -> str:
    """One line of at most ``limit`` characters (a check's detail may quote whole error bodies)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Proof(BaseModel):
    smoke: SmokeResult
    load: LoadTestResult | None
    verification: VerificationReport
    files: ReportFiles


def _judged(proof: Proof) -> tuple[Proof, str | None]:
    """The proof and, when its checks failed, why (each failed check, and where the report is)."""
    if proof.verification.passed:
        return proof, None
    failed = "; ".join(f"{c.name}: {_short(c.detail)}" for c in proof.verification.failed)
    return proof, f"{failed} (report {proof.files.directory})"


def _prove(kube: KubeClients, ack: Any, spec: DeploySpec, pool: NodePoolResult, target: IngressEndpoint,
           reports_dir: Path) -> Proof:
    """Smoke predict, the stress test with the timeline sampled, the checks, the report: all through ``target``
    (the production ingress; with the canary header in a rollout)."""
    smoke = smoke_predict(target, spec)
    get_run_logger().info("serving at %s (Host: %s)", target.url, target.host)
    run_dir = reports_dir / safe_dir_name(run_label())
    load: LoadTestResult | None = None
    sampler = TimelineSampler(kube, spec, pool.nodepool_id,
                              instance_nodes=lambda: ack.describe_nodes(nodepool_id=pool.nodepool_id)).start()
    try:
        if spec.load_test.enabled:
            load = run_load_test(target, spec, run_dir / "locust")
    finally:
        timeline = sampler.stop()
    facts = collect_facts(kube, ack, spec, pool.nodepool_id)
    verification = verify(facts, spec, load, timeline)
    files = write_report(spec, verification, target, load, timeline, facts, reports_dir=reports_dir,
                         run_name=run_dir.name, nodepool_id=pool.nodepool_id)
    return Proof(smoke=smoke, load=load, verification=verification, files=files)


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
    if result.recovered:
        out["recovered"] = "; ".join(result.recovered)
    if result.rollout:
        r = result.rollout
        steps = ", ".join(f"{s.stats.step} {s.stats.weight}% {s.stats.requests} req {s.stats.failures} failed "
                          f"p95 {s.stats.p95_ms or 0:.0f} ms" for s in r.steps)
        out["rollout"] = f"{r.strategy}: {r.decision} ({r.reason}); {steps}"
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
