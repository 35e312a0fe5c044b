"""The deploy flow on a real Prefect server against the sandbox: node pool and model upload, twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.demo_model import generate_demo_model
from flows.sandbox_profile import cluster_from_sandbox, save_sandbox_blocks
from flows.spec import DeploySpec
from tasks.ack_api import AckApi

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> DeploySpec:
    model = tmp_path_factory.mktemp("model") / "chnsenticorp"
    generate_demo_model(model, version=1623831335)
    data = DeploySpec.from_file(REPO / "examples" / "sandbox.yaml").model_dump(mode="json")
    data["model"]["local_dir"] = str(model)
    data["node_pool"]["name"] = "e2e-deploy-flow"
    data["storage"]["bucket"] = "e2e-deploy-flow"
    return DeploySpec.parse(data)


def test_deploy_twice_makes_one_pool_and_sends_nothing_the_second_time(sandbox_info, prefect_api, spec) -> None:
    from flows.deploy import deploy

    block = save_sandbox_blocks(sandbox_info, name="e2e-sandbox")
    first = deploy(spec=spec, cluster_block=block)
    assert first.node_pool.created is True
    assert first.node_pool.state == "active"
    assert first.upload.files_uploaded == first.upload.files_total > 0
    assert first.upload.bytes_sent > 0

    second = deploy(spec=spec, cluster_block=block)
    assert second.node_pool.created is False
    assert second.node_pool.nodepool_id == first.node_pool.nodepool_id
    assert second.upload.bytes_sent == 0
    assert second.upload.files_skipped == second.upload.files_total

    cluster = cluster_from_sandbox(sandbox_info)
    pools = AckApi(cluster.credentials, cluster.cluster_id).describe_node_pools(name=spec.node_pool.name)
    assert len([p for p in pools if p.name == spec.node_pool.name]) == 1


def test_deploy_refuses_a_spec_for_another_cluster(sandbox_info, prefect_api, spec) -> None:
    from flows.deploy import deploy

    block = save_sandbox_blocks(sandbox_info, name="e2e-sandbox")
    other = spec.model_copy(update={"cluster_id": "c" + "0" * 32})
    with pytest.raises(ValueError, match="differs from the cluster"):
        deploy(spec=other, cluster_block=block)
