"""Loading one model version from the pod's files: the demo format natively, a SavedModel only with TensorFlow.

A version directory is copied from the mounted volume (OSS objects under ``bucket/path/<base>/<version>/``) into the
pod's cache under the sandbox state directory (what ossfs' page cache + TensorFlow's reads amount to), then:

- ``model.json`` with ``format: elastic-inference-demo/v1`` -> :class:`core.demo_model.DemoModel` (pure Python);
  only the files the model reads are copied (manifest, variables index, the data shards holding tensors, assets);
- ``saved_model.pb`` / ``saved_model.pbtxt`` -> :class:`.savedmodel.SavedModelServable` (real TensorFlow, the
  optional extra ``elastic-inference[tensorflow]``) after copying every file of the version; without TensorFlow
  the load fails with a message saying how to install it;
- neither -> the error TF Serving 1.15's SavedModel loader gives for a directory without a SavedModel.

Every servable offers ``signature_def()`` (the map in TF Serving's metadata JSON shape) and
``run(signature_name, inputs) -> outputs`` on named tensors given as nested Python lists; ``run`` raises
:class:`RunError` for a failed computation, which the REST API answers as TF Serving does: the Session run's status
passed through ``MakeJsonFromStatus`` (``{"error": "<message>"}``) with ``ToHTTPStatusCode`` of its code
(tensorflow/serving ``model_servers/http_rest_api_handler.cc``, ``http_server.cc``: INTERNAL -> 500).

A demo model's ``serving`` object (``core.demo_model``) is applied here: ``extra_service_seconds`` (the replica is
held that much longer per request), ``error_rate`` (that share of runs fail with INTERNAL) and ``error_from_token``
(runs whose input reaches that token id fail with INTERNAL).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.demo_model import FORMAT as DEMO_FORMAT
from core.demo_model import DemoModel, ModelFormatError

if TYPE_CHECKING:
    from .podfs import PodFS


class LoadError(Exception):
    """A version that cannot be loaded; ``str()`` is the status text (``<Code>: <message>``)."""


class RunError(Exception):
    """A failed computation: ``code`` is the TF status code name (``INTERNAL`` ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Servable(Protocol):
    kind: str

    def signature_def(self) -> dict[str, Any]: ...

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]: ...


class DemoServable:
    kind = "demo"

    def __init__(self, model: DemoModel, rng: random.Random | None = None) -> None:
        self.model = model
        self.extra_service_seconds = model.extra_latency_ms / 1000.0
        self._rng = rng or random.Random()

    def signature_def(self) -> dict[str, Any]:
        return self.model.signature()

    def run(self, signature_name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model.predict(inputs)
        if self.model.error_rate and self._rng.random() < self.model.error_rate:
            raise RunError("INTERNAL", "{{node probabilities}} the model's computation failed (this demo model "
                           f"version declares serving.error_rate {self.model.error_rate:g})")
        limit = self.model.error_from_token
        if limit is not None:
            reached = max((t for ids, mask in zip(inputs["input_ids"], inputs["input_mask"], strict=True)
                           for t, m in zip(ids, mask, strict=True) if m), default=-1)
            if reached >= limit:
                raise RunError("INTERNAL", f"{{{{node probabilities}}}} the model's computation failed on token id "
                               f"{reached} (this demo model version declares serving.error_from_token {limit})")
        return outputs


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
        return _load_saved_model(fs, version_path, files, cache_dir)
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


TF_MISSING = ("Unimplemented: {path} is a TensorFlow SavedModel, and TensorFlow is not installed where the sandbox "
              "runs: install the extra (pip install 'elastic-inference[tensorflow]') to serve SavedModels; without "
              "it the sandbox's model server executes only the elastic-inference-demo/v1 format")


def _load_saved_model(fs: PodFS, version_path: str, files: dict[str, int], cache_dir: Path) -> Servable:
    try:
        from .savedmodel import SavedModelServable, import_tensorflow

        tf = import_tensorflow()
    except ImportError:
        raise LoadError(TF_MISSING.format(path=version_path)) from None
    try:
        for rel in sorted(files):
            _copy(fs, f"{version_path}/{rel}", cache_dir / rel)
    except FileNotFoundError as e:
        raise LoadError(f"Not found: {e}; No such file or directory") from None
    try:
        return SavedModelServable(cache_dir, tf)
    except LookupError as e:  # no MetaGraphDef tagged "serve"
        raise LoadError(f"Not found: {e.args[0]}") from None
    except Exception as e:  # noqa: BLE001 - whatever TensorFlow says about a broken SavedModel is the load error
        message = getattr(e, "message", None) or str(e)
        raise LoadError(f"Data loss: {version_path}: {type(e).__name__}: {message}") from None
