"""prefect.yaml on a real self-hosted Prefect server, driven with Prefect's own CLI as docs/running.md tells users.

A `prefect server start` on loopback with its own PREFECT_HOME (module-scoped), a `process` work pool,
`prefect --no-prompt deploy --all` from the repository, then: the scheduled deployment's cron and inactive
schedule, the manual deployment's parameter form (the DeploySpec schema), the event trigger, and a manual
`prefect deployment run` executed by a process worker against a sandbox started with `elastic-inference sandbox
up` (which saves its blocks on that server). No secret shows in the block API or the flow run's logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from polling import wait_for
from prefect_http import prefect_http  # tests/prefect_http.py
from processes import Proc, free_port  # tests/processes.py

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FLOW = "elastic-inference-deploy"
POOL = "elastic-inference"


class PrefectServer:
    """`prefect server start` in its own process group and PREFECT_HOME; ``env`` points a CLI at it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_ENABLED": "true",
            # `prefect deploy` records the directory it runs in ({{ $PWD }} in prefect.yaml), as a shell would set it.
            "PWD": str(REPO),
        }
        self.server = Proc([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                           self.env, home / "server.log")

    def wait_healthy(self, timeout: float = 240) -> None:
        def healthy() -> bool:
            self.server.alive()
            return httpx.get(f"{self.api}/health", timeout=5).status_code == 200

        wait_for(healthy, "the Prefect server to be healthy", timeout=timeout, interval=0.5,
                 tolerate=(httpx.HTTPError,))

    def stop(self) -> None:
        self.server.stop()

    def cli(self, *args: str, timeout: float = 300, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            args, cwd=REPO, env=self.env | env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def http(self) -> httpx.Client:
        return prefect_http(self.api)

    def deployment(self, name: str) -> dict[str, Any]:
        with self.http() as http:
            r = http.get(f"/deployments/name/{FLOW}/{name}")
            r.raise_for_status()
            return r.json()

    def wait_flow_run(self, flow_run_id: str, timeout: float = 300) -> dict[str, Any]:
        with self.http() as http:
            return wait_for(
                lambda: (run := http.get(f"/flow_runs/{flow_run_id}").json())["state_type"]
                in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and run,
                f"flow run {flow_run_id} to finish", timeout=timeout, interval=1,
            )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    srv = PrefectServer(tmp_path_factory.mktemp("prefect-server-home"))
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def deployed(server: PrefectServer) -> subprocess.CompletedProcess:
    server.cli(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
    return server.cli(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")


def test_deploy_all_creates_the_three_deployments(server: PrefectServer, deployed) -> None:
    for name in ("scheduled-post-training", "manual", "on-model-registered"):
        dep = server.deployment(name)
        assert dep["entrypoint"] == "flows/deploy.py:deploy"
        assert dep["work_pool_name"] == POOL
        assert dep["enforce_parameter_schema"] is True
        # Runnable from this clone: the worker changes into the directory `prefect deploy` ran in.
        assert dep["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]


def test_teardown_deployment(server: PrefectServer, deployed) -> None:
    with server.http() as http:
        r = http.get("/deployments/name/elastic-inference-teardown/teardown")
    r.raise_for_status()
    dep = r.json()
    assert dep["entrypoint"] == "flows/teardown.py:teardown" and dep["schedules"] == []
    assert dep["parameters"]["delete_model"] is False
    assert "DeploySpec" in dep["parameter_openapi_schema"]["definitions"]


@pytest.mark.parametrize("name", ["status", "rollback"])
def test_status_and_rollback_deployments_run_by_hand(server: PrefectServer, deployed, name: str) -> None:
    with server.http() as http:
        r = http.get(f"/deployments/name/elastic-inference-{name}/{name}")
    r.raise_for_status()
    dep = r.json()
    assert dep["entrypoint"] == f"flows/{name}.py:{name}" and dep["schedules"] == []
    assert dep["enforce_parameter_schema"] is True and dep["parameters"]["cluster_block"] == "sandbox"
    assert set(dep["parameter_openapi_schema"]["properties"]) == {"spec", "cluster_block"}


def test_scheduled_deployment_has_its_cron_and_is_inactive(server: PrefectServer, deployed) -> None:
    dep = server.deployment("scheduled-post-training")
    (schedule,) = dep["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is False
    # It names the spec it deploys: a complete DeploySpec.
    from core.spec import DeploySpec

    spec = dep["parameters"]["spec"]
    assert spec["model"]["name"] == "chnsenticorp" and spec["model"]["local_dir"] == ".sandbox/models/chnsenticorp"
    assert DeploySpec.model_validate({**spec, "model": {**spec["model"], "local_dir": None}})
    assert dep["parameters"]["cluster_block"] == "sandbox"
    # An inactive schedule creates no runs.
    with server.http() as http:
        runs = http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [dep["id"]]}}}).json()
    assert runs == []


def test_manual_deployment_form_is_the_deploy_spec(server: PrefectServer, deployed) -> None:
    dep = server.deployment("manual")
    assert dep["schedules"] == []
    schema = dep["parameter_openapi_schema"]
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["$ref"] == "#/definitions/DeploySpec"
    defs = schema["definitions"]
    assert {"DeploySpec", "NodePoolSpec", "ModelSpec", "StorageSpec", "ServingSpec", "AutoscalingSpec",
            "IngressSpec", "LoadTestSpec", "VerificationSpec"} <= set(defs)
    pool = defs["NodePoolSpec"]["properties"]
    assert pool["on_demand_percentage_above_base"]["description"].startswith("Percentage of pay-as-you-go")
    assert pool["on_demand_percentage_above_base"]["default"] == 30
    assert pool["on_demand_percentage_above_base"]["maximum"] == 100
    assert pool["billing"]["enum"] == ["spot", "on-demand"]
    assert pool["multi_az_policy"]["title"] == "Multi-AZ policy"
    model = defs["ModelSpec"]["properties"]
    assert "numeric version" in model["local_dir"]["description"]
    assert all(p.get("description") for p in defs["ServingSpec"]["properties"].values())
    # The form is pre-filled with the sandbox spec.
    assert dep["parameters"]["spec"]["node_pool"]["on_demand_percentage_above_base"] == 30


def _form_fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field the Prefect UI's form shows for a parameter schema, as (path, property) with the property
    merged into the definition it references, as the UI does (the property's own keys win): the flow's parameters,
    the fields of every nested model, list items and anyOf options, and the fields of the block types it refers
    to (their block forms)."""
    defs = schema.get("definitions", {})

    def resolve(prop: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in prop:
            return {**defs[prop["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in prop.items() if k != "$ref"}}
        return prop

    seen: set[str] = set()

    def walk(path: str, prop: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        ref = prop.get("$ref")
        merged = resolve(prop)
        yield path, merged
        if ref in seen:
            return
        if ref:
            seen.add(ref)
        for name, sub in merged.get("properties", {}).items():
            yield from walk(f"{path}.{name}", sub)
        for i, option in enumerate(merged.get("anyOf", [])):
            if "$ref" in option:  # a model or block option; the toggle labels plain options by their type
                yield from walk(f"{path}<{i}>", option)
        if isinstance(merged.get("items"), dict) and "$ref" in merged["items"]:
            item = resolve(merged["items"])
            for name, sub in item.get("properties", {}).items():
                yield from walk(f"{path}[].{name}", sub)

    for name, prop in schema["properties"].items():
        yield from walk(name, prop)


@pytest.mark.parametrize("name", ["manual", "teardown", "status", "rollback"])
def test_every_field_of_the_run_form_has_a_title_and_a_description(server: PrefectServer, deployed, name) -> None:
    """The form a platform engineer fills in (Run -> Custom run) as the server hands it to the UI."""
    flow = {"teardown": "elastic-inference-teardown", "status": "elastic-inference-status",
            "rollback": "elastic-inference-rollback"}.get(name, FLOW)
    with server.http() as http:
        r = http.get(f"/deployments/name/{flow}/{name}")
    r.raise_for_status()
    schema = r.json()["parameter_openapi_schema"]
    fields = dict(_form_fields(schema))
    untitled = [path for path, prop in fields.items() if not prop.get("title")]
    raw = [path for path, prop in fields.items() if "_" in path.rsplit(".", 1)[-1] and
           prop.get("title") == path.rsplit(".", 1)[-1]]
    undescribed = [path for path, prop in fields.items() if not prop.get("description")]
    assert (untitled, raw, undescribed) == ([], [], [])
    assert {"spec", "cluster_block", "spec.node_pool.vswitch_ids", "spec.load_test.stages[].duration_s",
            "cluster_block<0>.credentials", "cluster_block<0>.credentials.access_key_secret"} <= set(fields)
    # No "str | None" type toggle: an optional field is a plain input (a null value still passes the server's
    # check, see test_nulls_pass_the_servers_parameter_check).
    # (The block types' own optional fields keep theirs: they belong to Prefect's block forms.)
    toggles = [path for path, prop in fields.items()
               if {"type": "null"} in prop.get("anyOf", []) and not path.startswith("cluster_block<0>")]
    assert toggles == []
    # The cluster is a block picker (an ACK Cluster block) or a block name.
    picker, by_name = schema["properties"]["cluster_block"]["anyOf"]
    assert resolve_block_slug(schema, picker) == "ack-cluster" and by_name["type"] == "string"


def resolve_block_slug(schema: dict[str, Any], prop: dict[str, Any]) -> str | None:
    return schema["definitions"][prop["$ref"].rsplit("/", 1)[1]].get("block_type_slug")


def test_nulls_pass_the_servers_parameter_check(server: PrefectServer, deployed) -> None:
    """An optional field rendered without its null option still takes null: Prefect's server-side check treats a
    non-required property without a default as nullable (the event trigger renders source_uri/local_dir to null)."""
    dep = server.deployment("manual")
    spec = json.loads(json.dumps(dep["parameters"]["spec"]))
    spec["model"].update(local_dir=None, source_uri=None)
    spec["storage"]["oss_url"] = None
    spec["node_pool"]["key_pair"] = None
    with server.http() as http:
        r = http.post(f"/deployments/{dep['id']}/create_flow_run",
                      json={"parameters": {"spec": spec}, "state": {"type": "CANCELLED", "name": "Cancelled"}})
        assert r.status_code == 201, r.text
        http.delete(f"/flow_runs/{r.json()['id']}").raise_for_status()
        # The cluster by name (prefect.yaml, the CLI) and as the block picker sends it both pass.
        for cluster_block in ("prod-ack", {"$ref": {"block_document_id": "8b5c8f5e-3f0a-4a51-9d3e-5c8f9d1e2a3b"}}):
            r = http.post(f"/deployments/{dep['id']}/create_flow_run",
                          json={"parameters": {"spec": spec, "cluster_block": cluster_block},
                                "state": {"type": "CANCELLED", "name": "Cancelled"}})
            assert r.status_code == 201, r.text
            http.delete(f"/flow_runs/{r.json()['id']}").raise_for_status()
        # A value of the wrong type is still refused.
        spec["model"]["source_uri"] = 5
        r = http.post(f"/deployments/{dep['id']}/create_flow_run",
                      json={"parameters": {"spec": spec}, "state": {"type": "CANCELLED", "name": "Cancelled"}})
        assert r.status_code == 409 and "source_uri" in r.text, r.text


def test_event_deployment_is_triggered_by_model_version_registered(server: PrefectServer, deployed) -> None:
    dep = server.deployment("on-model-registered")
    with server.http() as http:
        automations = http.post("/automations/filter", json={}).json()
    (automation,) = [a for a in automations if a["actions"][0].get("deployment_id") == dep["id"]]
    trigger, (action,) = automation["trigger"], automation["actions"]
    assert automation["enabled"] is True
    assert trigger["expect"] == ["model.version.registered"]
    assert trigger["match"] == {"prefect.resource.id": "mlflow.model.*"}
    assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1
    model = action["parameters"]["spec"]["model"]
    assert model["name"] == "{{ event.payload.name }}"
    assert "event.payload.source" in model["local_dir"] and "event.payload.source" in model["source_uri"]
    assert action["parameters"]["spec"]["serving"]["version"] == "v{{ event.payload.version }}"


def test_manual_run_deploys_to_the_sandbox(server: PrefectServer, deployed, tmp_path: Path) -> None:
    from core.demo_model import generate_demo_model

    cli = str(BIN / "elastic-inference")
    sandbox_dir = tmp_path / "sandbox"
    # `sandbox up` saves the `sandbox` blocks on the server PREFECT_API_URL names.
    up = server.cli(cli, "sandbox", "up", "-d", "--dir", str(sandbox_dir), "--speed", "50", timeout=180)
    try:
        assert "Prefect blocks saved" in up.stdout, up.stdout + up.stderr
        info = json.loads((sandbox_dir / "sandbox.json").read_text())
        secret = info["access_key_secret"]

        model_dir = tmp_path / "models" / "chnsenticorp"
        generate_demo_model(model_dir, version=1623831335)
        # The demo spec with its own pool and bucket and no load test: this test is about the manual deployment
        # and its worker; the load, scale-out and mix are proved by tests/e2e. (Read as data: the example's own
        # model directory need not exist in a fresh clone.)
        spec = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
        spec["node_pool"]["name"] = "manual-run"
        spec["model"]["local_dir"] = str(model_dir)
        spec["storage"]["bucket"] = "manual-run-models"
        spec["load_test"]["enabled"] = False
        spec["verification"].update(require_scale_out=False, require_mix=False)
        # The cluster as the UI's block picker sends it: a reference to the saved ACK Cluster block.
        with server.http() as http:
            r = http.get("/block_types/slug/ack-cluster/block_documents/name/sandbox")
        r.raise_for_status()
        picked = {"$ref": {"block_document_id": r.json()["id"]}}
        run = server.cli(str(BIN / "prefect"), "deployment", "run", f"{FLOW}/manual", "--params",
                         json.dumps({"spec": spec, "reports_dir": str(tmp_path / "reports"), "cluster_block": picked}))
        flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", run.stdout).group(1)
        worker = server.cli(str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--run-once", timeout=600)
        final = server.wait_flow_run(flow_run_id)
        assert final["state_type"] == "COMPLETED", (worker.stdout + worker.stderr)[-6000:]
        assert final["parameters"]["spec"]["model"]["local_dir"] == str(model_dir)
        assert final["parameters"]["cluster_block"] == picked  # a reference: the block's values stay in the block

        from blocks import AckCluster
        from cli.sandbox_profile import cluster_from_sandbox
        from clients.ack import AckApi

        cluster: AckCluster = cluster_from_sandbox(info)
        pools = AckApi(cluster.credentials, cluster.cluster_id).describe_node_pools(name="manual-run")
        assert [p.name for p in pools if p.name == "manual-run"] == ["manual-run"]
        bucket = cluster.credentials.get_oss_bucket("manual-run-models")
        sent = final["parameters"]["spec"]["serving"]  # the release's own directory (DerivedNames.model_oss_prefix)
        assert bucket.object_exists(f"tensorflow/{sent['name']}-{sent['version']}/1623831335/model.json")

        # No secret in the block API (what the UI shows) or in the flow run's logs.
        with server.http() as http:
            blocks = http.post("/block_documents/filter", json={"include_secrets": False}).text
            logs = http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
        assert "sandbox" in blocks and secret not in blocks
        assert any("deploying" in log["message"] for log in logs)
        assert all(secret not in log["message"] for log in logs)
        assert secret not in worker.stdout + worker.stderr
    finally:
        server.cli(cli, "sandbox", "down", "--dir", str(sandbox_dir), check=False)
