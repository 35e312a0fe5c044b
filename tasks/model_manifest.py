"""What a previous upload left in the bucket, remembered locally, so that an unchanged model costs O(files), not O(bytes).

For every uploaded (or verified) file the manifest keeps the local file's identity when it was read (``size`` and
``mtime_ns`` from ``stat``) and the object it became (``crc64``: ``x-oss-hash-crc64ecma``, and ``etag``). A re-run
skips a file without reading it when

- the file's ``stat`` still gives the recorded size and modification time (a rewrite changes ``st_mtime_ns``), and
- the object still has the recorded size and ETag (any write to the key gives it a new object, whose ETag differs
  unless the bytes are the same: OSS's ETag is the MD5 of a simple upload and a digest of the parts' MD5s for a
  multipart one; OSS API reference, "Common HTTP headers", ETag). The size and ETag come from one ListObjectsV2 of
  the model prefix (up to 1,000 keys a request) instead of a HEAD per file.

Anything else (no entry, another size or mtime, another or missing object) falls back to the full check: HEAD and
the file's CRC-64, and a verified file is recorded again. The manifest is a JSON file per destination under the
checkpoint directory, keyed by bucket and prefix (``manifests/<sha256(bucket/prefix)>.json``, mode 0600); it holds
paths, sizes, times and checksums, never a credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

FORMAT = "elastic-inference-upload-manifest/v1"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int
    mtime_ns: int
    crc64: int
    etag: str


class ListedObject(BaseModel):
    """An object as ListObjectsV2 shows it."""

    model_config = ConfigDict(frozen=True)

    size: int
    etag: str


def normalize_etag(etag: str | None) -> str:
    """ETags as OSS sends them are quoted upper-case hex; compare them without quotes, in one case."""
    return (etag or "").strip().strip('"').upper()


def unchanged_by_manifest(entry: ManifestEntry | None, path: Path, size: int, mtime_ns: int,
                          listed: ListedObject | None) -> bool:
    """True when the file and the object are both as recorded: the file needs neither a read nor a transfer."""
    return (entry is not None and listed is not None and entry.path == str(path) and entry.size == size
            and entry.mtime_ns == mtime_ns and listed.size == size
            and normalize_etag(listed.etag) == normalize_etag(entry.etag))


def manifest_path(state_dir: Path, bucket: str, prefix: str) -> Path:
    digest = hashlib.sha256(f"{bucket}/{prefix}".encode()).hexdigest()[:32]
    return Path(state_dir).expanduser() / "manifests" / f"{digest}.json"


class UploadManifest:
    """The manifest of one destination (bucket + prefix); thread-safe; :meth:`save` writes it atomically."""

    def __init__(self, path: Path, bucket: str, prefix: str) -> None:
        self.path = path
        self.bucket = bucket
        self.prefix = prefix
        self.entries: dict[str, ManifestEntry] = {}
        self._lock = threading.Lock()
        self._dirty = False

    @classmethod
    def load(cls, state_dir: Path, bucket: str, prefix: str) -> UploadManifest:
        """The stored manifest, or an empty one (a missing, unreadable or foreign file only costs full checks)."""
        m = cls(manifest_path(state_dir, bucket, prefix), bucket, prefix)
        try:
            doc = json.loads(m.path.read_text())
        except (OSError, ValueError):
            return m
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("bucket") != bucket \
                or doc.get("prefix") != prefix or not isinstance(doc.get("objects"), dict):
            return m
        for key, value in doc["objects"].items():
            try:
                m.entries[key] = ManifestEntry.model_validate(value)
            except ValidationError:
                continue
        return m

    def get(self, key: str) -> ManifestEntry | None:
        with self._lock:
            return self.entries.get(key)

    def record(self, key: str, entry: ManifestEntry) -> None:
        with self._lock:
            if self.entries.get(key) != entry:
                self.entries[key] = entry
                self._dirty = True

    def forget(self, key: str) -> None:
        with self._lock:
            if self.entries.pop(key, None) is not None:
                self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            doc = {"format": FORMAT, "bucket": self.bucket, "prefix": self.prefix,
                   "objects": {k: e.model_dump() for k, e in sorted(self.entries.items())}}
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
