"""Loading one model version from the pod's files: the demo format natively, a SavedModel only with TensorFlow.

A version directory is copied from the mounted volume (OSS objects under ``bucket/path/<base>/<version>/``) into the
pod's cache under the sandbox state directory (what ossfs' page cache + TensorFlow's reads amount to), then:

- ``model.json`` with ``format: elastic-inference-demo/v1`` -> :class:`core.demo_model.DemoModel` (pure Python);
  only the files the model reads are copied (manifest, variables index, the data shards holding tensors, assets);
- ``saved_model.pb`` / ``saved_model.pbtxt`` -> ``tf.saved_model.load`` when ``import tensorflow`` works; otherwise
  the load fails with a message saying that TensorFlow is not installed in the sandbox;
- neither -> the error TF Serving 1.15's SavedModel loader gives for a directory without a SavedModel.

Every servable offers ``signature_def()`` (the map in TF Serving's metadata JSON shape) and
``run(signature_name, inputs) -> outputs`` on named tensors given as nested Python lists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.demo_model import FORMAT as DEMO_FORMAT
from core.demo_model import DemoModel, ModelFormatError

if TYPE_CHECKING:
    from .podfs import PodFS


class LoadError(Exception):
    """A version that cannot be loaded; ``str()`` is the status text (``<Code>: <message>``)."""


class Servable(Protocol):
    kind: str

    def signature_def(self) -> dict[str, Any]: ...

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]: ...


class DemoServable:
    kind = "demo"

    def __init__(self, model: DemoModel) -> None:
        self.model = model

    def signature_def(self) -> dict[str, Any]:
        return self.model.signature()

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        return self.model.predict(inputs)


class SavedModelServable:  # pragma: no cover - needs TensorFlow, which the sandbox does not install
    kind = "saved_model"

    def __init__(self, loaded: Any, tf: Any) -> None:
        self.loaded = loaded
        self.tf = tf

    def signature_def(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, fn in self.loaded.signatures.items():
            def info(spec: Any, key: str) -> dict[str, Any]:
                dims = [{"size": str(d if d is not None else -1), "name": ""} for d in spec.shape.as_list()]
                return {"dtype": "DT_" + spec.dtype.name.upper(), "name": f"{key}:0",
                        "tensor_shape": {"dim": dims, "unknown_rank": False}}
            ins = fn.structured_input_signature[1]
            outs = fn.structured_outputs
            out[name] = {"inputs": {k: info(v, k) for k, v in ins.items()},
                         "outputs": {k: info(v, k) for k, v in outs.items()},
                         "method_name": "tensorflow/serving/predict"}
        return out

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        fn = self.loaded.signatures[signature_name]
        spec = fn.structured_input_signature[1]
        feed = {k: self.tf.constant(v, dtype=spec[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy().tolist() for k, v in fn(**feed).items()}


def _copy(fs: PodFS, src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    with fs.open(src) as fh, open(tmp, "wb") as out:
        shutil.copyfileobj(fh, out, 4 * 1024 * 1024)
    tmp.replace(dst)


def version_files(fs: PodFS, version_path: str) -> dict[str, int]:
    files = fs.walk(version_path)
    if files is None:
        raise LoadError(f"Not found: {version_path}; No such file or directory")
    return files


def load_version(fs: PodFS, version_path: str, cache_dir: Path) -> Servable:
    """Copy the version to ``cache_dir`` and load it (blocking: run it in a thread)."""
    files = version_files(fs, version_path)
    if "saved_model.pb" in files or "saved_model.pbtxt" in files:
        try:
            import tensorflow as tf  # type: ignore[import-not-found]
        except ImportError:
            raise LoadError(
                f"Unimplemented: {version_path} is a TensorFlow SavedModel, and TensorFlow is not installed in the "
                "sandbox: the sandbox's model server executes the elastic-inference-demo/v1 format natively and a "
                "SavedModel only where `import tensorflow` works") from None
        for rel in files:  # pragma: no cover - needs TensorFlow
            _copy(fs, f"{version_path}/{rel}", cache_dir / rel)
        try:  # pragma: no cover
            return SavedModelServable(tf.saved_model.load(str(cache_dir), tags=["serve"]), tf)
        except Exception as e:  # noqa: BLE001  # pragma: no cover
            raise LoadError(f"Internal: {e}") from None
    if "model.json" not in files:
        raise LoadError("Not found: Specified file path does not appear to contain a SavedModel bundle (should have "
                        f"a file called `saved_model.pb`)\nSpecified file path: {version_path}")
    try:
        manifest = json.loads(fs.read_bytes(f"{version_path}/model.json"))
    except (FileNotFoundError, ValueError) as e:
        raise LoadError(f"Data loss: {version_path}/model.json: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DEMO_FORMAT:
        raise LoadError(f"Invalid argument: {version_path}/model.json: format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected "
                        f"{DEMO_FORMAT!r}")
    wanted = {"model.json"}
    index_rel = str(manifest.get("variables_index") or "variables/variables.index")
    wanted.add(index_rel)
    try:
        index = json.loads(fs.read_bytes(f"{version_path}/{index_rel}"))
        shards = {int(t["shard"]) for t in (index.get("tensors") or {}).values()}
        index_dir = index_rel.rsplit("/", 1)[0] if "/" in index_rel else ""
        for i in shards:
            name = index["shards"][i]["file"]
            wanted.add(f"{index_dir}/{name}" if index_dir else name)
    except (FileNotFoundError, ValueError, KeyError, IndexError, TypeError) as e:
        raise LoadError(f"Data loss: {version_path}/{index_rel}: cannot read the variables index: {e}") from None
    wanted |= {rel for rel in files if rel.startswith("assets/")}
    try:
        for rel in sorted(wanted):
            _copy(fs, f"{version_path}/{rel}", cache_dir / rel)
    except FileNotFoundError as e:
        raise LoadError(f"Not found: {e}; No such file or directory") from None
    try:
        return DemoServable(DemoModel.load(cache_dir))
    except (ModelFormatError, KeyError, ValueError, OSError) as e:
        raise LoadError(f"Data loss: {e}") from None
