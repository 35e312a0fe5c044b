"""Which OSS model prefixes a release's pods read, as the cluster says: what pruning and teardown must not delete.

A TF Serving pod reads its models from the ``base_path`` of each model in its ``--model_config_file`` (a
``ModelServerConfig`` text proto, ``model_servers/model_server_config.proto``), or from ``--model_base_path``
(``model_servers/main.cc``). A base path is a container path: the volume mounted at the longest ``mountPath``
above it holds it, and an OSS volume (the CSI driver ``ossplugin.csi.alibabacloud.com``, a PersistentVolume with
``volumeAttributes`` ``bucket`` and ``path``, alibaba-cloud-csi-driver ``examples/oss/static/pv.yaml``) shows object
``<path>/<subPath>/<rest>`` of its bucket at ``<mountPath>/<rest>``. So a reader is followed from the pod template
(flags, volumes, mounts) through its ConfigMap, PVC and PV to ``(bucket, prefix)``, never recomputed from a spec:
a release deployed by an earlier version of this tool (one shared ``<model_path>`` for every release) is read as
what it is.

Whatever cannot be followed (a ConfigMap, claim or volume that is gone, a config the parser does not read) is
:class:`UnknownReader`: the caller keeps every prefix rather than guess.
"""

from __future__ import annotations

import codecs
import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

from clients.kube import KubeClients
from tasks.storage import OSS_CSI_DRIVER

CONFIG_FLAG = "--model_config_file="
# absl::SimpleAtoi: surrounding ASCII whitespace, an optional sign, decimal digits (the int64 range aside).
_SIMPLE_ATOI = re.compile(r"\s*[+-]?[0-9]+\s*")
BASE_PATH_FLAG = "--model_base_path="


class UnknownReader(RuntimeError):
    """What a pod reads cannot be told (the message says why): delete nothing it might read."""


class ModelPrefix(BaseModel):
    """Objects ``oss://<bucket>/<prefix>...``; ``prefix`` is ``""`` (the whole bucket) or ends with ``/``."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    prefix: str

    def read_by(self, base: ModelPrefix) -> bool:
        """Whether deleting this prefix deletes an object TF Serving reads from the base path ``base``: one that
        holds it, or one inside a version directory of it. TF Serving reads only ``<base>/<version>/``, where a
        child of the base path is a version when ``absl::SimpleAtoi`` parses it (``ParseVersionNumber`` in
        ``sources/storage_path/file_system_storage_path_source.cc``; other children are skipped), so a release
        directory ``<base>/<release>/`` (never a number: it has a ``-``) below a shared base path is not read
        from it."""
        if self.bucket != base.bucket:
            return False
        if base.prefix.startswith(self.prefix):
            return True
        if not self.prefix.startswith(base.prefix):
            return False
        child = self.prefix[len(base.prefix):].split("/", 1)[0]
        return _SIMPLE_ATOI.fullmatch(child) is not None

    def __str__(self) -> str:
        return f"oss://{self.bucket}/{self.prefix}"


def oss_prefix(bucket: str, *parts: str) -> ModelPrefix:
    """The prefix of the path ``parts`` (each may hold ``/``) in ``bucket``, as ossfs maps a mounted path."""
    names = [p for part in parts for p in part.split("/") if p not in ("", ".")]
    return ModelPrefix(bucket=bucket, prefix="".join(f"{n}/" for n in names))


# A text-format string: one or more adjacent quoted pieces ("a" 'b'), C escapes inside (protobuf's tokenizer).
_PIECE = r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'"
_BASE_PATH = re.compile(rf"\bbase_path\s*:?\s*((?:(?:{_PIECE})\s*)+)")
_PIECES = re.compile(_PIECE)


def config_base_paths(text: str) -> list[str]:
    """Every ``base_path`` of a ``ModelServerConfig`` text proto. Raises :class:`UnknownReader` when a
    ``base_path`` field is not a plain string literal (the text is then not one this reader can vouch for)."""
    found = _BASE_PATH.findall(text)
    if len(found) != len(re.findall(r"\bbase_path\b", text)):
        raise UnknownReader("the model config has a base_path this reader cannot parse")
    out = []
    for literal in found:
        pieces = [p[1:-1] for p in _PIECES.findall(literal)]
        out.append("".join(codecs.escape_decode(p.encode())[0].decode("utf-8", "replace") for p in pieces))
    return out


def _tokens(container: dict[str, Any]) -> list[str]:
    """The container's command line, also inside ``sh -c "..."`` (arena's form)."""
    out: list[str] = []
    for item in [*(container.get("command") or []), *(container.get("args") or [])]:
        try:
            out += shlex.split(item) if any(c.isspace() for c in item) else [item]
        except ValueError:
            out.append(item)
    return out


def _mount_of(path: str, container: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The volumeMount that holds ``path`` (the longest mountPath above it) and the path relative to it."""
    p = PurePosixPath(path)
    best: tuple[dict[str, Any], str] | None = None
    for m in container.get("volumeMounts") or []:
        mp = PurePosixPath(m.get("mountPath") or "/")
        if (p == mp or mp in p.parents) and (best is None or len(str(mp)) > len(best[0].get("mountPath") or "")):
            best = (m, str(p.relative_to(mp)))
    return best


Getter = Callable[[str, str, str | None], dict[str, Any] | None]  # (kind, name, namespace) -> object or None


def pod_model_prefixes(pod_spec: dict[str, Any], namespace: str, get: Getter) -> set[ModelPrefix]:
    """The OSS prefixes a pod with ``pod_spec`` reads its models from (base paths on other volumes read no OSS
    object and add nothing). ``get`` reads an object from the cluster. Raises :class:`UnknownReader`."""
    volumes = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    out: set[ModelPrefix] = set()
    for container in pod_spec.get("containers") or []:
        base_paths: list[str] = []
        for token in _tokens(container):
            if token.startswith(BASE_PATH_FLAG):
                base_paths.append(token.removeprefix(BASE_PATH_FLAG))
            elif token.startswith(CONFIG_FLAG):
                base_paths += config_base_paths(_config_text(token.removeprefix(CONFIG_FLAG), container, volumes,
                                                             namespace, get))
        for base in base_paths:
            found = _prefix_of(base, container, volumes, namespace, get)
            if found is not None:
                out.add(found)
    return out


def _config_text(path: str, container: dict[str, Any], volumes: dict[str, Any], namespace: str,
                 get: Getter) -> str:
    held = _mount_of(path, container)
    volume = volumes.get(held[0].get("name")) if held else None
    cm = (volume or {}).get("configMap")
    if held is None or not cm:
        raise UnknownReader(f"the model config {path} is not on a ConfigMap volume")
    rel = str(PurePosixPath(held[0].get("subPath") or "") / held[1])
    key = next((i.get("key") for i in cm.get("items") or [] if i.get("path") == rel), None) if cm.get("items") \
        else rel
    obj = get("ConfigMap", cm.get("name") or "", namespace)
    text = ((obj or {}).get("data") or {}).get(key or "")
    if text is None:
        raise UnknownReader(f"the model config {path} (ConfigMap {cm.get('name')}, key {key}) is gone")
    return str(text)


def _prefix_of(base: str, container: dict[str, Any], volumes: dict[str, Any], namespace: str,
               get: Getter) -> ModelPrefix | None:
    if "://" in base:
        if not base.startswith("oss://"):
            return None  # another file system (gs://, s3://, hdfs://): no object of ours
        bucket, _, rest = base.removeprefix("oss://").partition("/")
        return oss_prefix(bucket, rest)
    if ".." in base.split("/"):
        raise UnknownReader(f"base path {base} has '..' (where it leads depends on the file system)")
    held = _mount_of(base, container)
    if held is None:
        return None  # the image's own file system
    mount, rel = held
    claim = ((volumes.get(mount.get("name")) or {}).get("persistentVolumeClaim") or {}).get("claimName")
    if not claim:
        return None  # a ConfigMap, emptyDir, hostPath...: no OSS object
    pvc = get("PersistentVolumeClaim", claim, namespace)
    if pvc is None:
        return None  # no claim, no pod: the kubelet does not start a pod whose claim does not exist
    pv_name = (pvc.get("spec") or {}).get("volumeName")
    pv = get("PersistentVolume", pv_name, None) if pv_name else None
    if pv is None:
        raise UnknownReader(f"the volume of claim {claim} (base path {base}) cannot be read")
    csi = (pv.get("spec") or {}).get("csi") or {}
    if csi.get("driver") != OSS_CSI_DRIVER:
        if "oss" in str((pv.get("spec") or {}).get("flexVolume") or {}).lower():
            raise UnknownReader(f"PersistentVolume {pv_name} is an OSS flexVolume this reader does not follow")
        return None
    attrs = csi.get("volumeAttributes") or {}
    if not attrs.get("bucket"):
        raise UnknownReader(f"PersistentVolume {pv_name} names no bucket")
    return oss_prefix(attrs["bucket"], attrs.get("path") or "/", mount.get("subPath") or "", rel)


def deployment_model_prefixes(kube: KubeClients, namespace: str, deployment: str) -> set[ModelPrefix]:
    """What the pods of ``deployment`` read (its pod template: also what a restarted or added pod reads)."""
    obj = kube.get("Deployment", deployment, namespace)
    if obj is None:
        return set()
    pod_spec = ((((obj.get("spec") or {}).get("template")) or {}).get("spec")) or {}
    return pod_model_prefixes(pod_spec, namespace, kube.get)


def readers_of(kube: KubeClients, skip: Iterable[tuple[str, str]] = ()) -> dict[tuple[str, str], set[ModelPrefix]]:
    """(namespace, Deployment) -> the prefixes its pods read, for every Deployment of the cluster but ``skip``
    (any serving, this tool's or not, in any namespace: a bucket may be shared). Raises :class:`UnknownReader`
    when one cannot be told."""
    skipped = set(skip)
    out = {}
    for d in kube.list("Deployment").get("items") or []:
        key = (d["metadata"].get("namespace") or "", d["metadata"]["name"])
        if key in skipped:
            continue
        pod_spec = ((((d.get("spec") or {}).get("template")) or {}).get("spec")) or {}
        try:
            out[key] = pod_model_prefixes(pod_spec, key[0], kube.get)
        except UnknownReader as exc:
            raise UnknownReader(f"Deployment {key[0]}/{key[1]}: {exc}") from None
    return out


def unread(candidates: Iterable[ModelPrefix], readers: dict[tuple[str, str], set[ModelPrefix]]
           ) -> tuple[list[ModelPrefix], dict[ModelPrefix, str]]:
    """(the candidates no reader reads from, candidate -> a Deployment that reads from it) (pure)."""
    free: list[ModelPrefix] = []
    held: dict[ModelPrefix, str] = {}
    for c in sorted(set(candidates), key=str):
        who = next((f"{ns}/{name}" for (ns, name), prefixes in sorted(readers.items())
                    if any(c.read_by(p) for p in prefixes)), None)
        if who is None:
            free.append(c)
        else:
            held[c] = who
    return free, held
