"""The whole deploy flow with a user's own model: a real Keras SavedModel, served by real TensorFlow in the sandbox.

The model is exported at test time, the spec is the demo's with the user's model dir (what
``elastic-inference demo --model DIR`` does, :func:`cli.demo.spec_with_model`), and the flow runs on a real Prefect server against a sandbox of its own: upload,
serving, Ingress, the smoke predict and a short Locust load (both build their requests from the served
signature), verification. Then predictions sent through the Ingress must equal TensorFlow's own outputs for the same
texts, and a re-run uploads nothing. Without TensorFlow the module is skipped, saying how to enable it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import savedmodels  # tests/savedmodels.py
from demo_spec import REPO, demo_spec  # tests/e2e/demo_spec.py

from cli.demo import spec_with_model
from cli.sandbox_profile import save_sandbox_blocks
from core.spec import SpecError

tf = savedmodels.tensorflow()  # skips the module, saying how to enable it, when TensorFlow is not installed
VERSION = 20261205


@pytest.fixture(scope="module")
def sandbox_for_flow(tmp_path_factory: pytest.TempPathFactory):
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("tf-flow-sandbox"), speed=50.0)
    sb.start()
    yield sb
    sb.stop()


def user_spec(model_dir: Path, name: str, **overrides):
    """The demo spec with the user's model (as ``demo --model DIR --model-name sentiment`` sets it) and a short load."""
    return demo_spec(model_dir, name, {
        "model.name": "sentiment", "model.version_policy": "latest",
        "load_test.stages": [{"duration_s": 10, "users": 4, "spawn_rate": 4}], "load_test.sample_interval_s": 1.0,
        "verification.require_scale_out": False, "verification.require_mix": False, **overrides})


def test_the_demo_spec_takes_the_users_model_dir_and_rejects_one_without_a_model(tmp_path: Path) -> None:
    base = tmp_path / "mine"
    savedmodels.export_regressor(base, 3)
    savedmodels.export_regressor(base, 5)
    spec = spec_with_model(REPO / "examples" / "sandbox.yaml", base, model_name="mine", version_policy="all")
    assert (spec.model.local_dir, spec.model.name, spec.model.version_policy) == (base.resolve(), "mine", "all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="local_dir"):
        spec_with_model(REPO / "examples" / "sandbox.yaml", tmp_path / "empty")


def test_a_users_savedmodel_deploys_through_the_flow_and_predicts_what_tensorflow_predicts(
    sandbox_for_flow, prefect_api, tmp_path: Path
) -> None:
    from flows.deploy import deploy

    model_dir = tmp_path / "model" / "sentiment"
    vdir = savedmodels.export_text_classifier(model_dir, VERSION)
    block = save_sandbox_blocks(sandbox_for_flow.info, name="e2e-tf-flow")
    spec = user_spec(model_dir, "tf")
    result = deploy(spec=spec, cluster_block=block, reports_dir=str(tmp_path / "reports"))
    assert result.verification is not None and result.verification.passed, result.verification
    assert result.smoke is not None and result.smoke.status == 200 and result.smoke.predictions == 1
    assert result.load_test is not None and result.load_test.requests > 0 and result.load_test.failures == 0
    assert result.upload.files_uploaded == len([p for p in model_dir.rglob("*") if p.is_file()])

    # through the Ingress, as a client would call it: equal to TensorFlow's own output for the same texts
    ep = result.endpoint
    assert ep is not None
    texts = ["a wonderful warm film", "far too long", "great story", "boring", "I loved every minute of it"]
    serving_default = tf.saved_model.load(str(vdir)).signatures["serving_default"]
    (out_name, want), = {k: v.numpy() for k, v in serving_default(text=tf.constant(texts)).items()}.items()
    with httpx.Client(base_url=f"http://{ep.address}:{ep.port}", headers={"Host": ep.host}, timeout=30) as http:
        meta = http.get("/v1/models/sentiment/metadata").json()
        sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert sig["inputs"]["text"]["dtype"] == "DT_STRING" and set(sig["outputs"]) == {out_name}
        for body, key in (({"instances": texts}, "predictions"), ({"inputs": {"text": texts}}, "outputs")):
            r = http.post("/v1/models/sentiment:predict", json=body)
            assert r.status_code == 200, r.text
            got = np.asarray(r.json()[key], dtype=np.float32)
            assert got.shape == want.shape and np.array_equal(got, want), (got, want)
        r = http.post("/v1/models/sentiment:predict", json={"instances": [[1, 2]]})
        assert r.status_code == 400 and "is not of expected type: string" in r.json()["error"]

    # a re-run with the model unchanged uploads nothing
    again = deploy(spec=user_spec(model_dir, "tf", **{"load_test.enabled": False}), cluster_block=block,
                   reports_dir=str(tmp_path / "reports2"))
    assert again.upload.bytes_sent == 0 and again.upload.files_skipped == again.upload.files_total
