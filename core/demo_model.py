"""The project's demo model: a BERT-shaped sentiment classifier in TF Serving's layout, runnable in pure Python.

Real TF Serving loads SavedModels; the sandbox has no TensorFlow, so the demo ships its own small format that the
sandbox's TF-Serving-compatible runtime executes natively (no numpy). On disk (``<base>/<version>/``)::

    model.json                                   format id, signature_def, hyper-parameters, file list
    variables/variables.index                    JSON index: where each tensor lives in the data shards
    variables/variables.data-00000-of-0000N      raw little-endian float32 tensors, then padding
    variables/variables.data-0000k-of-0000N      padding shards (k >= 1) when ``size_bytes`` asks for a big model
    assets/vocab.txt                             the token vocabulary (one token per line, id = line number)

``model.json``::

    {"format": "elastic-inference-demo/v1",
     "signature_def": {"serving_default": {"inputs": {...}, "outputs": {...},
                                          "method_name": "tensorflow/serving/predict"}},
     "hyperparameters": {"vocab_size": 21128, "embedding_dim": 32, "num_labels": 2, "max_seq_length": 128},
     "labels": ["negative", "positive"]}

``signature_def`` has the shape TF Serving's REST metadata endpoint returns (``GET /v1/models/{m}/metadata`` →
``metadata.signature_def.signature_def``): tensor infos with ``dtype`` (``DT_INT32``/``DT_FLOAT``), ``tensor_shape``
(``dim: [{"size": "-1", "name": ""}, ...]``, sizes as strings like protobuf's JSON mapping of int64) and ``name``
(``input_ids:0``).

``variables.index``::

    {"format": "elastic-inference-demo/v1",
     "shards": [{"file": "variables.data-00000-of-00001", "size": N}, ...],
     "tensors": {"embeddings": {"shard": 0, "offset": 0, "shape": [V, D], "dtype": "float32"},
                 "dense/kernel": {...shape [D, 2]}, "dense/bias": {...shape [2]}}}

Offsets are byte offsets into the shard; bytes in a shard not covered by a tensor are padding (random bytes, so a
big demo model does not compress away) and are never read.

An optional ``"serving"`` object in ``model.json`` describes how this version behaves when served, as a property of
the model (a bigger or badly exported graph is slower; a numerically broken one fails some requests):
``{"extra_latency_ms": 120.0, "error_rate": 0.2}`` (each absent field is 0). The sandbox's runtime holds the replica
for ``extra_latency_ms`` more per request and fails that share of predict requests the way TF Serving answers a
failed Session run (see ``sandbox/runtime/servables.py``). ``"error_from_token": N`` (absent: none) fails every
predict request whose input holds a token id >= N: a version broken on part of the input space only, which real
text reaches and a synthetic sample of low token ids (the flow's own probe) does not. A model without the object
behaves as before.

The computation (``predict``): embedding lookup of ``input_ids``, mean-pool over positions where ``input_mask`` is
1, a dense layer ``pooled @ kernel + bias``, softmax → ``probabilities`` ``[batch, 2]``. ``segment_ids`` are
validated (shape, values 0/1) as BERT's are, and otherwise unused.
"""

from __future__ import annotations

import json
import math
import random
import sys
from array import array
from pathlib import Path
from typing import Any

FORMAT = "elastic-inference-demo/v1"
DEFAULT_VERSION = 1623831335
SIGNATURE_NAME = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
OUTPUT_NAME = "probabilities"
VOCAB_SIZE = 21128  # bert-base-chinese's vocabulary size (ChnSentiCorp is a Chinese sentiment corpus)
EMBEDDING_DIM = 32
NUM_LABELS = 2
MAX_SEQ_LENGTH = 128
LABELS = ["negative", "positive"]
INDEX_FILE = "variables/variables.index"
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
_CHUNK = 8 * 1024 * 1024


def _shard_name(i: int, n: int) -> str:
    return f"variables.data-{i:05d}-of-{n:05d}"


def _tensor_info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": f"{name}:0",
    }


def signature_def(max_seq_length: int = MAX_SEQ_LENGTH, num_labels: int = NUM_LABELS) -> dict[str, Any]:
    """The ``signature_def`` map, as TF Serving's metadata endpoint renders it."""
    return {
        SIGNATURE_NAME: {
            "inputs": {n: _tensor_info(n, "DT_INT32", [-1, max_seq_length]) for n in INPUT_NAMES},
            "outputs": {OUTPUT_NAME: _tensor_info(OUTPUT_NAME, "DT_FLOAT", [-1, num_labels])},
            "method_name": PREDICT_METHOD,
        }
    }


def _floats_le(values: array) -> bytes:
    if sys.byteorder != "little":
        values = array("f", values)
        values.byteswap()
    return values.tobytes()


def _write_padding(fh, nbytes: int, rng: random.Random) -> None:
    """Incompressible filler, cheap to make: one random 8 MiB block, rotated by a random offset for each write.

    Making fresh random bytes runs at ~150 MB/s in Python; rotating a block runs at memory speed, and no two
    blocks are equal, so neither a compressor's window nor a block-level dedup finds repeats.
    """
    if nbytes <= 0:
        return
    block = rng.randbytes(min(nbytes, _CHUNK))
    written = 0
    while written < nbytes:
        k = rng.randrange(len(block))
        chunk = block[k:] + block[:k]
        n = min(len(chunk), nbytes - written)
        fh.write(memoryview(chunk)[:n])
        written += n


def generate_demo_model(
    base_dir: str | Path,
    version: int = DEFAULT_VERSION,
    *,
    size_bytes: int | None = None,
    seed: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    extra_latency_ms: float = 0.0,
    error_rate: float = 0.0,
    error_from_token: int | None = None,
) -> Path:
    """Write the demo model to ``<base_dir>/<version>/`` and return that version directory.

    ``size_bytes``: make the variables data (all shards together) this many bytes, padding with random bytes and
    splitting into shards of at most ``shard_bytes`` (the tensors always fit in the first shard). Without it the
    model is just its weights (about 2.7 MB). Same ``seed`` → same weights (padding is seeded too).
    ``extra_latency_ms`` / ``error_rate`` / ``error_from_token``: a slower or failing version (the ``serving`` object
    of ``model.json``).
    """
    serving = serving_behaviour({"extra_latency_ms": extra_latency_ms, "error_rate": error_rate,
                                 **({} if error_from_token is None else {"error_from_token": error_from_token})})
    vdir = Path(base_dir) / str(int(version))
    (vdir / "variables").mkdir(parents=True, exist_ok=True)
    (vdir / "assets").mkdir(exist_ok=True)
    rng = random.Random(seed)

    # Weights: small uniform values; a fixed seed makes them (and so every prediction) reproducible.
    scale = 1.0 / math.sqrt(EMBEDDING_DIM)
    tensors: list[tuple[str, list[int], array]] = [
        ("embeddings", [VOCAB_SIZE, EMBEDDING_DIM],
         array("f", (rng.uniform(-1.0, 1.0) for _ in range(VOCAB_SIZE * EMBEDDING_DIM)))),
        ("dense/kernel", [EMBEDDING_DIM, NUM_LABELS],
         array("f", (rng.uniform(-scale, scale) * 4 for _ in range(EMBEDDING_DIM * NUM_LABELS)))),
        ("dense/bias", [NUM_LABELS], array("f", (rng.uniform(-0.1, 0.1) for _ in range(NUM_LABELS)))),
    ]
    weight_bytes = sum(4 * len(a) for _, _, a in tensors)
    total = max(weight_bytes, size_bytes or 0)
    if shard_bytes < weight_bytes:
        raise ValueError(f"shard_bytes ({shard_bytes}) must hold the weights ({weight_bytes} bytes)")
    nshards = max(1, math.ceil(total / shard_bytes))
    shard_sizes = [min(shard_bytes, total - i * shard_bytes) for i in range(nshards)]

    index: dict[str, Any] = {"format": FORMAT, "shards": [], "tensors": {}}
    pad_rng = random.Random(seed ^ 0x5EED)
    for i, size in enumerate(shard_sizes):
        name = _shard_name(i, nshards)
        with open(vdir / "variables" / name, "wb") as fh:
            used = 0
            if i == 0:
                for tname, shape, values in tensors:
                    index["tensors"][tname] = {"shard": 0, "offset": used, "shape": shape, "dtype": "float32"}
                    data = _floats_le(values)
                    fh.write(data)
                    used += len(data)
            _write_padding(fh, size - used, pad_rng)
        index["shards"].append({"file": name, "size": size})
    # Stale shards of an earlier generation with another shard count would confuse a reader: remove them.
    wanted = {s["file"] for s in index["shards"]}
    for old in (vdir / "variables").glob("variables.data-*"):
        if old.name not in wanted:
            old.unlink()

    (vdir / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(5, VOCAB_SIZE)]
    (vdir / "assets" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    manifest = {
        "format": FORMAT,
        "signature_def": signature_def(),
        "hyperparameters": {
            "vocab_size": VOCAB_SIZE,
            "embedding_dim": EMBEDDING_DIM,
            "num_labels": NUM_LABELS,
            "max_seq_length": MAX_SEQ_LENGTH,
        },
        "labels": LABELS,
        "variables_index": INDEX_FILE,
    }
    if any(serving.values()):
        manifest["serving"] = serving
    (vdir / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return vdir


class ModelFormatError(ValueError):
    """The version directory is not a demo model this code can read."""


def serving_behaviour(serving: Any) -> dict[str, float]:
    """The ``serving`` object checked: ``extra_latency_ms`` >= 0, ``error_rate`` in [0, 1] and, when present,
    ``error_from_token`` an integer >= 0 (ValueError names the field and the rule)."""
    if serving is None:
        serving = {}
    if not isinstance(serving, dict):
        raise ModelFormatError(f"serving: must be an object, got {type(serving).__name__}")
    unknown = sorted(set(serving) - {"extra_latency_ms", "error_rate", "error_from_token"})
    if unknown:
        raise ModelFormatError(f"serving: unknown field(s) {unknown}; known: extra_latency_ms, error_rate, "
                               "error_from_token")
    out: dict[str, float] = {}
    for key, low, high in (("extra_latency_ms", 0.0, math.inf), ("error_rate", 0.0, 1.0)):
        v = serving.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise ModelFormatError(f"serving.{key}: {v!r} must be a number in [{low:g}, {high:g}]")
        out[key] = float(v)
    if "error_from_token" in serving:
        v = serving["error_from_token"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ModelFormatError(f"serving.error_from_token: {v!r} must be an integer >= 0")
        out["error_from_token"] = v
    return out


class DemoModel:
    """A loaded demo model: ``predict`` runs the classifier in pure Python."""

    def __init__(self, manifest: dict[str, Any], tensors: dict[str, array]) -> None:
        hp = manifest["hyperparameters"]
        self.manifest = manifest
        self.vocab_size = int(hp["vocab_size"])
        self.dim = int(hp["embedding_dim"])
        self.num_labels = int(hp["num_labels"])
        self.max_seq_length = int(hp["max_seq_length"])
        self.embeddings = tensors["embeddings"]
        self.kernel = tensors["dense/kernel"]
        self.bias = tensors["dense/bias"]
        serving = serving_behaviour(manifest.get("serving"))
        self.extra_latency_ms = serving["extra_latency_ms"]
        self.error_rate = serving["error_rate"]
        self.error_from_token: int | None = serving.get("error_from_token")  # type: ignore[assignment]

    @classmethod
    def load(cls, version_dir: str | Path) -> DemoModel:
        vdir = Path(version_dir)
        try:
            manifest = json.loads((vdir / "model.json").read_text())
        except FileNotFoundError:
            raise ModelFormatError(f"{vdir}: no model.json (not a demo model version directory)") from None
        except json.JSONDecodeError as exc:
            raise ModelFormatError(f"{vdir}/model.json is not JSON: {exc}") from None
        if manifest.get("format") != FORMAT:
            raise ModelFormatError(f"{vdir}/model.json: format {manifest.get('format')!r}, expected {FORMAT!r}")
        index_path = vdir / manifest.get("variables_index", INDEX_FILE)
        try:
            index = json.loads(index_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{index_path}: cannot read the variables index: {exc}") from None
        hp = manifest["hyperparameters"]
        expected = {
            "embeddings": [hp["vocab_size"], hp["embedding_dim"]],
            "dense/kernel": [hp["embedding_dim"], hp["num_labels"]],
            "dense/bias": [hp["num_labels"]],
        }
        tensors: dict[str, array] = {}
        for name, shape in expected.items():
            info = index["tensors"].get(name)
            if info is None or list(info["shape"]) != shape or info.get("dtype") != "float32":
                raise ModelFormatError(f"{index_path}: tensor {name!r} missing or not float32 {shape}")
            shard = index["shards"][info["shard"]]
            count = math.prod(shape)
            with open(index_path.parent / shard["file"], "rb") as fh:
                fh.seek(info["offset"])
                raw = fh.read(4 * count)
            if len(raw) != 4 * count:
                raise ModelFormatError(f"{shard['file']}: truncated while reading tensor {name!r}")
            values = array("f")
            values.frombytes(raw)
            if sys.byteorder != "little":
                values.byteswap()
            tensors[name] = values
        return cls(manifest, tensors)

    def signature(self) -> dict[str, Any]:
        """The ``signature_def`` map (``{"serving_default": {inputs, outputs, method_name}}``)."""
        return self.manifest["signature_def"]

    def _check(self, inputs: dict[str, list[list[int]]]) -> int:
        missing = [n for n in INPUT_NAMES if n not in inputs]
        if missing:
            raise ValueError(f"missing input(s) {missing}; the signature needs {list(INPUT_NAMES)}")
        extra = sorted(set(inputs) - set(INPUT_NAMES))
        if extra:
            raise ValueError(f"unknown input(s) {extra}; the signature takes {list(INPUT_NAMES)}")
        batch = len(inputs["input_ids"])
        for name in INPUT_NAMES:
            rows = inputs[name]
            if len(rows) != batch:
                raise ValueError(f"input {name!r} has batch size {len(rows)}, input_ids has {batch}")
            for r, row in enumerate(rows):
                if len(row) != self.max_seq_length:
                    raise ValueError(
                        f"input {name!r} row {r} has length {len(row)}; the signature wants "
                        f"[-1,{self.max_seq_length}]"
                    )
                for v in row:
                    if not isinstance(v, int) or isinstance(v, bool):
                        raise ValueError(f"input {name!r} row {r}: {v!r} is not an int32")
        for r, row in enumerate(inputs["input_ids"]):
            for i, tok in enumerate(row):
                if not 0 <= tok < self.vocab_size:
                    raise ValueError(f"indices[{r},{i}] = {tok} is not in [0, {self.vocab_size})")
        return batch

    def predict(self, inputs: dict[str, list[list[int]]]) -> dict[str, list[list[float]]]:
        """``{"input_ids": [[...128 ints]], "input_mask": ..., "segment_ids": ...}`` → ``{"probabilities": ...}``."""
        batch = self._check(inputs)
        dim, labels, emb = self.dim, self.num_labels, self.embeddings
        out: list[list[float]] = []
        for r in range(batch):
            pooled = [0.0] * dim
            count = 0
            for tok, m in zip(inputs["input_ids"][r], inputs["input_mask"][r], strict=True):
                if m:
                    base = tok * dim
                    for j in range(dim):
                        pooled[j] += emb[base + j]
                    count += 1
            if count:
                pooled = [p / count for p in pooled]
            logits = [
                self.bias[k] + sum(pooled[j] * self.kernel[j * labels + k] for j in range(dim))
                for k in range(labels)
            ]
            top = max(logits)
            exps = [math.exp(x - top) for x in logits]
            total = sum(exps)
            out.append([e / total for e in exps])
        return {OUTPUT_NAME: out}


def example_inputs(token_ids: list[list[int]] | None = None, batch: int = 1, seed: int = 0) -> dict[str, Any]:
    """A valid ``predict`` input: given token id lists (padded/truncated to 128), or ``batch`` random rows."""
    rng = random.Random(seed)
    rows = token_ids or [
        [2] + [rng.randrange(5, VOCAB_SIZE) for _ in range(rng.randrange(4, 60))] + [3] for _ in range(batch)
    ]
    ids, mask = [], []
    for row in rows:
        row = list(row)[:MAX_SEQ_LENGTH]
        ids.append(row + [0] * (MAX_SEQ_LENGTH - len(row)))
        mask.append([1] * len(row) + [0] * (MAX_SEQ_LENGTH - len(row)))
    return {"input_ids": ids, "input_mask": mask, "segment_ids": [[0] * MAX_SEQ_LENGTH for _ in rows]}


if __name__ == "__main__":  # python -m core.demo_model DIR [SIZE_BYTES]
    target = sys.argv[1] if len(sys.argv) > 1 else "model"
    size = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print(generate_demo_model(target, size_bytes=size))
