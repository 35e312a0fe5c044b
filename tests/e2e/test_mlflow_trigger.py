"""A model version registered in a real MLflow server deploys itself on the sandbox.

    MLflow server (sqlite) ──signed webhook──▶ elastic-inference registry-webhook ──POST /events──▶
    prefect server start (triggers) ──▶ on-model-registered run ──▶ process worker ──▶ sandbox (ACK + OSS)

Everything is a real process on loopback: `mlflow server`, `prefect server start` with the repository's
deployments (`prefect deploy --all`), a process worker, the receiver, and `elastic-inference sandbox up`.
Forged, stale and replayed deliveries are refused and start nothing; the webhook secret shows nowhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polling  # tests/polling.py
import pytest
from prefect_http import prefect_http  # tests/prefect_http.py
from processes import Proc, free_port  # tests/processes.py

pytest.importorskip("mlflow", reason="the MLflow trigger test needs the mlflow package (a dev extra)")

REPO = Path(__file__).resolve().parents[2]
# the stack's servers and runs are slow to come: three minutes unless a step says otherwise
wait_for = functools.partial(polling.wait_for, timeout=180, interval=0.5)

BIN = Path(sys.executable).parent
FLOW = "elastic-inference-deploy"
POOL = "elastic-inference"
MODEL = "chnsenticorp"
TF_VERSION = 1623831335
WEBHOOK_SECRET = "whsec-" + secrets.token_urlsafe(24)

pytestmark = pytest.mark.e2e


def healthy(url: str, proc: Proc) -> bool:
    proc.alive()
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.prefect_api = f"http://127.0.0.1:{free_port()}/api"
        self.mlflow_uri = f"http://127.0.0.1:{free_port()}"
        self.receiver_port = free_port()
        self.receiver_url = f"http://127.0.0.1:{self.receiver_port}/webhooks/mlflow"
        self.sandbox_dir = root / "sandbox"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))} | {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PWD": str(REPO),
        }

    def start(self, args: list[str], name: str, **env: str) -> Proc:
        proc = Proc(args, self.env | env, self.root / f"{name}.log", cwd=REPO)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 300, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=REPO, env=self.env | env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def flow_runs(self, deployment: str) -> list[dict[str, Any]]:
        with prefect_http(self.prefect_api) as http:
            dep = http.get(f"/deployments/name/{FLOW}/{deployment}").json()
            return http.post("/flow_runs/filter", json={
                "deployments": {"id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC",
            }).json()

    def finished(self, flow_run_id: str) -> dict[str, Any] | None:
        with prefect_http(self.prefect_api) as http:
            run = http.get(f"/flow_runs/{flow_run_id}").json()
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None


# The triggered run skips its load test: what this module proves is the trigger path (registry -> webhook ->
# event -> deployment -> worker -> flow); the load, scale-out and mix are proved by test_deploy_flow.py and
# test_elasticity.py.
NO_LOAD = {"load_test.enabled": False, "verification.require_scale_out": False, "verification.require_mix": False}


def shorten_triggered_load(st: Stack) -> None:
    """The one change to what `prefect deploy` made: no load test (``NO_LOAD``), reports in the test's directory.

    Only those leaves of the trigger action's parameters change; every templated leaf stays as deployed."""
    with prefect_http(st.prefect_api) as http:
        dep = http.get(f"/deployments/name/{FLOW}/on-model-registered").json()
        (automation,) = [a for a in http.post("/automations/filter", json={}).json()
                         if a["actions"][0].get("deployment_id") == dep["id"]]
        params = automation["actions"][0]["parameters"]
        for path, value in NO_LOAD.items():
            group, leaf = path.split(".")
            params["spec"][group][leaf] = value
        params["reports_dir"] = str(st.root / "reports")
        body = {k: v for k, v in automation.items() if k not in ("id", "created", "updated")}
        http.put(f"/automations/{automation['id']}", json=body).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(tmp_path_factory.mktemp("mlflow-trigger"))
    try:
        prefect = st.start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                            "--port", st.prefect_api.rsplit(":", 1)[1].split("/")[0]], "prefect-server")
        mlflow = st.start(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{st.root / 'mlflow.db'}",
             "--default-artifact-root", str(st.root / "mlflow-artifacts"), "--host", "127.0.0.1",
             "--port", st.mlflow_uri.rsplit(":", 1)[1], "--workers", "1"],
            "mlflow-server",
            MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https", MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
            MLFLOW_WEBHOOK_CACHE_TTL="1",
        )
        wait_for(lambda: healthy(f"{st.prefect_api}/health", prefect), "the Prefect server", timeout=300)
        st.cli(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process")
        st.cli(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        shorten_triggered_load(st)
        up = st.cli(str(BIN / "elastic-inference"), "sandbox", "up", "-d", "--dir", str(st.sandbox_dir),
                    "--speed", "50", timeout=180)
        assert "Prefect blocks saved" in up.stdout, up.stdout + up.stderr
        st.start([str(BIN / "prefect"), "worker", "start", "--pool", POOL], "worker")
        st.start(
            [str(BIN / "elastic-inference"), "registry-webhook", "--host", "127.0.0.1",
             "--port", str(st.receiver_port), "--secret-env", "E2E_WEBHOOK_SECRET",
             "--event", "model_version.created,model_version_alias.created", "--alias", "champion",
             "--mlflow-tracking-uri", st.mlflow_uri],
            "receiver", E2E_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        receiver = st.procs[-1]
        wait_for(lambda: healthy(st.receiver_url.replace("/webhooks/mlflow", "/healthz"), receiver), "receiver")
        wait_for(lambda: healthy(f"{st.mlflow_uri}/health", mlflow), "the MLflow server", timeout=300)
        yield st
    finally:
        st.cli(str(BIN / "elastic-inference"), "sandbox", "down", "--dir", str(st.sandbox_dir), check=False)
        for proc in reversed(st.procs):
            proc.stop()


@pytest.fixture(scope="module")
def registered(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Point MLflow at the receiver, log the demo model as a run's artifacts and register it as version 1."""
    from mlflow import MlflowClient

    from core.demo_model import generate_demo_model

    model_dir = tmp_path_factory.mktemp("trained") / MODEL
    generate_demo_model(model_dir, version=TF_VERSION)
    client = MlflowClient(stack.mlflow_uri)
    client.create_webhook(
        name="elastic-inference", url=stack.receiver_url, secret=WEBHOOK_SECRET,
        events=["model_version.created", "model_version_alias.created"],
    )
    time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL=1: the server's webhook list is cached for a second
    run = client.create_run(client.create_experiment("training"))
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.create_registered_model(MODEL)
    mv = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return {"client": client, "run_id": run.info.run_id, "version": mv.version,
            "artifacts": f"{run.info.artifact_uri}/model"}


def signed(delivery_id: str, ts: str, body: str, secret: str = WEBHOOK_SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{delivery_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_registering_a_version_deploys_it(stack: Stack, registered: dict[str, Any]) -> None:
    (run,) = wait_for(lambda: stack.flow_runs("on-model-registered"), "the triggered flow run")
    spec = run["parameters"]["spec"]
    assert spec["model"]["name"] == MODEL
    assert spec["model"]["local_dir"] == registered["artifacts"]  # runs:/ resolved to the artifact directory
    assert spec["model"]["source_uri"] is None
    assert spec["model"]["version_policy"] == "latest"
    assert spec["serving"]["version"] == f"v{registered['version']}"
    final = wait_for(lambda: stack.finished(run["id"]), "the flow run to finish", timeout=600, interval=1)
    assert final["state_type"] == "COMPLETED", stack.procs[2].text()[-4000:]

    from cli.sandbox_profile import cluster_from_sandbox

    info = json.loads((stack.sandbox_dir / "sandbox.json").read_text())
    bucket = cluster_from_sandbox(info).credentials.get_oss_bucket("elastic-inference-models")
    release = f"{spec['serving']['name']}-{spec['serving']['version']}"  # the release's own directory
    assert bucket.object_exists(f"tensorflow/{release}/{TF_VERSION}/model.json")


def test_refused_deliveries_start_nothing(stack: Stack, registered: dict[str, Any]) -> None:
    wait_for(lambda: stack.flow_runs("on-model-registered"), "the first flow run")
    bogus = "forged-" + uuid.uuid4().hex[:6]
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"name": bogus, "version": "9", "source": "/tmp/evil", "run_id": None, "tags": {}}})

    def post(delivery_id: str, ts: str, signature: str | None) -> int:
        headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts}
        if signature:
            headers["X-MLflow-Signature"] = signature
        return httpx.post(stack.receiver_url, content=body, headers=headers, timeout=30).status_code

    now = str(int(time.time()))
    assert post(str(uuid.uuid4()), now, signed("x", now, body, secret="guess")) == 401
    assert post(str(uuid.uuid4()), now, None) == 401
    old = str(int(time.time()) - 3600)
    delivery = str(uuid.uuid4())
    assert post(delivery, old, signed(delivery, old, body)) == 401
    # Replay: an ignored (alias "staging") delivery is accepted once, then refused.
    alias_body = json.dumps({"entity": "model_version_alias", "action": "created",
                             "data": {"name": MODEL, "alias": "staging", "version": "1"}})
    delivery = str(uuid.uuid4())
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": now,
               "X-MLflow-Signature": signed(delivery, now, alias_body)}
    first = httpx.post(stack.receiver_url, content=alias_body, headers=headers, timeout=30)
    assert first.status_code == 200 and first.json()["status"] == "ignored"
    assert httpx.post(stack.receiver_url, content=alias_body, headers=headers, timeout=30).status_code == 409

    with prefect_http(stack.prefect_api) as http:
        events = http.post("/events/filter", json={"filter": {"resource": {"id_prefix": [f"mlflow.model.{bogus}"]}}})
    assert events.json()["events"] == []


def test_setting_the_champion_alias_deploys_that_version(stack: Stack, registered: dict[str, Any]) -> None:
    wait_for(lambda: stack.flow_runs("on-model-registered"), "the first flow run")
    client = registered["client"]
    client.set_registered_model_alias(MODEL, "staging", registered["version"])  # not configured: ignored
    client.set_registered_model_alias(MODEL, "champion", registered["version"])
    receiver = stack.procs[-1]
    wait_for(lambda: "alias 'staging' does not deploy" in receiver.text(), "the staging alias to be ignored")
    runs = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(stack.flow_runs("on-model-registered")),
                      "the champion flow run")
    assert len(runs) == 2
    champion = runs[-1]
    # The same version again (its source looked up in the registry): the run that deploys it is the one the
    # first test saw complete, so only its parameters are checked here.
    assert champion["parameters"]["spec"]["model"]["local_dir"] == registered["artifacts"]
    assert champion["parameters"]["spec"]["serving"]["version"] == f"v{registered['version']}"

    # The secret shows nowhere: receiver log, events, flow run parameters and logs.
    def stored_events() -> str | None:  # the event persister writes in batches every few seconds
        with prefect_http(stack.prefect_api) as http:
            text = http.post("/events/filter", json={"filter": {"event": {"name": ["model.version.registered"]}}}).text
        return text if len(json.loads(text)["events"]) >= 2 else None

    events = wait_for(stored_events, "both events to be stored")
    with prefect_http(stack.prefect_api) as http:
        logs = http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [r["id"] for r in runs]}}}).text
    aliases = [e["payload"]["alias"] for e in json.loads(events)["events"]]
    assert sorted(a or "" for a in aliases) == ["", "champion"]
    for text in (receiver.text(), events, logs, json.dumps(runs)):
        assert WEBHOOK_SECRET not in text
    assert not re.search(r"v1,[A-Za-z0-9+/]{43}=", receiver.text())  # no signature header value either
