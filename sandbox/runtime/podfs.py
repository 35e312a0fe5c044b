"""A container's view of its files: paths resolved through ``volumeMounts`` to ConfigMaps, Secrets and OSS.

The kubelet's volume manager (``sandbox.controllers.csi``) has already resolved every pod volume to a
:class:`~sandbox.controllers.runtime.VolumeSource` (for a PVC bound to an OSS CSI PV: the PV's ``bucket`` and
``path``); here a container path is mapped the way the kernel's mount table would: the longest ``mountPath`` that is
a prefix of the path wins, ``subPath`` selects a sub-directory (or single file) of the volume, and the rest of the
path is relative to it.

- ConfigMap / Secret volumes hold one file per key (``data`` + ``binaryData`` / base64 ``data``), or the ``items``
  (key -> path) when given, as the kubelet's atomic writer lays them out.
- OSS volumes (ossfs): ``<mountPath>/<rel>`` is object ``<path without leading slash>/<subPath>/<rel>`` of the
  bucket; a directory exists when any object lies under it (ossfs shows common prefixes as directories).
- Paths outside every mount are the image's own filesystem, which holds no model files: they do not exist.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from sandbox.controllers.runtime import Mount


@dataclass(frozen=True)
class Location:
    mount: Mount
    rel: str  # path relative to the mounted volume (after subPath), "" = the mount point itself


def _norm(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/")) if path else "/"


class PodFS:
    """Read-only file access for one container (``kube``: the kube store; ``oss``: the OSS service)."""

    def __init__(self, mounts: list[Mount], namespace: str, store: Any, oss: Any) -> None:
        self.mounts = sorted(mounts, key=lambda m: len(_norm(m.mount_path)), reverse=True)
        self.namespace = namespace
        self.store = store
        self.oss = oss

    def locate(self, path: str) -> Location | None:
        p = _norm(path)
        for m in self.mounts:
            mp = _norm(m.mount_path)
            if p == mp or p.startswith(mp.rstrip("/") + "/"):
                rel = p[len(mp):].lstrip("/")
                if m.sub_path:
                    rel = posixpath.join(m.sub_path.strip("/"), rel) if rel else m.sub_path.strip("/")
                return Location(m, rel)
        return None

    # ---- ConfigMap / Secret ----------------------------------------------------------------------------------------
    def _kv_files(self, loc: Location) -> dict[str, bytes] | None:
        v = loc.mount.volume
        if v.kind == "configMap":
            obj = self.store.try_get("configmaps", self.namespace, v.source_name or "")
            if obj is None:
                return {}
            data = {k: str(s).encode() for k, s in (obj.get("data") or {}).items()}
            for k, s in (obj.get("binaryData") or {}).items():
                try:
                    data[k] = base64.b64decode(s)
                except (binascii.Error, ValueError):
                    continue
        elif v.kind == "secret":
            obj = self.store.try_get("secrets", self.namespace, v.source_name or "")
            if obj is None:
                return {}
            data = {k: str(s).encode() for k, s in (obj.get("stringData") or {}).items()}
            for k, s in (obj.get("data") or {}).items():
                try:
                    data[k] = base64.b64decode(s)
                except (binascii.Error, ValueError):
                    continue
        else:
            return None
        if v.items:
            return {str(it.get("path", it.get("key", ""))).strip("/"): data[it["key"]]
                    for it in v.items if it.get("key") in data}
        return data

    # ---- OSS ---------------------------------------------------------------------------------------------------------
    def _oss_key(self, loc: Location) -> tuple[str, str]:
        v = loc.mount.volume
        base = (v.path or "/").strip("/")
        key = posixpath.join(base, loc.rel) if base and loc.rel else (base or loc.rel)
        return v.bucket or "", key

    # ---- the file API ------------------------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        loc = self.locate(path)
        if loc is None:
            raise FileNotFoundError(path)
        files = self._kv_files(loc)
        if files is not None:
            if loc.rel in files:
                return files[loc.rel]
            raise FileNotFoundError(path)
        if loc.mount.volume.kind == "oss" and self.oss is not None:
            bucket, key = self._oss_key(loc)
            try:
                with self.oss.open_object(bucket, key) as fh:
                    return fh.read()
            except KeyError:
                raise FileNotFoundError(path) from None
        raise FileNotFoundError(path)

    def open(self, path: str) -> BinaryIO:
        loc = self.locate(path)
        if loc is not None and loc.mount.volume.kind == "oss" and self.oss is not None:
            bucket, key = self._oss_key(loc)
            try:
                return self.oss.open_object(bucket, key)
            except KeyError:
                raise FileNotFoundError(path) from None
        import io

        return io.BytesIO(self.read_bytes(path))

    def walk(self, path: str) -> dict[str, int] | None:
        """Every file under directory ``path`` as ``{relative path: size}``; None when ``path`` is no directory."""
        loc = self.locate(path)
        if loc is None:
            return None
        files = self._kv_files(loc)
        if files is not None:
            prefix = loc.rel.rstrip("/") + "/" if loc.rel else ""
            out = {k[len(prefix):]: len(b) for k, b in files.items() if k.startswith(prefix)}
            return out if out or not loc.rel else None
        v = loc.mount.volume
        if v.kind != "oss" or self.oss is None:
            return None
        bucket, key = self._oss_key(loc)
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            keys = self.oss.list_keys(bucket, prefix)
        except KeyError:
            return None
        out = {}
        for k in keys:
            rel = k[len(prefix):]
            if not rel or rel.endswith("/"):
                continue  # directory marker objects
            info = self.oss.object_info(bucket, k)
            out[rel] = int(getattr(info, "size", 0) or 0)
        if not keys and prefix:
            return None
        return out

    def exists(self, path: str) -> bool:
        if self.walk(path) is not None:
            return True
        try:
            self.read_bytes(path)
        except (FileNotFoundError, IsADirectoryError):
            return False
        return True

    def children(self, path: str) -> list[str]:
        """Names directly under a directory (files and sub-directories); FileNotFoundError when it is none."""
        files = self.walk(path)
        if files is None:
            raise FileNotFoundError(path)
        return sorted({rel.split("/", 1)[0] for rel in files})
