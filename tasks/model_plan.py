"""What the model upload step will do: its data shapes and the pure functions that plan it.

- **plan**: which files, which object keys. A local model directory ``<base>/<version>/...`` becomes keys
  ``names.model_oss_prefix + <relative path>``; a ``source_uri: oss://bucket/prefix`` becomes the same keys, copied
  from the source objects.
- **decide**: a file is skipped when the object exists with the same size and the same CRC-64/ECMA
  (``x-oss-hash-crc64ecma``, which OSS computes on every write) as the local file (or the source object); a local
  file that the upload manifest (:mod:`tasks.model_manifest`) shows unchanged since it was uploaded, next to an
  object that is unchanged too, is skipped without being read.

Nothing here talks to OSS: listings come in as arguments, so every function can be tested on plain data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.spec import DeploySpec, check_model_layout


# --- data shapes --------------------------------------------------------------------------------------------------
class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlannedFile(_Shape):
    """One object to make: from a local file (``path``) or from a source object (``source_key``)."""

    key: str = Field(description="Destination object key")
    size: int = Field(ge=0, description="Bytes")
    path: Path | None = Field(default=None, description="Local file (local uploads)")
    source_key: str | None = Field(default=None, description="Source object key (copies inside OSS)")
    source_crc64: int | None = Field(default=None, description="Source object's CRC-64 (copies)")


class UploadPlan(_Shape):
    """What the step will make in the destination bucket."""

    bucket: str
    prefix: str
    mode: Literal["upload", "copy"]
    source_bucket: str | None = None
    source_prefix: str | None = None
    versions: list[int]
    files: list[PlannedFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class RemoteObject(_Shape):
    size: int
    crc64: int | None
    etag: str | None = None


class FileResult(_Shape):
    key: str
    size: int
    action: Literal["uploaded", "copied", "skipped"]
    method: Literal["put", "multipart", "copy", "multipart-copy", "none"]
    bytes_sent: int = Field(description="Payload bytes this run transferred for the file")
    crc64: int | None = Field(default=None, description="CRC-64/ECMA of the object")
    seconds: float
    skipped_by: Literal["manifest", "crc64"] | None = Field(
        default=None, description="How a skipped file was found unchanged: the local manifest (stat + the "
        "object's ETag, nothing read) or the file's CRC-64 against the object's")


class UploadReport(_Shape):
    bucket: str
    prefix: str
    mode: Literal["upload", "copy"]
    files_total: int
    files_uploaded: int
    files_skipped: int
    bytes_total: int
    bytes_sent: int
    bytes_skipped: int
    seconds: float
    throughput_mb_s: float = Field(description="bytes_sent / seconds in MB/s (10^6 bytes)")
    files: list[FileResult]

    def summary(self) -> str:
        verb = "copied" if self.mode == "copy" else "uploaded"
        return (
            f"model at oss://{self.bucket}/{self.prefix}: {self.files_total} files, {self.files_uploaded} {verb} "
            f"({format_mb(self.bytes_sent)}), {self.files_skipped} unchanged and skipped "
            f"({format_mb(self.bytes_skipped)}) "
            f"in {self.seconds:.2f}s, {self.throughput_mb_s:.1f} MB/s"
        )


def format_mb(n: int) -> str:
    """Bytes as megabytes (10^6 bytes) for a log line: ``"12.3 MB"``."""
    return f"{n / 1e6:.1f} MB"


# --- pure helpers: keys, plans, decisions -------------------------------------------------------------------------
def object_key(prefix: str, relative: str | PurePosixPath) -> str:
    """``prefix`` (``""`` or ending in ``/``) + the POSIX relative path."""
    rel = str(PurePosixPath(relative))
    if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        raise ValueError(f"{rel!r} is not a relative path inside the model directory")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + rel


def parse_oss_uri(uri: str) -> tuple[str, str]:
    """``oss://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (``""`` for the whole bucket)."""
    if not uri.startswith("oss://"):
        raise ValueError(f"{uri!r} is not an oss://bucket/prefix URI")
    bucket, _, prefix = uri[len("oss://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


def plan_local_upload(base_dir: Path, bucket: str, prefix: str, wanted: list[int] | None = None) -> UploadPlan:
    """Check TF Serving's layout and list every regular file under ``base_dir`` with its object key."""
    base = Path(base_dir)
    versions = check_model_layout(base, wanted)
    files: list[PlannedFile] = []
    for root, dirs, names in os.walk(base):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():
                continue
            rel = path.relative_to(base).as_posix()
            files.append(PlannedFile(key=object_key(prefix, rel), size=path.stat().st_size, path=path))
    return UploadPlan(bucket=bucket, prefix=prefix, mode="upload", versions=versions, files=files)


def check_remote_layout(relative_keys: Iterable[str], where: str, wanted: list[int] | None = None) -> list[int]:
    """:func:`core.spec.check_model_layout` for object keys relative to the model base prefix."""
    by_version: dict[int, set[str]] = {}
    for rel in relative_keys:
        top, _, rest = rel.partition("/")
        if top.isdigit() and rest:
            by_version.setdefault(int(top), set()).add(rest)
    if not by_version:
        raise ValueError(
            f"{where} holds no version directory: TF Serving expects <base>/<version>/... with a numeric version"
        )
    for v, names in sorted(by_version.items()):
        if not names & {"saved_model.pb", "saved_model.pbtxt", "model.json"}:
            raise ValueError(
                f"{where}{v}/ holds neither a SavedModel (saved_model.pb) nor a demo model (model.json)"
            )
    versions = sorted(by_version)
    if wanted and (missing := [v for v in wanted if v not in versions]):
        raise ValueError(f"version policy names versions {missing} that are not in {where} (found {versions})")
    return versions


def plan_oss_copy(
    listing: Iterable[tuple[str, int]],
    source_bucket: str,
    source_prefix: str,
    bucket: str,
    prefix: str,
    wanted: list[int] | None = None,
) -> UploadPlan:
    """Map source objects ``(key, size)`` under ``source_prefix`` to destination keys under ``prefix``."""
    items = [(k, s) for k, s in listing if k.startswith(source_prefix) and not k.endswith("/")]
    rels = [k[len(source_prefix):] for k, _ in items]
    versions = check_remote_layout(rels, f"oss://{source_bucket}/{source_prefix}", wanted)
    files = [
        PlannedFile(key=object_key(prefix, rel), size=size, source_key=key)
        for (key, size), rel in zip(items, rels, strict=True)
    ]
    return UploadPlan(bucket=bucket, prefix=prefix, mode="copy", source_bucket=source_bucket,
                      source_prefix=source_prefix, versions=versions, files=files)


def is_unchanged(size: int, crc64: Callable[[], int | None], remote: RemoteObject | None) -> bool:
    """True when the object exists with this size and this CRC-64 (computed lazily: only when sizes match)."""
    if remote is None or remote.size != size or remote.crc64 is None:
        return False
    return crc64() == remote.crc64


def build_plan(spec: DeploySpec, list_source: Callable[[str], Iterable[tuple[str, int]]] | None = None) -> UploadPlan:
    """The plan for ``spec``: from ``model.local_dir``, or from ``model.source_uri`` (listed by ``list_source``)."""
    m, names = spec.model, spec.names
    if m.local_dir is not None and m.source_uri is not None:
        raise ValueError("model: set local_dir or source_uri, not both")
    if m.local_dir is not None:
        return plan_local_upload(m.local_dir, spec.storage.bucket, names.model_oss_prefix, m.versions_wanted())
    if m.source_uri is not None:
        src_bucket, src_prefix = parse_oss_uri(m.source_uri)
        if list_source is None:
            raise ValueError("copying from model.source_uri needs a way to list the source bucket")
        return plan_oss_copy(list_source(src_prefix), src_bucket, src_prefix, spec.storage.bucket,
                             names.model_oss_prefix, m.versions_wanted())
    raise ValueError("model: set local_dir (a local model directory) or source_uri (oss://bucket/prefix)")
