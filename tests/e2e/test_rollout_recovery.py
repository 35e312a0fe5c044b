"""Rollouts end to end, the other strategies and failures (issue 13): blue-green switches at once and switches back
when its bake fails; a second run for the same service fails clearly while one runs; a killed run is recovered by
the next one. Under constant user load through the main Ingress, on a real Prefect server and a sandbox of its own.

Their pods start at the sandbox's speed: the promote and roll-back test (``test_rollout.py``) runs pods in real
time, and these two would add about 14 minutes to the suite so (measured: 450 s and 376 s against 98 s and 33 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from demo_spec import demo_spec
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from openloop import OpenLoopLoad
from polling import wait_for

from cli.sandbox_profile import save_sandbox_blocks
from core.demo_model import generate_demo_model
from core.spec import DeploySpec
from loadtests.common import build_predict_body

V1, V2, V3 = 1623831335, 1623831400, 1623831500
LATENCY_SLO_MS = 8000.0  # as in test_rollout.py: the stress test on the sandbox's shared 2 cores


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("rollout-recovery-sandbox"), speed=50.0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def block(sandbox, prefect_api) -> str:
    return save_sandbox_blocks(sandbox.info, name="e2e-rollout-recovery")


def test_blue_green_switches_at_once_and_switches_back_when_the_bake_fails(sandbox, tmp_path_factory, block,
                                                                          tmp_path) -> None:
    """blue-green, under a light constant user load: all user traffic moves at once, the previous version keeps
    its replicas and HPA through the bake window; a version too slow for the bake's p95 is switched back from, and
    removed. No user request fails across the promotion and the switch-back: the drain (8 s) outlasts ingress-nginx's
    sync and reload (up to ~5.3 s) and v3's slowest request in flight (3 s), so no request is routed to, or left on,
    a release being removed."""
    from flows.deploy import deploy
    from flows.rollout import RolloutFailed

    base = tmp_path_factory.mktemp("bg-model") / "chnsenticorp"
    generate_demo_model(base, version=V1)
    generate_demo_model(base, version=V2, seed=2)
    generate_demo_model(base, version=V3, seed=3, extra_latency_ms=3000)
    api = k8s_config.new_client_from_config(config_file=sandbox.info["kubeconfig"])
    apps, net = k8s.AppsV1Api(api), k8s.NetworkingV1Api(api)

    def bg(version: int) -> DeploySpec:
        # 2 replicas of 4 slots hold v3's 3 s requests at the analysis's 1.5/s and the users' 0.5/s without a queue
        return demo_spec(base, "bg", {
            "model.version_policy": f"specific:{version}", "serving.version": f"v{version}",
            "autoscaling.min_replicas": 2,
            "load_test.enabled": False, "verification.require_scale_out": False, "verification.require_mix": False,
            "rollout.strategy": "blue-green", "rollout.bake_seconds": 8.0, "rollout.analysis_rps": 1.5,
            "rollout.min_requests": 8, "rollout.max_p95_ms": 2000.0, "rollout.drain_seconds": 8.0})

    v1, v2, v3 = bg(V1), bg(V2), bg(V3)
    ns = v1.names.namespace

    def routed() -> str:
        return net.read_namespaced_ingress(v1.names.ingress, ns).spec.rules[0].http.paths[0].backend.service.name

    first = deploy(spec=v1, cluster_block=block, reports_dir=str(tmp_path / "b1"))
    endpoint = first.endpoint
    assert endpoint is not None
    meta = httpx.get(f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}/metadata", headers={"Host": endpoint.host})
    predict_url = f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}:predict"
    with OpenLoopLoad(predict_url, endpoint.host, build_predict_body(meta.json()), 0.5) as load:
        time.sleep(2)
        second = deploy(spec=v2, cluster_block=block, reports_dir=str(tmp_path / "b2"))
        assert second.rollout is not None and second.rollout.decision == "promoted"
        assert [s.stats.step for s in second.rollout.steps] == ["bake"]
        bake = second.rollout.steps[0].stats
        assert bake.weight == 100 and bake.stable_available >= 1  # v1 still ready through the bake
        assert routed() == v2.names.service
        assert apps.read_namespaced_deployment(v1.names.deployment, ns).spec.replicas == 0

        with pytest.raises(RolloutFailed, match=r"bake \(100%\): p95"):
            deploy(spec=v3, cluster_block=block, reports_dir=str(tmp_path / "b3"))
        time.sleep(2)
        load.stop()
    assert routed() == v2.names.service  # switched back, v2's HPA re-created
    assert [h.spec.scale_target_ref.name for h in k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(
        ns).items if h.metadata.labels.get("servingName") == v2.serving.name] == [v2.names.deployment]
    assert not [d for d in apps.list_namespaced_deployment(ns).items if d.metadata.name == v3.names.deployment]
    errors = OpenLoopLoad.errors(load.samples)
    assert len(load.samples) > 20 and not errors, errors[:5]
    print(f"blue-green: {len(load.samples)} user requests across a promotion and a switch-back, 0 failed")


def test_a_second_run_fails_clearly_a_killed_rollout_is_recovered_and_the_pool_shrinks(
    sandbox, tmp_path_factory, block, prefect_api, tmp_path, monkeypatch
) -> None:
    """Under constant user load: a rollout (v2) run by the CLI in a process of its own is at its first canary step
    when a second run (v4) for the same service fails at once, naming the lease's holder and changing nothing; the
    first run is then killed (SIGKILL, mid-step); the next run (v4) waits out the dead run's lease (until it has
    seen it unchanged for its 60 s), undoes its canary, rolls v4 out and promotes it. No user request fails
    throughout, and once v1 is retired the pool gives back the nodes it no longer needs."""
    import flows.deploy
    from clients.lease import LeaseHeld, rollout_lease_name
    from flows.deploy import deploy

    V4 = 1623831600
    base = tmp_path_factory.mktemp("kill-model") / "chnsenticorp"
    for version, seed in ((V1, 1), (V2, 2), (V4, 4)):
        generate_demo_model(base, version=version, seed=seed)
    api = k8s_config.new_client_from_config(config_file=sandbox.info["kubeconfig"])
    core, apps, auto, net = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.AutoscalingV2Api(api), k8s.NetworkingV1Api(api)

    def spec(version: int, step_s: float) -> DeploySpec:
        return demo_spec(base, "kill", {
            "model.version_policy": f"specific:{version}", "serving.version": f"v{version}",
            "autoscaling.min_replicas": 2, "autoscaling.max_replicas": 4,
            "load_test.stages": [{"duration_s": 8, "users": 5, "spawn_rate": 5}],
            "verification.require_scale_out": False, "verification.require_mix": False,
            "rollout.steps": [50], "rollout.step_seconds": step_s, "rollout.analysis_rps": 5.0,
            "rollout.drain_seconds": 2.0, "verification.p95_ms": LATENCY_SLO_MS,
            "rollout.max_p95_ms": LATENCY_SLO_MS})

    v1, v2, v4 = spec(V1, 10.0), spec(V2, 600.0), spec(V4, 10.0)  # v2's step outlasts the test: it is killed in it
    ns = v1.names.namespace

    def routed() -> str:
        return net.read_namespaced_ingress(v1.names.ingress, ns).spec.rules[0].http.paths[0].backend.service.name

    def canary() -> tuple[str, str] | None:
        try:
            ing = net.read_namespaced_ingress(v1.names.canary_ingress, ns)
        except k8s.ApiException:
            return None
        return (ing.spec.rules[0].http.paths[0].backend.service.name,
                (ing.metadata.annotations or {}).get("nginx.ingress.kubernetes.io/canary-weight", ""))

    first = deploy(spec=v1, cluster_block=block, reports_dir=str(tmp_path / "k1"))
    endpoint, pool_id = first.endpoint, first.node_pool.nodepool_id
    assert endpoint is not None

    def pool_nodes() -> int:
        return len(core.list_node(label_selector=f"alibabacloud.com/nodepool-id={pool_id}").items)

    meta = httpx.get(f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}/metadata", headers={"Host": endpoint.host})
    predict_url = f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}:predict"
    spec_file = tmp_path / "v2.json"
    spec_file.write_text(json.dumps(v2.model_dump(mode="json")))
    cli = Path(sys.executable).with_name("elastic-inference")
    with OpenLoopLoad(predict_url, endpoint.host, build_predict_body(meta.json()), 10.0) as load:
        run = subprocess.Popen([str(cli), "deploy", str(spec_file), "--cluster-block", block],
                               env={**os.environ, "PREFECT_API_URL": prefect_api}, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=(tmp_path / "v2.log").open("w"),
                               start_new_session=True)
        try:
            wait_for(lambda: canary() == (v2.names.service, "50") or run.poll() is not None,
                     "the CLI's v2 rollout to reach its 50% step", timeout=300)
            assert run.poll() is None, (tmp_path / "v2.log").read_text()[-3000:]

            monkeypatch.setattr(flows.deploy, "SERVICE_LOCK_WAIT_S", 3.0)
            lease = rollout_lease_name(v4.ingress.host, v4.ingress.path)  # by host and path, not serving name
            with pytest.raises(LeaseHeld, match=rf"another run holds the lease {ns}/{lease} "):
                deploy(spec=v4, cluster_block=block, reports_dir=str(tmp_path / "k4a"))
            assert canary() == (v2.names.service, "50") and routed() == v1.names.service  # nothing changed
            monkeypatch.undo()
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)
        killed = time.monotonic()
        assert canary() == (v2.names.service, "50") and routed() == v1.names.service  # as the dead run left it

        fourth = deploy(spec=v4, cluster_block=block, reports_dir=str(tmp_path / "k4"))
        promoted = time.monotonic()
        peak = pool_nodes()
        load.stop()

    assert fourth.rollout is not None and fourth.rollout.decision == "promoted", fourth.rollout
    assert any(v2.names.deployment in r for r in fourth.recovered), fourth.recovered
    assert routed() == v4.names.service and canary() is None
    assert v2.names.deployment not in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items}
    assert apps.read_namespaced_deployment(v1.names.deployment, ns).spec.replicas == 0
    assert [h.spec.scale_target_ref.name for h in auto.list_namespaced_horizontal_pod_autoscaler(ns).items
            if h.metadata.labels.get("servingName") == v1.serving.name] == [v4.names.deployment]
    errors = OpenLoopLoad.errors(load.samples)
    assert not errors, errors[:5]
    print(f"killed run recovered in {promoted - killed:.1f}s; {len(load.samples)} user requests, 0 failed; "
          f"{peak} pool nodes at promotion")

    # v1's pods are gone and v4's HPA settles at its minimum: the autoscaler removes the nodes left unneeded
    wait_for(lambda: pool_nodes() < peak, f"the pool to shrink below {peak} nodes", timeout=180)
    print(f"pool shrank to {pool_nodes()} nodes {time.monotonic() - promoted:.1f}s after the promotion")
