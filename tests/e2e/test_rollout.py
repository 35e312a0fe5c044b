"""Rollouts end to end (issue 13): v1 serves, a good v2 is canaried and promoted, a v3 broken for real users only
(it fails on real text, and answers the flow's own sample) is rolled back at the step where the users' requests in
SLS show it, all under a constant open-loop user load through the main Ingress, on a real Prefect server and a
sandbox of its own, whose pods run in real time (their start and grace period in real seconds, as on ACK; blue-green
and recovery are in ``test_rollout_recovery.py``).

What the users saw is read from the sandbox ingress's access log, as SLS would hold it: every request counts under
the main route (``proxy_upstream_name``) and, when a canary served it, under the canary's
``proxy_alternative_upstream_name`` too. A thread records both totals each time the canary Ingress's weight
changes, so each step's share of user requests is (canary lines - analysis requests) / (main lines - analysis
requests), the analysis requests being those the run reports for the step.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from demo_spec import demo_spec
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from openloop import OpenLoopLoad

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

    # pods in real time: their start (image pull, OSS mount, model load) and their grace period take real seconds,
    # as long as on ACK against the flow's real-time windows, drains and capacity waits
    sb = Sandbox(tmp_path_factory.mktemp("rollout-sandbox"), speed=50.0, options={"pods": "real-time"})
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
