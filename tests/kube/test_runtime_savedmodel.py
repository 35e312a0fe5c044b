"""Real TensorFlow SavedModels served by the sandbox's model server, checked against TensorFlow's own outputs.

Needs the optional extra (``pip install 'elastic-inference[tensorflow]'``); without it every test here is skipped
with that message. Three models are exported at test time (``tests/savedmodels.py``): a Keras text classifier
(string input), a regressor with two float inputs and two outputs, and a TF1-builder model with classification and
regression signatures. Each is uploaded with oss2, deployed with the project's renderers onto a GPU pool of a
fresh sandbox, and queried over the pod's REST listener; every prediction must equal what TensorFlow computes on
the exported model for the same input (float32 values compared exactly: TF Serving writes them round-trippable).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import numpy as np
import oss2
import pytest
import savedmodels  # tests/savedmodels.py
from kubernetes import client, config

from tasks.storage import render_storage

from .test_runtime import Env, cs_call, gpu_pool, wait_for

tf = savedmodels.tensorflow()  # skips the module, saying how to enable it, when TensorFlow is not installed
SPEED = 100.0
MODELS = {"sentiment": (savedmodels.export_text_classifier, 3),
          "regressor": (savedmodels.export_regressor, 5),
          "examples": (savedmodels.export_example_model, 7)}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from sandbox.runner import Sandbox

    state = tmp_path_factory.mktemp("tf-runtime")
    exported = {name: export(state / "models" / name, version) for name, (export, version) in MODELS.items()}
    sb = Sandbox(state / "sb", speed=SPEED, options={"timings": {
        "nodepool_create": 10, "ecs_create": 10, "ecs_boot": 20}})
    info = sb.start()
    api = config.new_client_from_config(info["kubeconfig"])
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    bucket = oss2.Bucket(oss2.Auth(info["access_key_id"], info["access_key_secret"]), info["oss_endpoint"],
                         "elastic-inference-models")
    bucket.create_bucket()
    pool = cs_call(info, "POST", "/clusters/[ClusterId]/nodepools", gpu_pool("gpu-tf"))["nodepool_id"]
    wait_for(lambda: cs_call(info, "GET", "/clusters/[ClusterId]/nodepools/[NP]", NP=pool)["status"]["state"]
             == "active", "the pool to be active")
    cs_call(info, "POST", "/clusters/[ClusterId]/nodepools/[NP]", {"count": 3}, NP=pool)
    wait_for(lambda: len([n for n in core.list_node(label_selector=f"alibabacloud.com/nodepool-id={pool}").items
                          if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]) == 3,
             "three Ready GPU nodes")
    e = Env(sb, info, core, apps, bucket, state / "demo-models")
    ns = "tf-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": ns}})
    e.apply(render_storage(e.spec(ns), info["oss_endpoint"], info["access_key_id"], info["access_key_secret"]))
    specs = {name: e.spec(ns, name=f"tf-{name}", model_path=f"/models/savedmodels/{name}",
                          model={"name": name, "version_policy": f"specific:{MODELS[name][1]}"}) for name in MODELS}
    for name, vdir in exported.items():  # each release's own prefix: savedmodels/<name>/<release>/<version>/...
        for f in sorted(p for p in vdir.rglob("*") if p.is_file()):
            bucket.put_object_from_file(f"{specs[name].names.model_oss_prefix}{vdir.name}/"
                                        f"{f.relative_to(vdir).as_posix()}", str(f))
    pods = {name: e.deploy(specs[name], seed=None) for name in MODELS}
    e.urls = {}
    for name, pod in pods.items():
        wait_for(lambda pod=pod: e.ready(ns, pod), f"the {name} pod to be Ready", timeout=180)
        e.urls[name] = e.rest(ns, pod)
    e.exported = exported
    e.ns, e.pods = ns, pods
    yield e
    api.close()
    sb.stop()


def local(name: str, env: Env) -> Any:
    """The exported model loaded by TensorFlow in the test process: the reference outputs."""
    return tf.saved_model.load(str(env.exported[name]))


def same_floats(got: Any, want: Any) -> bool:
    g, w = np.asarray(got, dtype=np.float32), np.asarray(want, dtype=np.float32)
    return g.shape == w.shape and bool(np.array_equal(g, w))


def post(url: str, body: Any) -> tuple[int, Any]:
    r = httpx.post(url, content=json.dumps(body).encode(), timeout=30)
    return r.status_code, r.json()


# ---- a Keras text classifier -----------------------------------------------------------------------------------
def test_a_keras_text_classifier_serves_status_metadata_and_predictions_equal_to_tensorflow(env):
    base, model = env.urls["sentiment"], "sentiment"
    log = env.logs(env.ns, env.pods["sentiment"])
    assert "Successfully loaded servable version {name: sentiment version: 3}" in log
    status = httpx.get(f"{base}/v1/models/{model}").json()
    assert [(s["version"], s["state"]) for s in status["model_version_status"]] == [("3", "AVAILABLE")]

    md = httpx.get(f"{base}/v1/models/{model}/metadata").json()
    assert md["model_spec"] == {"name": model, "signature_name": "", "version": "3"}
    sigs = md["metadata"]["signature_def"]["signature_def"]
    ref = local(model, env)
    assert set(sigs) >= set(ref.signatures) | {"__saved_model_init_op"}
    default = sigs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"] == {"text": {"dtype": "DT_STRING", "name": "serving_default_text:0", "tensor_shape": {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}}}
    assert set(default["outputs"]) == set(ref.signatures["serving_default"].structured_outputs)
    (out_name, out_info), = default["outputs"].items()
    assert out_info["dtype"] == "DT_FLOAT" and [d["size"] for d in out_info["tensor_shape"]["dim"]] == ["-1", "2"]
    assert sigs["__saved_model_init_op"] == {"inputs": {}, "method_name": "", "outputs": {"__saved_model_init_op": {
        "dtype": "DT_INVALID", "name": "NoOp", "tensor_shape": {"dim": [], "unknown_rank": True}}}}

    texts = ["a wonderful film", "boring and long", "great story", "I loved it, every minute"]
    want = ref.signatures["serving_default"](text=tf.constant(texts))[out_name].numpy()
    code, rows = post(f"{base}/v1/models/{model}:predict", {"instances": texts})
    assert code == 200 and same_floats(rows["predictions"], want), rows
    code, cols = post(f"{base}/v1/models/{model}/versions/3:predict",
                      {"signature_name": "serving_default", "inputs": {"text": texts}})
    assert code == 200 and same_floats(cols["outputs"], want), cols
    code, named = post(f"{base}/v1/models/{model}:predict", {"instances": [{"text": t} for t in texts]})
    assert code == 200 and same_floats(named["predictions"], want)

    # what the flow's smoke predict and the load test send: a body built from the served signature
    from loadtests.common import build_predict_body

    body = build_predict_body(md)
    code, smoke = post(f"{base}/v1/models/{model}:predict", body)
    assert code == 200 and same_floats(smoke["predictions"],
                                       ref.signatures["serving_default"](text=tf.constant(["a"]))[out_name].numpy())

    # a wrong input name, dtype or shape: TF Serving's messages and codes
    assert post(f"{base}/v1/models/{model}:predict", {"inputs": {"txt": texts}}) == (
        400, {"error": "Missing named input: text in 'inputs' object."})
    code, err = post(f"{base}/v1/models/{model}:predict", {"instances": [{"txt": "x"}]})
    assert code == 400 and "JSON object: does not have named input: txt" in err["error"]
    code, err = post(f"{base}/v1/models/{model}:predict", {"instances": [1.5]})
    assert code == 400 and "Type: Number is not of expected type: string" in err["error"]
    code, err = post(f"{base}/v1/models/{model}:predict", {"inputs": [["a", "b"]]})
    assert code == 400 and "[1,2]" in err["error"] and "[-1]" in err["error"]
    code, err = post(f"{base}/v1/models/{model}:classify", {"examples": [{"text": "a"}]})
    assert (code, err["error"]) == (400, "Expected classification signature method_name to be "
                                         "tensorflow/serving/classify. Was: tensorflow/serving/predict")


# ---- two float inputs, two outputs ---------------------------------------------------------------------------------
def test_a_regressor_with_two_inputs_and_outputs_answers_rows_and_columns_as_tf_serving(env):
    base, model = env.urls["regressor"], "regressor"
    x = [[1.0, 2.0, 3.0], [0.1, -0.2, 0.3], [10.0, 0.0, -4.5]]
    scale = [2.0, -1.0, 0.5]
    want = {k: v.numpy() for k, v in local(model, env).signatures["serving_default"](
        x=tf.constant(x), scale=tf.constant(scale)).items()}
    code, cols = post(f"{base}/v1/models/{model}:predict", {"inputs": {"x": x, "scale": scale}})
    assert code == 200 and set(cols["outputs"]) == {"y", "y_scaled"}
    assert all(same_floats(cols["outputs"][k], want[k]) for k in want)
    code, rows = post(f"{base}/v1/models/{model}:predict",
                      {"instances": [{"x": xi, "scale": si} for xi, si in zip(x, scale, strict=True)]})
    assert code == 200 and len(rows["predictions"]) == 3
    for i, item in enumerate(rows["predictions"]):
        assert same_floats(item["y"], want["y"][i]) and same_floats(item["y_scaled"], want["y_scaled"][i])
    # integers are valid float values (JSON has one number type)
    code, ints = post(f"{base}/v1/models/{model}:predict", {"inputs": {"x": [[1, 2, 3]], "scale": [2]}})
    assert code == 200 and same_floats(ints["outputs"]["y"], want["y"][:1])

    code, err = post(f"{base}/v1/models/{model}:predict", {"instances": [[1.0, 2.0, 3.0]]})
    assert code == 400 and "expecting list of objects as multiple input tensors" in err["error"]
    code, err = post(f"{base}/v1/models/{model}:predict", {"inputs": {"x": [[1.0, 2.0]], "scale": [1.0]}})
    assert code == 400 and "[1,2]" in err["error"] and "[-1,3]" in err["error"]
    code, err = post(f"{base}/v1/models/{model}:predict", {"inputs": {"x": [["1", "2", "3"]], "scale": [1.0]}})
    assert code == 400 and 'JSON Value: "1" Type: String is not of expected type: float' in err["error"]
    code, err = post(f"{base}/v1/models/{model}:predict", {"inputs": {"x": x}})
    assert (code, err) == (400, {"error": "Missing named input: scale in 'inputs' object."})
    code, err = post(f"{base}/v1/models/{model}:regress", {"examples": [{"x": [1.0, 2.0, 3.0]}]})
    assert code == 400 and "Expected regression signature method_name" in err["error"]


# ---- classify and regress on tf.Example input ----------------------------------------------------------------------
def _serialized(examples: list[dict[str, list[float]]]) -> Any:
    return tf.constant([tf.train.Example(features=tf.train.Features(feature={
        k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in ex.items()})).SerializeToString()
        for ex in examples])


def test_classify_and_regress_signatures_answer_results_equal_to_tensorflow(env):
    base, model = env.urls["examples"], "examples"
    ref = local(model, env)
    examples = [{"x": [1.0, 2.0]}, {"x": [-0.5, 0.25]}, {"x": [3.0, -1.0]}]
    want = ref.signatures["classify"](inputs=_serialized(examples))
    code, got = post(f"{base}/v1/models/{model}:classify", {"signature_name": "classify", "examples": examples})
    assert code == 200 and len(got["results"]) == 3, got
    for i, row in enumerate(got["results"]):
        assert [label for label, _ in row] == [c.decode() for c in want["classes"].numpy()[i]]
        assert same_floats([score for _, score in row], want["scores"].numpy()[i])

    # the context is merged into every example
    with_bias = [{**ex, "bias": [0.5]} for ex in examples]
    want_r = ref.signatures["regress"](inputs=_serialized(with_bias))["outputs"].numpy()
    code, got = post(f"{base}/v1/models/{model}:regress",
                     {"signature_name": "regress", "context": {"bias": 0.5}, "examples": examples})
    assert code == 200 and same_floats(got["results"], want_r.reshape(-1)), got

    # the predict signature of the same model
    want_p = ref.signatures["serving_default"](x=tf.constant([[1.0, 2.0]]))["logits"].numpy()
    code, got = post(f"{base}/v1/models/{model}:predict", {"instances": [[1.0, 2.0]]})
    assert code == 200 and same_floats(got["predictions"], want_p)

    # errors: TF's own parse error for a missing required feature, a mixed-type feature, the wrong method
    code, err = post(f"{base}/v1/models/{model}:classify", {"signature_name": "classify", "examples": [{"y": 1.0}]})
    assert code == 400 and "x" in err["error"], err
    code, err = post(f"{base}/v1/models/{model}:classify",
                     {"signature_name": "classify", "examples": [{"x": [1.0, "a"]}]})
    assert (code, err) == (400, {"error": "Unexpected element type in feature: x expecting type: float"})
    code, err = post(f"{base}/v1/models/{model}:regress", {"signature_name": "classify", "examples": examples})
    assert (code, err["error"]) == (400, "Expected regression signature method_name to be "
                                         "tensorflow/serving/regress. Was: tensorflow/serving/classify")
    code, err = post(f"{base}/v1/models/{model}:classify", {"examples": examples})
    assert (code, err["error"]) == (400, "Expected classification signature method_name to be "
                                         "tensorflow/serving/classify. Was: tensorflow/serving/predict")
