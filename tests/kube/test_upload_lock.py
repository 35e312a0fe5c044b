"""Issue 20 (1): a run uploads its model only once it holds the service lock (flows/deploy.py), against the session
sandbox, with the deploy flow itself on the session's Prefect server."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import oss2
import pytest

from cli.sandbox_profile import credentials_from_sandbox, save_sandbox_blocks
from clients.kube import KubeClients
from clients.lease import LeaseHeld
from core.demo_model import generate_demo_model
from core.spec import DeploySpec


def test_a_run_that_cannot_take_the_service_lock_uploads_nothing(sandbox_info, prefect_api, tmp_path: Path,
                                                                  monkeypatch):
    import flows.deploy as deploy_flow
    from flows.teardown import teardown

    suffix = uuid.uuid4().hex[:6]
    block = save_sandbox_blocks(sandbox_info, name=f"upload-lock-{suffix}")
    generate_demo_model(tmp_path / "model")
    spec = DeploySpec.parse({
        "cluster_id": sandbox_info["cluster_id"],
        "node_pool": {"name": f"np-ul-{suffix}", "labels": {"inference": f"tf-{suffix}"}, "key_pair": "sandbox-key",
                      "max_instances": 1},
        "storage": {"pv_name": f"model-pv-{suffix}", "oss_url": sandbox_info["oss_endpoint"],
                    "bucket": f"ul-{suffix}"},
        "serving": {"version": "v2", "namespace": f"ul-{suffix}", "gpus": 1},
        "model": {"local_dir": str(tmp_path / "model"), "version_policy": "latest"},
        "autoscaling": {"max_replicas": 1},
        "load_test": {"enabled": False},
    })
    kube = KubeClients.from_kubeconfig_file(sandbox_info["kubeconfig"], backoff_s=0.05, backoff_max_s=0.2)
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.names.namespace}})
    monkeypatch.setattr(deploy_flow, "SERVICE_LOCK_WAIT_S", 1.0)
    try:
        with deploy_flow.service_lock(kube, spec), pytest.raises(LeaseHeld):  # another run changes the service
            deploy_flow.deploy(spec=spec, cluster_block=block)
        bucket = credentials_from_sandbox(sandbox_info).get_oss_bucket(spec.storage.bucket)
        with contextlib.suppress(oss2.exceptions.NoSuchBucket):
            assert [o.key for o in oss2.ObjectIteratorV2(bucket, prefix="")] == []
    finally:
        teardown(spec, cluster_block=block, timeout_s=300)
        kube.delete("Namespace", spec.names.namespace, None)
        kube.close()
