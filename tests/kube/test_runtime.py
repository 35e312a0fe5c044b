"""The TF-Serving-compatible pod runtime, driven through the project's renderers against a fresh sandbox.

A GPU node pool (label ``inference=tensorflow``) is created and scaled by hand through the ACK OpenAPI, the demo
model is uploaded with oss2, and the Secret/PV/PVC and ConfigMap/Deployment/Service come from ``tasks.storage`` and
``tasks.serving``. The REST API is then called on the pod's loopback listener, found through the runtime's address
lookup and checked against the ingress resolver seam. Waits poll with deadlines; nothing asserts absolute times
(the overload test compares two measurements taken in the same test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import oss2
import polling  # tests/polling.py
import pytest
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from kubernetes import client, config
from tfserving_schema import parse_model_status, render_model_status  # tests/tfserving_schema.py

from blocks.alibaba import AlibabaCloudCredentials
from clients.kube import KubeClients
from core.demo_model import DEFAULT_VERSION, example_inputs, generate_demo_model
from core.spec import DeploySpec
from tasks.ingress import render_ingress
from tasks.model import upload_model
from tasks.serving import render_serving
from tasks.storage import render_storage

SPEED = 100.0
MODEL = "chnsenticorp"


# 404s before an object exists are "not yet"
wait_for = partial(polling.wait_for, timeout=60.0, interval=0.05, tolerate=(client.exceptions.ApiException,))


def cs_call(info: dict[str, Any], method: str, uri: str, body: Any = None, **paths: str) -> Any:
    acs = AcsClient(info["access_key_id"], info["access_key_secret"], info["region"], auto_retry=False)
    r = CommonRequest(domain=info["cs_endpoint"].split("//", 1)[1], version="2015-12-15", uri_pattern=uri,
                      product="CS")
    r.set_protocol_type("http")
    r.set_method(method)
    r.add_path_param("ClusterId", info["cluster_id"])
    for k, v in paths.items():
        r.add_path_param(k, v)
    if body is not None:
        r.set_content_type("application/json")
        r.set_content(json.dumps(body).encode())
    return json.loads(acs.do_action_with_exception(r))


def gpu_pool(name: str) -> dict[str, Any]:
    return {
        "nodepool_info": {"name": name, "type": "ess"},
        "scaling_group": {
            "instance_types": ["ecs.gn6i-c4g1.xlarge", "ecs.gn7i-c8g1.2xlarge"],
            "vswitch_ids": ["vsw-sandbox0a", "vsw-sandbox0b"], "instance_charge_type": "PostPaid",
            "spot_strategy": "SpotAsPriceGo", "multi_az_policy": "COST_OPTIMIZED", "on_demand_base_capacity": 0,
            "on_demand_percentage_above_base_capacity": 30, "spot_instance_pools": 2,
            "compensate_with_on_demand": True, "system_disk_category": "cloud_essd", "system_disk_size": 120,
            "key_pair": "sandbox-key"},
        "auto_scaling": {"enable": False},
        "kubernetes_config": {"labels": [{"key": "inference", "value": "tensorflow"}], "runtime": "containerd"},
    }


class Env:
    def __init__(self, sb: Any, info: dict[str, Any], core: client.CoreV1Api, apps: client.AppsV1Api,
                 bucket: oss2.Bucket, models: Path) -> None:
        self.sb, self.info, self.core, self.apps, self.bucket, self.models = sb, info, core, apps, bucket, models

    def model(self, seed: int = 0, version: int = DEFAULT_VERSION) -> Path:
        """The demo model with weights from ``seed`` (``<dir>/<version>/``), generated once."""
        base = self.models / f"seed{seed}"
        if not (base / str(version)).is_dir():
            generate_demo_model(base, version, seed=seed)
        return base

    def upload(self, spec: DeploySpec, seed: int = 0, version: int = DEFAULT_VERSION) -> None:
        """Put the model at the release's own prefix, as the flow's upload step lays it out."""
        base = self.model(seed, version)
        for f in sorted(p for p in (base / str(version)).rglob("*") if p.is_file()):
            self.bucket.put_object_from_file(spec.names.model_oss_prefix + f.relative_to(base).as_posix(), str(f))

    @property
    def runtime(self) -> Any:
        return self.sb.services.runtime

    def spec(self, ns: str, name: str = "bert-tfserving", **serving: Any) -> DeploySpec:
        model, rollout = serving.pop("model", {}), serving.pop("rollout", {})
        return DeploySpec.parse({
            "cluster_id": self.info["cluster_id"],
            "storage": {"pv_name": f"pv-{ns}", "oss_url": self.info["oss_endpoint"]},
            "serving": {"version": "202107141745", "namespace": ns, "name": name, **serving},
            "model": model,
            "rollout": rollout,
        })

    @property
    def creds(self) -> AlibabaCloudCredentials:
        return AlibabaCloudCredentials(access_key_id=self.info["access_key_id"],
                                       access_key_secret=self.info["access_key_secret"],
                                       region_id=self.info["region"], oss_endpoint=self.info["oss_endpoint"])

    def keys(self, prefix: str) -> list[str]:
        return [o.key for o in oss2.ObjectIteratorV2(self.bucket, prefix=prefix)]

    def apply(self, manifests: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> None:
        api = self.core.api_client
        for m in manifests:
            if m["kind"] == "Deployment" and annotations:
                m["spec"]["template"]["metadata"]["annotations"] = dict(annotations)
            kind, ns = m["kind"], m["metadata"].get("namespace")
            if kind == "PersistentVolume":
                self.core.create_persistent_volume(m)
            elif kind == "Deployment":
                self.apps.create_namespaced_deployment(ns, m)
            else:
                getattr(self.core, f"create_namespaced_{_snake(kind)}")(ns, m)
        del api

    def deploy(self, spec: DeploySpec, annotations: dict[str, str] | None = None, seed: int | None = 0) -> str:
        """Upload the model (seed ``seed``; None: none), apply ConfigMap + Deployment + Service; return the
        (single) pod's name once it is scheduled."""
        if seed is not None:
            self.upload(spec, seed)
        self.apply(render_serving(spec), annotations)
        sel = f"release={spec.names.release},app=tensorflow-serving"
        pods = wait_for(lambda: [p for p in self.core.list_namespaced_pod(spec.names.namespace,
                                                                             label_selector=sel).items
                                 if p.spec.node_name], f"a pod of {spec.names.deployment} to be scheduled")
        return pods[0].metadata.name

    def ready(self, ns: str, pod: str) -> Any:
        p = self.core.read_namespaced_pod(pod, ns)
        c = next((c for c in p.status.conditions or [] if c.type == "Ready"), None)
        return p if c is not None and c.status == "True" else None

    def logs(self, ns: str, pod: str) -> str:
        return self.sb.services.controllers.logs(ns, pod, "serving")

    def rest(self, ns: str, pod: str) -> str:
        host, port = wait_for(lambda: self.runtime.address(ns, pod), "the REST listener")
        return f"http://{host}:{port}"


def _snake(kind: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in kind).lstrip("_")


@contextlib.contextmanager
def started_env(state: Path, speed: float, options: dict[str, Any] | None = None):
    """A sandbox with a bucket and a GPU pool of two Ready nodes labelled inference=tensorflow, scaled by hand."""
    from sandbox.runner import Sandbox

    timings = {"nodepool_create": 10, "ecs_create": 10, "ecs_boot": 20}
    options = dict(options or {})
    sb = Sandbox(state / "sb", speed=speed, options={**options, "timings": {**timings, **options.get("timings", {})}})
    info = sb.start()
    api = config.new_client_from_config(info["kubeconfig"])
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    # each release's model is uploaded to its own prefix (Env.upload), as the flow's upload step lays it out
    bucket = oss2.Bucket(oss2.Auth(info["access_key_id"], info["access_key_secret"]), info["oss_endpoint"],
                         "elastic-inference-models")
    bucket.create_bucket()
    pool = cs_call(info, "POST", "/clusters/[ClusterId]/nodepools", gpu_pool("gpu-runtime"))["nodepool_id"]
    wait_for(lambda: cs_call(info, "GET", "/clusters/[ClusterId]/nodepools/[NP]", NP=pool)["status"]["state"]
             == "active", "the pool to be active")
    cs_call(info, "POST", "/clusters/[ClusterId]/nodepools/[NP]", {"count": 2}, NP=pool)
    wait_for(lambda: len([n for n in core.list_node(label_selector=f"alibabacloud.com/nodepool-id={pool}").items
                          if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]) == 2,
             "two Ready GPU nodes")
    try:
        yield Env(sb, info, core, apps, bucket, Path(state) / "models")
    finally:
        api.close()
        sb.stop()


def new_namespace(env: Env) -> str:
    """A fresh namespace with the OSS PV/PVC the serving pods mount."""
    name = "rt-" + uuid.uuid4().hex[:8]
    env.core.create_namespace({"metadata": {"name": name}})
    spec = env.spec(name)
    env.apply(render_storage(spec, env.info["oss_endpoint"], env.info["access_key_id"],
                             env.info["access_key_secret"]))
    return name


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with started_env(tmp_path_factory.mktemp("runtime-sb"), SPEED) as e:
        yield e


@pytest.fixture
def ns(env):
    return new_namespace(env)


# ---- a good deployment -------------------------------------------------------------------------------------------
def test_pod_becomes_ready_and_serves_the_rest_api(env, ns):
    spec = env.spec(ns)
    pod = env.deploy(spec)
    p = wait_for(lambda: env.ready(ns, pod), "the serving pod to be Ready", timeout=90)
    log = env.logs(ns, pod)
    assert f"Successfully loaded servable version {{name: {MODEL} version: {DEFAULT_VERSION}}}" in log
    assert "Running gRPC ModelServer at 0.0.0.0:8500 ..." in log
    assert "Exporting HTTP/REST API at:localhost:8501 ..." in log
    # kubectl logs reads the same text through the API server's pods/log
    assert env.core.read_namespaced_pod_log(pod, ns, container="serving") == log
    assert env.core.read_namespaced_pod_log(pod, ns, tail_lines=1) == log.splitlines(keepends=True)[-1]
    base = env.rest(ns, pod)
    # the ingress data plane reaches the same listener through the resolver seam
    assert env.sb.services.ingress.resolve(p.status.pod_ip, 8501) == tuple(
        int(x) if x.isdigit() else x for x in base.removeprefix("http://").split(":"))
    assert env.sb.services.ingress.resolve(p.status.pod_ip, 8500) is None

    with httpx.Client(base_url=base, timeout=10) as h:
        # status: all versions, one version, unknown version, unknown model
        assert h.get(f"/v1/models/{MODEL}").json() == {"model_version_status": [
            {"version": str(DEFAULT_VERSION), "state": "AVAILABLE", "status": {"error_code": "OK",
                                                                               "error_message": ""}}]}
        r = h.get(f"/v1/models/{MODEL}/versions/{DEFAULT_VERSION}")
        assert render_model_status(parse_model_status(r.text)) == r.json()  # TF Serving's proto, no extra field
        assert h.get(f"/v1/models/{MODEL}/versions/{DEFAULT_VERSION}").status_code == 200
        r = h.get(f"/v1/models/{MODEL}/versions/7")
        assert (r.status_code, r.json()) == (404, {"error": f"Could not find version 7 of model {MODEL}"})
        r = h.get("/v1/models/nope")
        assert (r.status_code, r.json()) == (404, {"error": "Could not find any versions of model nope"})
        # the status API does not resolve labels (get_model_status_impl.cc looks at has_version() only): all versions
        assert h.get(f"/v1/models/{MODEL}/labels/stable").json() == h.get(f"/v1/models/{MODEL}").json()
        assert h.get("/v1/models").json() == {"error": "Missing model name in request."}
        assert h.get("/v2/health").status_code == 404

        # metadata in TF Serving's shape
        md = h.get(f"/v1/models/{MODEL}/metadata").json()
        assert md["model_spec"] == {"name": MODEL, "signature_name": "", "version": str(DEFAULT_VERSION)}
        sig = md["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["method_name"] == "tensorflow/serving/predict"
        assert sig["inputs"]["input_ids"]["dtype"] == "DT_INT32"
        assert [d["size"] for d in sig["inputs"]["input_ids"]["tensor_shape"]["dim"]] == ["-1", "128"]
        assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
        r = h.get("/v1/models/nope/metadata")
        assert (r.status_code, r.json()) == (404, {"error": "Servable not found for request: Latest(nope)"})

        # predict: rows and columns give the same probabilities
        cols = example_inputs(batch=2, seed=3)
        rows = [{k: cols[k][i] for k in cols} for i in range(2)]
        r = h.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 2 and all(len(p) == 2 and abs(sum(p) - 1) < 1e-5 for p in preds)
        r = h.post(f"/v1/models/{MODEL}/versions/{DEFAULT_VERSION}:predict",
                   json={"signature_name": "serving_default", "inputs": cols})
        assert r.status_code == 200 and r.json() == {"outputs": preds}

        # errors, with TF Serving's messages and status codes
        def err(path: str, body: Any) -> tuple[int, str]:
            resp = h.post(path, content=body if isinstance(body, bytes) else json.dumps(body).encode())
            return resp.status_code, resp.json()["error"]

        code, msg = err(f"/v1/models/{MODEL}:predict", {"instances": rows, "inputs": cols})
        assert code == 400 and "Not formatted correctly expecting only one of 'inputs' or 'instances'" in msg
        assert err(f"/v1/models/{MODEL}:predict", {"signature_name": "serving_default"}) == (
            400, "Missing 'inputs' or 'instances' key")
        assert err(f"/v1/models/{MODEL}:predict", b"") == (400, "JSON Parse error: The document is empty")
        code, msg = err(f"/v1/models/{MODEL}:predict", {"inputs": {**cols, "input_ids": [[1.5] * 128] * 2}})
        assert code == 400 and "Type: Number is not of expected type: int32" in msg
        code, msg = err(f"/v1/models/{MODEL}:predict", {"inputs": {k: [row[:100] for row in v]
                                                                   for k, v in cols.items()}})
        assert code == 400 and "[2,100]" in msg and "[-1,128]" in msg
        assert err(f"/v1/models/{MODEL}:predict", {"signature_name": "nope", "inputs": cols}) == (
            400, 'Serving signature name: "nope" not found in signature def')
        assert err(f"/v1/models/{MODEL}/versions/1:predict", {"inputs": cols}) == (
            404, f"Servable not found for request: Specific({MODEL}, 1)")
        assert err("/v1/models/other:predict", {"inputs": cols}) == (
            404, "Servable not found for request: Latest(other)")
        code, msg = err(f"/v1/models/{MODEL}:classify", {"examples": [{"x": 1}]})
        assert (code, msg) == (400, "Expected classification signature method_name to be "
                                    "tensorflow/serving/classify. Was: tensorflow/serving/predict")
        code, msg = err(f"/v1/models/{MODEL}:regress", {"examples": [{"x": 1}]})
        assert code == 400 and msg.startswith("Expected regression signature method_name")
        code, msg = err(f"/v1/models/{MODEL}:classify", {"instances": []})
        assert code == 400 and "key 'examples' is expected and was not found" in msg
        r = h.post(f"/v1/models/{MODEL}:explain", json={})
        assert r.status_code == 400 and r.json() == {"error": f"Malformed request: POST /v1/models/{MODEL}:explain"}

    # deleting the pod releases its listener and its resolver entry
    ip = p.status.pod_ip
    env.apps.delete_namespaced_deployment(spec.names.deployment, ns)
    wait_for(lambda: env.runtime.address(ns, pod) is None, "the listener to be released")
    assert env.sb.services.ingress.resolve(ip, 8501) is None


# ---- manifests that fail the way TF Serving does ---------------------------------------------------------------
def test_a_wrong_model_path_or_version_policy_never_becomes_ready_and_the_log_says_why(env, ns):
    wrong_path = env.spec(ns, name="wrongpath", gpus=0, model_path="/models/tensorflw")
    wrong_policy = env.spec(ns, name="wrongpolicy", gpus=0, model={"version_policy": "specific:42"})
    pods = {"path": env.deploy(wrong_path, seed=None), "policy": env.deploy(wrong_policy)}
    wait_for(lambda: f"Could not find base path {wrong_path.names.model_base_path} for servable chnsenticorp"
             in env.logs(ns, pods["path"]), "the base path error in the log")
    wait_for(lambda: f"No versions of servable chnsenticorp found under base path {wrong_policy.names.model_base_path}"
             in env.logs(ns, pods["policy"]), "the no-versions warning in the log")
    assert ("Version 42 of servable chnsenticorp, which was requested to be served as a 'specific' version in the "
            "servable's version policy, was not found in the file system") in env.logs(ns, pods["policy"])
    # let the kubelet probe for a while (two simulated minutes, many probe periods): still not Ready, never
    # exported its REST API
    clock = env.sb.ctx.clock
    since = clock.now()
    polling.wait_for(lambda: clock.now() >= since + 120, "two simulated minutes", interval=0.05)
    for pod in pods.values():
        p = env.core.read_namespaced_pod(pod, ns)
        assert p.status.phase == "Running"
        assert next(c for c in p.status.conditions if c.type == "Ready").status == "False"
        assert "Exporting HTTP/REST API" not in env.logs(ns, pod)
        assert env.runtime.address(ns, pod) is None
    # what the kubelet's readiness probe sees: the REST port refuses connections
    server = env.runtime.server(ns, pods["path"])
    ok, message = server.probe(server.spec.container["readinessProbe"])
    assert not ok and message.endswith(f":8501/v1/models/{MODEL}/metadata\": dial tcp {server.spec.pod_ip}:8501: connect: "
                                       "connection refused")


# ---- the capacity model --------------------------------------------------------------------------------------------
def _mean_latency(url: str, body: dict[str, Any], n: int) -> float:
    """Mean latency of ``n`` requests sent at once (one asyncio client; a first round opens the ``n``
    connections, the second is measured)."""

    async def run() -> float:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as h:
            async def one() -> float:
                t0 = time.perf_counter()
                r = await h.post(url, json=body)
                assert r.status_code == 200, r.text
                return time.perf_counter() - t0

            await asyncio.gather(*(one() for _ in range(n)))
            return statistics.mean(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(run())


def test_requests_beyond_the_concurrency_limit_queue_so_latency_grows(env, ns):
    body = {"inputs": example_inputs(batch=1)}
    urls = {}
    for conc in (1, 10):
        spec = env.spec(ns, name=f"cap{conc}", gpus=0)
        pod = env.deploy(spec, annotations={"sandbox.elastic-inference/concurrency": str(conc),
                                            "sandbox.elastic-inference/service-time-ms": "100"})
        wait_for(lambda pod=pod: env.ready(ns, pod), f"cap{conc} to be Ready", timeout=90)
        urls[conc] = f"{env.rest(ns, pod)}/v1/models/{MODEL}:predict"
        assert env.runtime.server(ns, pod).capacity.settings.concurrency == conc
    queued = _mean_latency(urls[1], body, 10)  # 10 concurrent requests, one slot: they wait in line
    parallel = _mean_latency(urls[10], body, 10)  # same load, ten slots
    # one slot: the k-th request waits k-1 service times (mean ~5.5 of them); ten slots: ~1 (client and server
    # share this process, so both carry the same per-request overhead on top)
    assert queued > 1.5 * parallel, (queued, parallel)


# ---- issue 12 (4): a version change inside a running server, as TF Serving answers it ------------------------------
def test_status_answers_200_in_every_state_and_only_metadata_tells_available(env, ns):
    """TF Serving keeps polling the base path: a new version is loaded (START, LOADING, then AVAILABLE or END with
    the load error), the old one unloaded once the new one is AVAILABLE. The status API answers 200 for a version in
    any state; only the metadata API (the readiness probe) needs an AVAILABLE version."""
    spec = env.spec(ns, name="versions", gpus=0, model={"version_policy": "latest"})
    pod = env.deploy(spec)
    wait_for(lambda: env.ready(ns, pod), "the serving pod to be Ready", timeout=90)
    bucket, prefix = env.bucket, spec.names.model_oss_prefix
    bad, good = DEFAULT_VERSION + 1, DEFAULT_VERSION + 2
    ok = {"error_code": "OK", "error_message": ""}
    try:
        bucket.put_object(f"{prefix}{bad}/notes.txt", b"not a model")
        with httpx.Client(base_url=env.rest(ns, pod), timeout=10) as h:
            def states() -> dict[str, tuple[str, dict]]:
                r = h.get(f"/v1/models/{MODEL}")
                assert r.status_code == 200, r.text
                # the GetModelStatusResponse of TF Serving's protos, printed as TF Serving prints it
                assert render_model_status(parse_model_status(r.text)) == r.json()
                return {v["version"]: (v["state"], v["status"]) for v in r.json()["model_version_status"]}

            wait_for(lambda: states().get(str(bad), ("",))[0] == "END", "the broken version to end", timeout=90)
            st = states()
            assert st[str(DEFAULT_VERSION)] == ("AVAILABLE", ok)
            assert st[str(bad)][1]["error_code"] == "NOT_FOUND"
            assert "does not appear to contain a SavedModel bundle" in st[str(bad)][1]["error_message"]
            # the version-specific status is 200 for a version that cannot serve: no readiness probe
            r = h.get(f"/v1/models/{MODEL}/versions/{bad}")
            assert r.status_code == 200 and r.json()["model_version_status"][0]["state"] == "END"
            r = h.get(f"/v1/models/{MODEL}/versions/{bad}/metadata")
            assert (r.status_code, r.json()) == (
                404, {"error": f"Servable not found for request: Specific({MODEL}, {bad})"})
            assert h.get(f"/v1/models/{MODEL}/metadata").json()["model_spec"]["version"] == str(DEFAULT_VERSION)
            assert env.ready(ns, pod)  # the old version serves: still Ready
            loading = f"Loading servable version {{name: {MODEL} version: {bad}}}"  # it went through LOADING
            wait_for(lambda: loading in env.logs(ns, pod), "the broken version's load in the log")

            # a good version: loaded, then the old one is unloaded (UNLOADING -> END, status OK)
            for obj in oss2.ObjectIterator(bucket, prefix=f"{prefix}{DEFAULT_VERSION}/"):
                bucket.copy_object("elastic-inference-models", obj.key,
                                   obj.key.replace(f"/{DEFAULT_VERSION}/", f"/{good}/", 1))
            wait_for(lambda: states().get(str(DEFAULT_VERSION), ("",))[0] == "END", "the old version to be unloaded",
                     timeout=90)
            st = states()
            assert list(st) == [str(good), str(bad), str(DEFAULT_VERSION)]  # newest first
            assert st[str(good)] == ("AVAILABLE", ok) and st[str(DEFAULT_VERSION)] == ("END", ok)
            assert h.get(f"/v1/models/{MODEL}/metadata").json()["model_spec"]["version"] == str(good)
            done = f"Done unloading servable version {{name: {MODEL} version: {DEFAULT_VERSION}}}"
            wait_for(lambda: done in env.logs(ns, pod), "the unload in the log")  # the log is written behind
            assert env.ready(ns, pod)
    finally:
        for v in (bad, good):
            keys = [o.key for o in oss2.ObjectIterator(bucket, prefix=f"{prefix}{v}/")]
            if keys:
                bucket.batch_delete_objects(keys)


# ---- issue 20 (1): a release's model is its own -------------------------------------------------------------------
def _outputs(env: Env, ns: str, pod: str) -> list[list[float]]:
    r = httpx.post(f"{env.rest(ns, pod)}/v1/models/{MODEL}:predict", json={"inputs": example_inputs(batch=2, seed=3)},
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def _ready_pods(env: Env, spec: DeploySpec) -> list[str]:
    sel = f"release={spec.names.release},app=tensorflow-serving"
    return [p.metadata.name for p in env.core.list_namespaced_pod(spec.names.namespace, label_selector=sel).items
            if p.metadata.deletion_timestamp is None and env.ready(spec.names.namespace, p.metadata.name)]


def test_a_releases_upload_changes_nothing_another_releases_pods_read_now_or_after_a_restart(env, ns):
    """Release a serves with policy `latest`; release b (a retrained model, exported as the same version number
    and as a newer one) is uploaded with the flow's upload step and deployed. a's pod keeps serving a's model
    (TF Serving polls its base path every second), and so do a's pods after a restart and a scale-out."""
    a = env.spec(ns, name="iso", version="a", gpus=0, model={"version_policy": "latest"})
    pod = env.deploy(a, seed=1)
    wait_for(lambda: env.ready(ns, pod), "a's pod to be Ready", timeout=90)
    served_a = _outputs(env, ns, pod)

    retrained = env.model(seed=2)
    generate_demo_model(retrained, DEFAULT_VERSION + 1, seed=2)  # a newer version too: `latest` would load it
    b = env.spec(ns, name="iso", version="b", gpus=0, model={"version_policy": "all", "local_dir": str(retrained)})
    report = upload_model.fn(b, env.creds, checkpoint_dir=env.models / "ck")
    b_pod = env.deploy(b, seed=None)
    wait_for(lambda: env.ready(ns, b_pod), "b's pod to be Ready", timeout=90)
    assert _outputs(env, ns, b_pod) != served_a  # the two models answer differently
    assert f"version: {DEFAULT_VERSION + 1}" not in env.logs(ns, pod)  # a's server never saw b's versions
    assert _outputs(env, ns, pod) == served_a
    assert report.files_uploaded == report.files_total > 0
    assert {f.key.split("/", 2)[1] for f in report.files} == {b.names.release}  # under its own directory only

    # a's pods restarted and scaled out read what a's pod template says: a's own directory, unchanged
    env.apps.patch_namespaced_deployment_scale(a.names.deployment, ns, {"spec": {"replicas": 2}})
    env.core.delete_namespaced_pod(pod, ns)
    pods = wait_for(lambda: (lambda r: r if len(r) == 2 and pod not in r else None)(_ready_pods(env, a)),
                    "two new Ready pods of a", timeout=120)
    assert [_outputs(env, ns, p) for p in pods] == [served_a, served_a]
    again = upload_model.fn(b, env.creds, checkpoint_dir=env.models / "ck")  # a re-run of b re-uploads nothing
    assert again.files_skipped == again.files_total and again.bytes_sent == 0


def test_prune_deletes_a_pruned_releases_own_model_only_when_nothing_reads_it(env, ns):
    """keep_versions 1: v0 (deployed before releases had their own directory: it reads the shared model path),
    v1 and v2 are pruned; v3 serves, v4 is this run's. v1's model goes; v2's stays because another serving's
    Deployment reads it; the shared path stays (it is no release's own). Read from the cluster, not the spec."""
    from tasks.ingress import render_ingress
    from tasks.rollout.versions import prune

    specs = [env.spec(ns, name="pr", version=f"v{i}", gpus=0, replicas=0, rollout={"keep_versions": 1})
             for i in range(5)]
    shared = specs[0].names.model_oss_prefix.rsplit("/", 2)[0] + "/"
    assert shared == "tensorflow/"
    legacy = render_serving(specs[0])
    cm = next(m for m in legacy if m["kind"] == "ConfigMap")
    cm["data"]["model.config"] = cm["data"]["model.config"].replace(specs[0].names.model_base_path,
                                                                      "/models/tensorflow")
    version_dir = f"{shared}{DEFAULT_VERSION}/"
    base = env.model(seed=0)
    for f in sorted(p for p in (base / str(DEFAULT_VERSION)).rglob("*") if p.is_file()):
        env.bucket.put_object_from_file(shared + f.relative_to(base).as_posix(), str(f))
    env.apply(legacy)
    for s in specs[1:]:
        env.upload(s)
        env.apply(render_serving(s))
    mirror = env.spec(ns, name="mirror", version="m", gpus=0, replicas=0)  # another serving, reading v2's model
    manifests = render_serving(mirror)
    cm = next(m for m in manifests if m["kind"] == "ConfigMap")
    cm["data"]["model.config"] = cm["data"]["model.config"].replace(mirror.names.model_base_path,
                                                                      specs[2].names.model_base_path)
    env.apply(manifests)
    n = len(env.keys(specs[1].names.model_oss_prefix))
    kube = KubeClients.from_kubeconfig_file(env.info["kubeconfig"], backoff_s=0.05, backoff_max_s=0.2)
    try:
        kube.apply(render_ingress(specs[3]))
        pruned = prune(kube, specs[4], env.creds)
    finally:
        kube.close()
    assert [p for p in pruned if p.startswith("Model ")] == [
        f"Model oss://{specs[1].storage.bucket}/{specs[1].names.model_oss_prefix} ({n} objects)"]
    assert env.keys(specs[1].names.model_oss_prefix) == []
    for s in specs[2:]:
        assert env.keys(s.names.model_oss_prefix), s.names.release
    assert env.keys(version_dir)  # the shared model path of the old layout
    assert {f"Deployment {s.names.deployment}" for s in specs[:3]} <= set(pruned)


def test_a_live_release_on_the_old_shared_model_path_ignores_a_new_releases_own_directory(env, ns):
    """Migration: a release deployed before releases had their own directory reads the shared `<model_path>`
    (policy `latest`). A new release uploads a newer version number to `<model_path>/<release>/`: TF Serving takes
    only numeric children as versions, so the old release neither loads it nor changes what it serves."""
    old = env.spec(ns, name="legacy", version="old", gpus=0, model={"version_policy": "latest"})
    manifests = render_serving(old)
    cm = next(m for m in manifests if m["kind"] == "ConfigMap")
    cm["data"]["model.config"] = cm["data"]["model.config"].replace(old.names.model_base_path, "/models/tensorflow")
    base = env.model(seed=0)
    for f in sorted(p for p in (base / str(DEFAULT_VERSION)).rglob("*") if p.is_file()):
        env.bucket.put_object_from_file("tensorflow/" + f.relative_to(base).as_posix(), str(f))
    env.apply(manifests)
    sel = f"release={old.names.release},app=tensorflow-serving"
    pod = wait_for(lambda: next((p.metadata.name for p in env.core.list_namespaced_pod(ns, label_selector=sel).items
                                 if p.spec.node_name), None), "the old release's pod to be scheduled")
    wait_for(lambda: env.ready(ns, pod), "the old release's pod to be Ready", timeout=90)
    served = _outputs(env, ns, pod)

    newer = DEFAULT_VERSION + 5
    model = env.model(seed=3, version=newer)
    new = env.spec(ns, name="legacy", version="new", gpus=0,
                   model={"version_policy": f"specific:{newer}", "local_dir": str(model)})
    upload_model.fn(new, env.creds, checkpoint_dir=env.models / "ck")
    new_pod = env.deploy(new, seed=None)
    wait_for(lambda: env.ready(ns, new_pod), "the new release's pod to be Ready", timeout=90)
    assert _outputs(env, ns, new_pod) != served
    assert f"version: {newer}" not in env.logs(ns, pod)
    assert _outputs(env, ns, pod) == served and env.ready(ns, pod)


# ---- a pod that goes away -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_time_env(tmp_path_factory):
    """Pods in real time (their stages, probe delays, preStop hook and grace period in real seconds); quick
    starts, so that the test is about the stop."""
    with started_env(tmp_path_factory.mktemp("runtime-rt-sb"), 50.0, {"pods": "real-time", "timings": {
            "image_pull_mb_per_s": 1e5, "container_start": 0.5, "volume_mount": 0.5, "tfserving_startup": 0.5,
            "tfserving_load": 0.5}}) as e:
        yield e


def _predict_under_load(url: str, host: str, stop: threading.Event, seen: list[int], workers: int = 6) -> list:
    body = {"inputs": example_inputs(batch=1, seed=1)}

    def send() -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"Host": host}) as h:
            while not stop.is_set():
                seen.append(h.post(f"/v1/models/{MODEL}:predict", json=body).status_code)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    return threads


def test_a_deleted_tf_serving_pod_serves_on_until_its_grace_period_ends(real_time_env):
    """Scale-in under load through the ingress. TF Serving has no SIGTERM handler, so the deleted pod leaves the
    Endpoints at once but serves on until its grace period ends and the kubelet kills it: by then ingress-nginx's
    sync and reload have taken it out, and no request fails. (The sandbox stopped it within ``container_stop``
    before, while nginx still sent to it.) Real seconds: the grace period and the ingress's delays are what count."""
    env = real_time_env
    ns = new_namespace(env)
    grace = 8
    spec = env.spec(ns, replicas=2, gpus=0)
    manifests = render_serving(spec)
    manifests[1]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace
    env.upload(spec)
    env.apply(manifests)
    client.NetworkingV1Api(env.core.api_client).create_namespaced_ingress(ns, render_ingress(spec))
    sel = f"release={spec.names.release},app=tensorflow-serving"

    def pods() -> dict[str, Any]:
        return {p.metadata.name: p for p in env.core.list_namespaced_pod(ns, label_selector=sel).items}

    wait_for(lambda: len([n for n in pods() if env.ready(ns, n)]) == 2, "two Ready replicas", timeout=120)
    url, host = env.info["ingress_endpoint"], spec.ingress.host
    with httpx.Client(base_url=url, timeout=10, headers={"Host": host}) as h:
        wait_for(lambda: h.get(f"/v1/models/{MODEL}/metadata").status_code == 200, "the host served")
    stop, seen = threading.Event(), []
    threads = _predict_under_load(url, host, stop, seen)
    try:
        wait_for(lambda: len(seen) >= 50, "load through the ingress")
        before = set(pods())
        env.apps.patch_namespaced_deployment_scale(spec.names.deployment, ns, {"spec": {"replicas": 1}})
        victim = wait_for(lambda: next((n for n, p in pods().items() if p.metadata.deletion_timestamp), None),
                          "a pod Terminating")
        deleted = time.monotonic()
        ip = pods()[victim].status.pod_ip
        wait_for(lambda: ip not in [a.ip for s in env.core.read_namespaced_endpoints(spec.names.service, ns).subsets
                                    or [] for a in s.addresses or []], "the pod out of the Endpoints")
        timings = env.sb.services.controllers.timings
        time.sleep((timings["ingress_sync_period"] + timings["ingress_reload"]) / env.sb.speed)
        direct = env.rest(ns, victim)  # nginx has stopped sending to it; it still serves
        assert httpx.post(f"{direct}/v1/models/{MODEL}:predict", timeout=10,
                          json={"inputs": example_inputs(batch=1, seed=1)}).status_code == 200
        wait_for(lambda: victim not in pods(), "the pod gone", timeout=60)
        gone_after = time.monotonic() - deleted
        assert len(set(pods()) & before) == 1
        sent = len(seen)
        wait_for(lambda: len(seen) >= sent + 50, "more load after the pod went")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        env.core.delete_namespace(ns)
    assert gone_after >= grace * 0.9, gone_after  # killed when the grace period ended, not at SIGTERM
    failed = [code for code in seen if code != 200]
    assert not failed and len(seen) > 100, (len(seen), failed)
