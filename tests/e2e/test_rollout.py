"""Rollouts end to end (issue 13): v1 serves, a good v2 is canaried and promoted, a v3 broken for real users only
(it fails on real text, and answers the flow's own sample) is rolled back at the step where the users' requests in
SLS show it, all under a constant open-loop user load through the main Ingress, on a real Prefect server and a
sandbox of its own.

What the users saw is read from the sandbox ingress's access log, as SLS would hold it: every request counts under
the main route (``proxy_upstream_name``) and, when a canary served it, under the canary's
``proxy_alternative_upstream_name`` too. A thread records both totals each time the canary Ingress's weight
changes, so each step's share of user requests is (canary lines - analysis requests) / (main lines - analysis
requests), the analysis requests being those the run reports for the step.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
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
from core.demo_model import example_inputs, generate_demo_model
from core.spec import DeploySpec, serving_fullname
from loadtests.common import build_predict_body

V1, V2, V3 = 1623831335, 1623831400, 1623831500
USER_RATE = 30.0  # requests/s through the main Ingress, the whole time
STEPS = [20, 40]
STEP_S = 30.0
# The isolated stress test goes through the preview host, counted on the new release's own route: its HPA scales
# it out for the stress load alone, during the test (before, it read the users' route and came pre-scaled for
# traffic it never served). The 30-user load is held for a scale-out stage, then for the final stage the SLOs judge.
LATENCY_SLO_MS = 8000.0  # see spec_for
STRESS = [{"duration_s": 5, "users": 2, "spawn_rate": 2}, {"duration_s": 15, "users": 30, "spawn_rate": 15},
          {"duration_s": 15, "users": 30, "spawn_rate": 15}]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("rollout-sandbox"), speed=50.0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model, three versions: v3 fails every input reaching token id 1000 (a property of its files): real text
    does, the flow's own sample (token id 1 throughout: smoke, stress test, analysis) does not."""
    base = tmp_path_factory.mktemp("model") / "chnsenticorp"
    generate_demo_model(base, version=V1)
    generate_demo_model(base, version=V2, seed=2)
    generate_demo_model(base, version=V3, seed=3, error_from_token=1000)
    return base


@pytest.fixture(scope="module")
def block(sandbox, prefect_api) -> str:
    return save_sandbox_blocks(sandbox.info, name="e2e-rollout")


def spec_for(model_dir: Path, version: int, **overrides) -> DeploySpec:
    return demo_spec(model_dir, "roll", {
        "model.version_policy": f"specific:{version}",
        "serving.version": f"v{version}",
        "autoscaling.min_replicas": 2,
        "autoscaling.max_replicas": 4,
        "load_test.stages": STRESS,
        "load_test.sample_interval_s": 1.0,
        "rollout.steps": STEPS,
        "rollout.step_seconds": STEP_S,
        "rollout.analysis_rps": 5.0,
        "rollout.drain_seconds": 3.0,
        # what these runs decide on is errors and traffic shares; latency on a 2-core machine shared with the rest
        # of the suite is not the new release's (the blue-green test below judges latency, with a wide margin)
        "verification.p95_ms": LATENCY_SLO_MS,
        "rollout.max_p95_ms": LATENCY_SLO_MS,
        **overrides,
    })


class WeightWatch:
    """Snapshots (time, canary weight, main-route lines, canary lines) whenever the canary's weight changes."""

    def __init__(self, sandbox, net: k8s.NetworkingV1Api, spec: DeploySpec, main_route: str) -> None:
        self.sandbox, self.net, self.spec, self.main_route = sandbox, net, spec, main_route
        self.canary_route = f"{spec.names.namespace}-{spec.names.service}-{spec.serving.rest_api_port}"
        self.marks: list[tuple[float, int | None, int, int]] = []
        self.own_at_canary: int | None = None  # lines on the new release's own route when its canary appeared
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _weight(self) -> int | None:
        try:
            ing = self.net.read_namespaced_ingress(self.spec.names.canary_ingress, self.spec.names.namespace)
        except k8s.ApiException:
            return None
        return int((ing.metadata.annotations or {}).get("nginx.ingress.kubernetes.io/canary-weight", "0"))

    def _run(self) -> None:
        log = self.sandbox.services.ingress.log
        last: object = object()
        while not self._stop.is_set():
            w = self._weight()
            if w != last:
                self.marks.append((time.monotonic(), w, log.total(self.main_route),
                                   log.total(self.canary_route, "proxy_alternative_upstream_name")))
                if w is not None and self.own_at_canary is None:
                    self.own_at_canary = log.total(self.canary_route)
                last = w
            self._stop.wait(0.05)
        self.marks.append((time.monotonic(), -1, log.total(self.main_route),
                           log.total(self.canary_route, "proxy_alternative_upstream_name")))

    def __enter__(self) -> WeightWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def seconds(self, weight: int) -> float:
        """How long the first phase at ``weight`` lasted."""
        i = next(i for i, m in enumerate(self.marks) if m[1] == weight)
        return self.marks[i + 1][0] - self.marks[i][0]

    def phases(self) -> list[tuple[int | None, int, int]]:
        """(weight, main lines, canary lines) of each phase between weight changes."""
        return [(w, m2 - m1, c2 - c1) for (_, w, m1, c1), (_, _, m2, c2) in itertools.pairwise(self.marks)]


def pods_of(core: k8s.CoreV1Api, spec: DeploySpec) -> dict[str, int]:
    pods = core.list_namespaced_pod(spec.names.namespace, label_selector=f"release={spec.names.release}").items
    return {p.metadata.name: sum(c.restart_count for c in (p.status.container_statuses or [])) for p in pods}


def test_a_good_version_is_promoted_and_a_bad_one_rolled_back_under_constant_load(
    sandbox, model_dir, block, tmp_path
) -> None:
    from flows.deploy import deploy
    from flows.rollback import rollback
    from flows.rollout import RolloutFailed

    api = k8s_config.new_client_from_config(config_file=sandbox.info["kubeconfig"])
    core, apps, auto, net = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.AutoscalingV2Api(api), k8s.NetworkingV1Api(api)

    v1 = spec_for(model_dir, V1, **{"load_test.enabled": False, "verification.require_scale_out": False,
                                    "verification.require_mix": False})
    first = deploy(spec=v1, cluster_block=block, reports_dir=str(tmp_path / "r1"))
    assert first.run_kind == "first-deploy" and first.rollout is None
    endpoint = first.endpoint
    assert endpoint is not None
    ns = v1.names.namespace
    main_route = f"{ns}-{v1.names.service}-{v1.serving.rest_api_port}"
    meta = httpx.get(f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}/metadata", headers={"Host": endpoint.host})
    # the users send real text (token ids across the vocabulary); the flow's own requests, a sample of token id 1
    body = {"signature_name": build_predict_body(meta.json())["signature_name"],
            "inputs": example_inputs(batch=1, seed=11)}
    assert max(body["inputs"]["input_ids"][0]) >= 1000
    predict_url = f"{endpoint.url.rstrip('/')}/v1/models/{v1.model.name}:predict"

    v2 = spec_for(model_dir, V2)
    main_route_v2 = f"{ns}-{v2.names.service}-{v2.serving.rest_api_port}"
    # v3's short stress test is there to show its errors, not a scale-out (its HPA sees only that load now)
    v3 = spec_for(model_dir, V3, **{"load_test.stages": [{"duration_s": 10, "users": 10, "spawn_rate": 10}],
                                    "verification.require_scale_out": False})
    with OpenLoopLoad(predict_url, endpoint.host, body, USER_RATE) as load:
        time.sleep(2)  # the user load is flowing before the rollout begins
        with WeightWatch(sandbox, net, v2, main_route) as watch:
            second = deploy(spec=v2, cluster_block=block, reports_dir=str(tmp_path / "r2"))
        v2_done = time.monotonic()
        assert second.run_kind == "replace-live" and second.rollout is not None
        assert second.rollout.decision == "promoted", second.rollout.reason
        v2_pods = pods_of(core, v2)
        after_v2 = {
            "v1 replicas": apps.read_namespaced_deployment(v1.names.deployment, ns).spec.replicas,
            "HPA targets": [h.spec.scale_target_ref.name for h in auto.list_namespaced_horizontal_pod_autoscaler(ns).items],
            "main": net.read_namespaced_ingress(v1.names.ingress, ns).spec.rules[0].http.paths[0].backend.service.name,
            "canary": any(i.metadata.name == v2.names.canary_ingress for i in net.list_namespaced_ingress(ns).items),
        }

        v3_started = time.time()
        with pytest.raises(RolloutFailed) as failed:
            deploy(spec=v3, cluster_block=block, reports_dir=str(tmp_path / "r3"))
        v3_done, v3_ended = time.monotonic(), time.time()
        main_after_v3 = net.read_namespaced_ingress(v1.names.ingress, ns).spec.rules[0].http.paths[0].backend
        v2_pods_after_v3 = pods_of(core, v2)

        back = rollback(spec=v3, cluster_block=block)  # by hand: the previous kept version, v1, serves again
        back_done = time.monotonic()
        load.stop()

    # --- good v2 -------------------------------------------------------------------------------------------------
    during_v2 = load.between(load.started, v2_done)
    assert not OpenLoopLoad.errors(during_v2), OpenLoopLoad.errors(during_v2)[:5]
    analysis = {s.stats.weight: s.stats.requests for s in second.rollout.steps}
    phases = watch.phases()
    weights_seen = [w for w, _, _ in phases if w not in (None, -1)]
    assert weights_seen[:1] == [0] and [w for w in weights_seen if w] == STEPS, phases
    for weight, main_lines, canary_lines in phases:
        if weight == 0:  # before step 1: users stay on v1; only the flow's proof of the header reached v2
            # 3 reads in a row (status + metadata each) once merged; a few more while ingress-nginx reloads, and
            # the few user requests that can pass between setting weight 20 and this test's 50 ms poll noticing it
            assert 6 <= canary_lines <= 40, (canary_lines, phases)
            # the users, on v1, through the whole phase (it lasts as long as the proof: about a second)
            assert main_lines - canary_lines >= 0.5 * USER_RATE * watch.seconds(0) - 2, (phases, watch.seconds(0))
        elif weight in STEPS:
            users = main_lines - analysis[weight]
            share = 100 * (canary_lines - analysis[weight]) / users
            assert abs(share - weight) <= 5, f"step {weight}%: users' share on the canary {share:.1f}% ({phases})"
            print(f"step {weight}%: {users} user requests, {share:.1f}% on the canary")
    # the isolated stress test went through the preview host: on v2's own route, not the users' (main) route
    lt = second.load_test
    assert lt is not None and lt.requests > 0
    preview_requests = lt.requests + lt.metadata_requests + 2  # Locust's predicts and metadata, the smoke's 2
    assert watch.own_at_canary is not None and watch.own_at_canary >= preview_requests, (watch.own_at_canary,
                                                                                         preview_requests)
    assert after_v2 == {"v1 replicas": 0, "HPA targets": [v2.names.deployment], "main": v2.names.service,
                        "canary": False}

    # v1 went to zero only once SLS showed its route quiet after the switch
    assert second.rollout.promotion is not None, second.rollout
    assert second.rollout.promotion.quiet.startswith(f"SLS: 0 requests on {main_route} over ["), second.rollout
    md = next((tmp_path / "r2").glob("*/rollout.md")).read_text()
    assert "decision: **promoted**" in md and "| step 2 | 40 |" in md and "data:image/png;base64," in md
    assert f"- retired {v1.names.deployment} (scaled to zero) once SLS: 0 requests on {main_route}" in md, md

    # --- v3, broken for real users only: rolled back at step 1 on the users' requests from SLS ---------------------
    report = failed.value.report
    assert report.decision == "rolled back"
    assert str(failed.value).startswith("rollout of the new version rolled back: step 1"), str(failed.value)
    assert "users error rate" in str(failed.value), str(failed.value)
    assert [s.stats.step for s in report.steps] == ["step 1"]
    step1 = report.steps[0]
    assert step1.stats.sls_read and step1.stats.users is not None and step1.stats.users.requests > 0
    assert step1.stats.users.errors == step1.stats.users.requests  # every user request v3 served failed ...
    assert step1.stats.failures == 0  # ... and none of the flow's own: the synthetic traffic alone would promote it
    md = next((tmp_path / "r3").glob("*/rollout.md")).read_text()
    assert re.search(r"decision: \*\*rolled back\*\*: step 1", md), md
    assert "users' requests from SLS" in md, md
    during_v3 = load.between(v2_done, v3_done)
    user_errors = OpenLoopLoad.errors(during_v3)
    assert user_errors, "v3 failed no user request: the test proves nothing"
    # the failed user requests are v3's share of step 1, and only that: none outside the canary's share
    v3_route = f"{ns}-{v3.names.service}-{v3.serving.rest_api_port}"
    lines = [e for e in sandbox.services.ingress.requests.snapshot()
             if v3_started <= e[0] <= v3_ended and e[1] == main_route_v2 and e[3] >= 500]
    assert lines and all(e[2] == v3_route for e in lines), [e[:4] for e in lines if e[2] != v3_route][:5]
    at_step1 = [e for e in sandbox.services.ingress.requests.snapshot()
                if v3_started <= e[0] <= v3_ended and e[1] == main_route_v2 and e[2] == v3_route
                and e[8] != b"elastic-inference-analysis/1"]
    assert len(user_errors) <= len(at_step1), (len(user_errors), len(at_step1))
    print(f"v3: {len(user_errors)} of {len(during_v3)} user requests failed, all on the canary at step 1; "
          f"SLS: {step1.stats.users.requests} on v3, {step1.stats.stable_users.requests} on v2")
    # v2 untouched: every pod it had is still there, never restarted (v3's isolated stress load went through the
    # preview host, counted on v3's own route: v2's HPA did not see it).
    # (v3's stress test is on its own preview route, so v2's HPA follows the users' load alone: it may remove a
    # replica the users no longer need during v3's rollout; none restarted, and it kept its minimum.)
    now = v2_pods_after_v3
    assert {p: now[p] for p in v2_pods if p in now} == {p: n for p, n in v2_pods.items() if p in now}, \
        f"v2's pods were restarted during v3's rollout: {v2_pods} -> {now}"
    assert len(now) >= 2, f"v2 fell below its minimum during v3's rollout: {v2_pods} -> {now}"
    assert main_after_v3.service.name == v2.names.service
    v3_name = serving_fullname(f"{v3.serving.name}-{v3.serving.version}")
    assert not [d for d in apps.list_namespaced_deployment(ns).items if d.metadata.name == v3_name]
    assert not [i for i in net.list_namespaced_ingress(ns).items if i.metadata.name == v3.names.canary_ingress]

    # --- rollback by hand: v1 again, no user request lost -------------------------------------------------------
    assert (back.to_service, back.from_service) == (v1.names.service, v2.names.service)
    assert back.retired.quiet.startswith(f"SLS: 0 requests on {main_route_v2} over ["), back.retired
    assert net.read_namespaced_ingress(v1.names.ingress, ns).spec.rules[0].http.paths[0].backend.service.name == \
        v1.names.service
    v1_dep = apps.read_namespaced_deployment(v1.names.deployment, ns)
    assert v1_dep.status.available_replicas >= 2
    assert apps.read_namespaced_deployment(v2.names.deployment, ns).spec.replicas == 0
    assert [h.spec.scale_target_ref.name for h in auto.list_namespaced_horizontal_pod_autoscaler(ns).items] == \
        [v1.names.deployment]
    during_rollback = load.between(v3_done, back_done)
    assert not OpenLoopLoad.errors(during_rollback), OpenLoopLoad.errors(during_rollback)[:5]


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
