"""The demo model: TF Serving layout, the documented on-disk format, and a pure-Python predict."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from core.demo_model import (
    DEFAULT_VERSION,
    FORMAT,
    DemoModel,
    ModelFormatError,
    example_inputs,
    generate_demo_model,
)
from core.spec import ModelSpec, check_model_layout


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo") / "chnsenticorp"
    vdir = generate_demo_model(base)
    return base, vdir


def test_layout_is_tf_serving_and_accepted_by_the_spec(model_dir):
    base, vdir = model_dir
    assert vdir == base / str(DEFAULT_VERSION)
    assert check_model_layout(base, [DEFAULT_VERSION]) == [DEFAULT_VERSION]
    spec = ModelSpec(local_dir=base)  # the seed's policy specific:1623831335 finds its version
    assert spec.versions_wanted() == [DEFAULT_VERSION]
    assert (vdir / "variables" / "variables.data-00000-of-00001").is_file()
    assert (vdir / "variables" / "variables.index").is_file()


def test_manifest_carries_a_tf_serving_signature(model_dir):
    _, vdir = model_dir
    manifest = json.loads((vdir / "model.json").read_text())
    assert manifest["format"] == FORMAT
    sig = manifest["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert set(sig["inputs"]) == {"input_ids", "input_mask", "segment_ids"}
    for name, info in sig["inputs"].items():
        assert info["dtype"] == "DT_INT32"
        assert info["name"] == f"{name}:0"
        assert [d["size"] for d in info["tensor_shape"]["dim"]] == ["-1", "128"]
    out = sig["outputs"]["probabilities"]
    assert out["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in out["tensor_shape"]["dim"]] == ["-1", "2"]
    hp = manifest["hyperparameters"]
    assert hp["vocab_size"] > 0 and hp["embedding_dim"] > 0
    assert DemoModel.load(vdir).signature() == manifest["signature_def"]


def test_index_describes_the_weights_file(model_dir):
    _, vdir = model_dir
    index = json.loads((vdir / "variables" / "variables.index").read_text())
    shard = index["shards"][0]
    assert (vdir / "variables" / shard["file"]).stat().st_size == shard["size"]
    emb = index["tensors"]["embeddings"]
    hp = json.loads((vdir / "model.json").read_text())["hyperparameters"]
    assert emb["shape"] == [hp["vocab_size"], hp["embedding_dim"]]
    assert index["tensors"]["dense/kernel"]["shape"] == [hp["embedding_dim"], 2]
    assert index["tensors"]["dense/bias"]["shape"] == [2]


def test_predict_gives_one_probability_pair_per_row(model_dir):
    _, vdir = model_dir
    model = DemoModel.load(vdir)
    out = model.predict(example_inputs(batch=5, seed=3))
    probs = out["probabilities"]
    assert len(probs) == 5
    for row in probs:
        assert len(row) == 2
        assert all(0.0 < p < 1.0 for p in row)
        assert math.isclose(sum(row), 1.0, rel_tol=1e-9)
    assert len({tuple(r) for r in probs}) > 1  # different texts, different scores


def test_predict_is_deterministic_across_generations(tmp_path, model_dir):
    _, vdir = model_dir
    again = generate_demo_model(tmp_path / "m")
    inputs = example_inputs(batch=3, seed=7)
    assert DemoModel.load(vdir).predict(inputs) == DemoModel.load(again).predict(inputs)
    other = generate_demo_model(tmp_path / "other", seed=1)
    assert DemoModel.load(other).predict(inputs) != DemoModel.load(vdir).predict(inputs)


def test_mask_decides_which_tokens_count(model_dir):
    _, vdir = model_dir
    model = DemoModel.load(vdir)
    inputs = example_inputs([[2, 100, 200, 3]])
    noisy = json.loads(json.dumps(inputs))
    noisy["input_ids"][0][10:20] = list(range(500, 510))  # padding positions: mask is 0 there
    assert model.predict(inputs) == model.predict(noisy)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda i: i.pop("segment_ids"), "missing input"),
        (lambda i: i.__setitem__("input_ids", [r[:64] for r in i["input_ids"]]), "length 64"),
        (lambda i: i["input_ids"][0].__setitem__(5, 10**6), "is not in [0, "),
        (lambda i: i.__setitem__("extra", [[0]]), "unknown input"),
        (lambda i: i["input_mask"].append([0] * 128), "batch size"),
    ],
)
def test_predict_rejects_inputs_that_break_the_signature(model_dir, mutate, message):
    _, vdir = model_dir
    inputs = example_inputs(batch=1)
    mutate(inputs)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        DemoModel.load(vdir).predict(inputs)


def test_size_bytes_pads_into_shards_of_incompressible_data(tmp_path, model_dir):
    _, small = model_dir
    size = 7 * 1024 * 1024 + 123
    vdir = generate_demo_model(tmp_path / "big", size_bytes=size, shard_bytes=3 * 1024 * 1024)
    shards = sorted((vdir / "variables").glob("variables.data-*"))
    assert [s.name for s in shards] == [f"variables.data-{i:05d}-of-00003" for i in range(3)]
    assert sum(s.stat().st_size for s in shards) == size
    tail = shards[-1].read_bytes()
    assert tail.count(0) < len(tail) // 10
    assert len(gzip.compress(tail, compresslevel=1)) > 0.95 * len(tail)
    # Padding never changes the model: same weights, same predictions.
    inputs = example_inputs(batch=2)
    assert DemoModel.load(vdir).predict(inputs) == DemoModel.load(small).predict(inputs)
    # Generating again with fewer shards leaves no stale shard behind.
    generate_demo_model(tmp_path / "big", size_bytes=size, shard_bytes=8 * 1024 * 1024)
    assert [s.name for s in (vdir / "variables").glob("variables.data-*")] == ["variables.data-00000-of-00001"]


def test_load_refuses_what_is_not_a_demo_model(tmp_path, model_dir):
    _, vdir = model_dir
    with pytest.raises(ModelFormatError, match="no model.json"):
        DemoModel.load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ModelFormatError, match="format"):
        DemoModel.load(bad)
