"""The whole deploy flow on a real Prefect server against a sandbox of its own, with a short load.

One full run must pass every check and write the report; a second run changes nothing; further runs make each
check fail for its own reason (an impossible SLO, a load too small to scale out, pods forced onto a node outside
the pool, a pool that cannot get spot) and the flow must fail naming that check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from demo_spec import demo_spec  # tests/e2e/demo_spec.py (pytest puts this folder on sys.path)
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cli.sandbox_profile import cluster_from_sandbox, save_sandbox_blocks
from clients.ack import AckApi
from core.demo_model import generate_demo_model
from core.spec import DeploySpec
from tasks.verify import VerificationFailed

SHORT_LOAD = [
    {"duration_s": 5, "users": 2, "spawn_rate": 2},
    {"duration_s": 30, "users": 30, "spawn_rate": 15},
]


@pytest.fixture(scope="module")
def e2e_sandbox(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("e2e-sandbox"), speed=50.0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("model") / "chnsenticorp"
    generate_demo_model(model, version=1623831335)
    return model


@pytest.fixture(scope="module")
def block(e2e_sandbox, prefect_api) -> str:
    return save_sandbox_blocks(e2e_sandbox.info, name="e2e-flow")


def make_spec(model_dir: Path, name: str, **overrides) -> DeploySpec:
    """The demo spec with its own names and the short load (see :func:`demo_spec`)."""
    return demo_spec(model_dir, name, {"load_test.stages": SHORT_LOAD, "load_test.sample_interval_s": 1.0,
                                       **overrides})


def run_failing(spec: DeploySpec, block: str, tmp_path: Path, **kwargs) -> VerificationFailed:
    from flows.deploy import deploy

    with pytest.raises(VerificationFailed) as info:
        deploy(spec=spec, cluster_block=block, reports_dir=str(tmp_path / "reports"), **kwargs)
    report = json.loads(next((tmp_path / "reports").glob("*/report.json")).read_text())
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert failed == set(info.value.failed_checks), "the report and the error must name the same checks"
    return info.value


def test_full_deploy_passes_every_check_writes_the_report_and_reruns_idempotently(
    e2e_sandbox, model_dir, block, tmp_path
) -> None:
    from flows.deploy import deploy

    spec = make_spec(model_dir, "full")
    result = deploy(spec=spec, cluster_block=block, reports_dir=str(tmp_path / "reports"))
    assert result.verification is not None and result.verification.passed
    assert {c.name for c in result.verification.checks} >= {"placement", "scale_out", "mix", "slo_error_rate",
                                                              "slo_p95"}
    assert result.smoke is not None and result.smoke.status == 200
    assert result.load_test is not None and result.load_test.requests > 0

    out = Path(result.report.directory)
    doc = json.loads((out / "report.json").read_text())
    assert all(c["passed"] for c in doc["checks"])
    assert set(doc["load_test"]) >= {"requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"}
    assert len(doc["timeline"]) >= 3
    for name in ("report.md", "timeline.png"):
        assert (out / name).stat().st_size > 0
    secret = e2e_sandbox.info["access_key_secret"]
    for file in out.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), f"the AccessKey secret leaked into {file}"

    # Idempotent: same pool, nothing re-uploaded, the Deployment's generation unchanged.
    api = k8s_config.new_client_from_config(config_file=e2e_sandbox.info["kubeconfig"])
    apps = k8s.AppsV1Api(api)
    names = spec.with_cluster(result.cluster_id).names
    generation = apps.read_namespaced_deployment(names.deployment, names.namespace).metadata.generation
    again_spec = make_spec(model_dir, "full", **{"load_test.enabled": False, "verification.require_scale_out": False})
    again = deploy(spec=again_spec, cluster_block=block, reports_dir=str(tmp_path / "reports2"))
    assert again.node_pool.created is False and again.node_pool.nodepool_id == result.node_pool.nodepool_id
    assert again.upload.bytes_sent == 0
    assert apps.read_namespaced_deployment(names.deployment, names.namespace).metadata.generation == generation
    cluster = cluster_from_sandbox(e2e_sandbox.info)
    pools = AckApi(cluster.credentials, cluster.cluster_id).describe_node_pools(name=spec.node_pool.name)
    assert len([p for p in pools if p.name == spec.node_pool.name]) == 1


def test_an_impossible_slo_fails_the_flow_naming_slo_p95_and_tears_down(e2e_sandbox, model_dir, block, tmp_path):
    spec = make_spec(model_dir, "slo", **{"verification.p95_ms": 0.001, "verification.require_scale_out": False,
                                          "verification.require_mix": False,
                                          "load_test.stages": [{"duration_s": 6, "users": 3, "spawn_rate": 3}]})
    err = run_failing(spec, block, tmp_path, teardown_on_failure=True)
    assert "slo_p95" in err.failed_checks
    assert "placement" not in err.failed_checks

    # teardown_on_failure: nothing of this deploy is left, neither objects nor the node pool.
    cluster = cluster_from_sandbox(e2e_sandbox.info)
    names = spec.with_cluster(cluster.cluster_id).names
    api = k8s_config.new_client_from_config(config_file=e2e_sandbox.info["kubeconfig"])
    assert not [d for d in k8s.AppsV1Api(api).list_namespaced_deployment(names.namespace).items
                if d.metadata.name == names.deployment]
    assert not [p for p in k8s.CoreV1Api(api).list_persistent_volume().items if p.metadata.name == names.pv]
    pools = AckApi(cluster.credentials, cluster.cluster_id).describe_node_pools(name=spec.node_pool.name)
    assert not [p for p in pools if p.name == spec.node_pool.name]


def test_a_load_too_small_to_scale_out_fails_the_flow_naming_scale_out(e2e_sandbox, model_dir, block, tmp_path):
    spec = make_spec(model_dir, "small", **{"load_test.stages": [{"duration_s": 8, "users": 1, "spawn_rate": 1}]})
    err = run_failing(spec, block, tmp_path)
    assert "scale_out" in err.failed_checks
    assert "placement" not in err.failed_checks


def test_pods_forced_onto_a_node_outside_the_pool_fail_placement(e2e_sandbox, model_dir, block, tmp_path) -> None:
    # A CPU node of the default pool gets the elastic pool's labels by hand; CPU-only serving pods then fit there.
    spec = make_spec(model_dir, "placement", **{"serving.gpus": 0, "verification.require_scale_out": False,
                                                  "verification.require_mix": False, "load_test.enabled": False})
    api = k8s_config.new_client_from_config(config_file=e2e_sandbox.info["kubeconfig"])
    core = k8s.CoreV1Api(api)
    default_node = core.list_node(label_selector="!inference").items[0]
    core.patch_node(default_node.metadata.name, {"metadata": {"labels": dict(spec.node_pool.labels)}})
    try:
        err = run_failing(spec, block, tmp_path)
    finally:
        core.patch_node(default_node.metadata.name,
                        {"metadata": {"labels": {k: None for k in spec.node_pool.labels}}})
    assert "placement" in err.failed_checks
    assert default_node.metadata.name in str(err)


def test_a_pool_holding_only_pay_as_you_go_fails_the_mix(e2e_sandbox, model_dir, block, tmp_path) -> None:
    # No spot stock for the pool's types and no compensation: only the pay-as-you-go base is ever bought.
    fleet = e2e_sandbox.services.fleet
    spec = make_spec(model_dir, "mix", **{"node_pool.compensate_with_on_demand": False,
                                            "node_pool.on_demand_base_capacity": 1,
                                            "verification.require_scale_out": False, "load_test.enabled": False})
    for itype in spec.node_pool.instance_types:
        for zone in e2e_sandbox.info["zones"]:
            fleet.set_spot_stock(itype, zone, 0)
    err = run_failing(spec, block, tmp_path)
    assert "mix" in err.failed_checks
    assert "placement" not in err.failed_checks
