"""OSS state: buckets, objects, multipart uploads and parts in the sandbox's SQLite store, bytes in files.

Layout under ``<state_dir>/oss``: ``objects/<xx>/<uuid>`` holds the bytes of one object version, ``parts/<upload_id>/``
the parts of one multipart upload, ``tmp/`` bodies being received. A write goes to ``tmp/`` first, is renamed into
place, and only then does one SQLite transaction point the object's row at the new file; the old file is removed
after the commit. So an interrupted PUT leaves the previous object untouched (its garbage in ``tmp/`` is swept at the
next start), and a reader holding the old file open keeps reading a consistent version.

Every method is synchronous and thread-safe (the store serializes statements); heavy file work (completing a
multipart upload, copying) is meant to be called from a worker thread. There is no per-chunk SQL: a body costs one
row write when it is committed.

Times are real Unix time (``time.time()``): OSS timestamps are wall-clock facts seen by clients next to their own
clock (``Last-Modified``, request skew checks), so the simulated clock, which may run faster, is not used here.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
import uuid
from pathlib import Path

from ..store import Store
from .crc import combine
from .errors import OssError
from .models import BucketInfo, ObjectInfo, PartInfo, UploadInfo

MIN_PART_SIZE = 100 * 1024  # OSS: every part but the last must be >= 100 KB (EntityTooSmall)
MAX_PART_NUMBER = 10000
MAX_PART_SIZE = 5 * 1024**3
MAX_OBJECT_SIZE = 5 * 1024**3  # a simple PUT; multipart objects may be larger (48.8 TB on OSS)
MAX_KEY_BYTES = 1023

_DDL = (
    """CREATE TABLE IF NOT EXISTS oss_buckets (
        name TEXT PRIMARY KEY, created REAL NOT NULL, acl TEXT NOT NULL, storage_class TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS oss_objects (
        bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, crc64 TEXT NOT NULL,
        content_type TEXT NOT NULL, last_modified REAL NOT NULL, object_type TEXT NOT NULL, meta TEXT NOT NULL,
        file TEXT NOT NULL, PRIMARY KEY (bucket, key)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS oss_uploads (
        upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, initiated REAL NOT NULL,
        content_type TEXT NOT NULL, meta TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS oss_uploads_by_key ON oss_uploads (bucket, key, upload_id)",
    """CREATE TABLE IF NOT EXISTS oss_parts (
        upload_id TEXT NOT NULL, part_number INTEGER NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
        crc64 TEXT NOT NULL, last_modified REAL NOT NULL, file TEXT NOT NULL,
        PRIMARY KEY (upload_id, part_number)) WITHOUT ROWID""",
)


def valid_bucket_name(name: str) -> bool:
    """OSS bucket naming: 3-63 chars of lower-case letters, digits and '-', not starting or ending with '-'."""
    return (
        3 <= len(name) <= 63
        and name.isascii()  # str.isdigit is true for "²" and "٣": OSS names are ASCII
        and all(c.islower() or c.isdigit() or c == "-" for c in name)
        and name[0] != "-"
        and name[-1] != "-"
    )


def check_key(key: str) -> None:
    """OSS object naming: 1..1023 UTF-8 bytes, not starting with '/' or '\\'."""
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES or key[0] in "/\\":
        raise OssError("InvalidObjectName", "The specified object is not valid.")


def _next_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None when there is none)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


class OssState:
    def __init__(self, store: Store, root: Path, region: str) -> None:
        self.store = store
        self.root = Path(root)
        self.region = region
        self.objects_dir = self.root / "objects"
        self.parts_dir = self.root / "parts"
        self.tmp_dir = self.root / "tmp"
        for d in (self.objects_dir, self.parts_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        store.ensure(*_DDL)
        self._sweep()

    # ---- files ---------------------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Drop bodies that were being received when the sandbox stopped, and files no row points at."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        referenced = {r["file"] for r in self.store.query("SELECT file FROM oss_objects")}
        referenced |= {r["file"] for r in self.store.query("SELECT file FROM oss_parts")}
        for base in (self.objects_dir, self.parts_dir):
            for p in base.rglob("*"):
                if p.is_file() and str(p.relative_to(self.root)) not in referenced:
                    p.unlink(missing_ok=True)

    def tmp_path(self) -> Path:
        return self.tmp_dir / uuid.uuid4().hex

    def path_of(self, rel: str) -> Path:
        return self.root / rel

    def _place(self, tmp: Path, sub: Path) -> str:
        """Rename a received file into ``sub`` under a fresh name; returns its path relative to the OSS root."""
        sub.mkdir(parents=True, exist_ok=True)
        final = sub / uuid.uuid4().hex
        os.replace(tmp, final)
        return str(final.relative_to(self.root))

    def _unlink(self, rel: str | None) -> None:
        if rel:
            (self.root / rel).unlink(missing_ok=True)

    # ---- buckets -------------------------------------------------------------------------------------------------
    def _bucket(self, row) -> BucketInfo:
        return BucketInfo(
            name=row["name"],
            created=row["created"],
            acl=row["acl"],
            storage_class=row["storage_class"],
            location=f"oss-{self.region}",
        )

    def get_bucket(self, name: str) -> BucketInfo | None:
        row = self.store.one("SELECT * FROM oss_buckets WHERE name = ?", (name,))
        return None if row is None else self._bucket(row)

    def require_bucket(self, name: str) -> BucketInfo:
        b = self.get_bucket(name)
        if b is None:
            raise OssError("NoSuchBucket", BucketName=name)
        return b

    def create_bucket(self, name: str, acl: str = "private", storage_class: str = "Standard") -> BucketInfo:
        if not valid_bucket_name(name):
            raise OssError("InvalidBucketName", BucketName=name)
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM oss_buckets WHERE name = ?", (name,)).fetchone():
                raise OssError("BucketAlreadyExists", BucketName=name)
            db.execute(
                "INSERT INTO oss_buckets(name, created, acl, storage_class) VALUES(?, ?, ?, ?)",
                (name, time.time(), acl, storage_class),
            )
        return self.require_bucket(name)

    def set_bucket_acl(self, name: str, acl: str) -> None:
        self.require_bucket(name)
        self.store.execute("UPDATE oss_buckets SET acl = ? WHERE name = ?", (acl, name))

    def delete_bucket(self, name: str) -> None:
        with self.store.tx() as db:
            if not db.execute("SELECT 1 FROM oss_buckets WHERE name = ?", (name,)).fetchone():
                raise OssError("NoSuchBucket", BucketName=name)
            if (
                db.execute("SELECT 1 FROM oss_objects WHERE bucket = ? LIMIT 1", (name,)).fetchone()
                or db.execute("SELECT 1 FROM oss_uploads WHERE bucket = ? LIMIT 1", (name,)).fetchone()
            ):
                raise OssError("BucketNotEmpty", BucketName=name)
            db.execute("DELETE FROM oss_buckets WHERE name = ?", (name,))

    def list_buckets(
        self, prefix: str = "", marker: str = "", max_keys: int = 100
    ) -> tuple[list[BucketInfo], bool]:
        rows = self.store.query(
            "SELECT * FROM oss_buckets WHERE name > ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT ?",
            (marker, len(prefix), prefix, max_keys + 1),
        )
        return [self._bucket(r) for r in rows[:max_keys]], len(rows) > max_keys

    # ---- objects -------------------------------------------------------------------------------------------------
    @staticmethod
    def _object(row) -> ObjectInfo:
        return ObjectInfo(
            bucket=row["bucket"],
            key=row["key"],
            size=row["size"],
            etag=row["etag"],
            crc64=int(row["crc64"]),
            content_type=row["content_type"],
            last_modified=row["last_modified"],
            object_type=row["object_type"],
            meta=json.loads(row["meta"]),
        )

    def get_object(self, bucket: str, key: str) -> tuple[ObjectInfo, Path] | None:
        row = self.store.one("SELECT * FROM oss_objects WHERE bucket = ? AND key = ?", (bucket, key))
        if row is None:
            return None
        return self._object(row), self.root / row["file"]

    def require_object(self, bucket: str, key: str) -> tuple[ObjectInfo, Path]:
        found = self.get_object(bucket, key)
        if found is None:
            self.require_bucket(bucket)
            raise OssError("NoSuchKey", Key=key)
        return found

    def commit_object(
        self,
        bucket: str,
        key: str,
        tmp: Path,
        *,
        size: int,
        etag: str,
        crc64: int,
        content_type: str,
        meta: dict[str, str],
        object_type: str = "Normal",
    ) -> ObjectInfo:
        rel = self._place(tmp, self.objects_dir / secrets.token_hex(1))
        now = time.time()
        try:
            with self.store.tx() as db:
                if not db.execute("SELECT 1 FROM oss_buckets WHERE name = ?", (bucket,)).fetchone():
                    raise OssError("NoSuchBucket", BucketName=bucket)
                old = db.execute(
                    "SELECT file FROM oss_objects WHERE bucket = ? AND key = ?", (bucket, key)
                ).fetchone()
                db.execute(
                    """INSERT OR REPLACE INTO oss_objects(bucket, key, size, etag, crc64, content_type, last_modified,
                       object_type, meta, file) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        bucket,
                        key,
                        size,
                        etag,
                        str(crc64),
                        content_type,
                        now,
                        object_type,
                        json.dumps(meta),
                        rel,
                    ),
                )
        except BaseException:
            self._unlink(rel)
            raise
        if old is not None:
            self._unlink(old["file"])
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=size,
            etag=etag,
            crc64=crc64,
            content_type=content_type,
            last_modified=now,
            object_type=object_type,
            meta=meta,
        )

    def delete_object(self, bucket: str, key: str) -> bool:
        with self.store.tx() as db:
            old = db.execute(
                "SELECT file FROM oss_objects WHERE bucket = ? AND key = ?", (bucket, key)
            ).fetchone()
            if old is not None:
                db.execute("DELETE FROM oss_objects WHERE bucket = ? AND key = ?", (bucket, key))
        if old is not None:
            self._unlink(old["file"])
        return old is not None

    def list_objects(
        self, bucket: str, prefix: str = "", delimiter: str = "", after: str = "", max_keys: int = 100
    ) -> tuple[list[ObjectInfo], list[str], bool, str]:
        """Keys and common prefixes in UTF-8 byte order (SQLite's BINARY collation) strictly after ``after``.

        Returns ``(contents, common_prefixes, is_truncated, last_returned)``; ``max_keys`` counts both kinds, as
        OSS does, and ``last_returned`` is the NextMarker to continue from.
        """
        contents: list[ObjectInfo] = []
        prefixes: list[str] = []
        cursor = after
        inclusive = False
        if prefix and prefix > cursor:
            cursor, inclusive = prefix, True
        elif delimiter and after.startswith(prefix):
            # A marker inside a rolled-up prefix (e.g. NextMarker "dir/"): that prefix was already returned.
            idx = after.find(delimiter, len(prefix))
            if idx >= 0:
                nxt = _next_prefix(after[: idx + len(delimiter)])
                if nxt is None:
                    return contents, prefixes, False, ""
                cursor, inclusive = nxt, True
        upper = _next_prefix(prefix) if prefix else None
        last = ""
        while True:
            sql = "SELECT * FROM oss_objects WHERE bucket = ? AND key " + (">=" if inclusive else ">") + " ?"
            args: list = [bucket, cursor]
            if upper is not None:
                sql += " AND key < ?"
                args.append(upper)
            sql += " ORDER BY key LIMIT ?"
            args.append(max(64, max_keys + 1))
            rows = self.store.query(sql, tuple(args))
            if not rows:
                return contents, prefixes, False, last
            restart = False
            for row in rows:
                key = row["key"]
                if delimiter:
                    idx = key.find(delimiter, len(prefix))
                    if idx >= 0:
                        common = key[: idx + len(delimiter)]
                        if len(contents) + len(prefixes) >= max_keys:
                            return contents, prefixes, True, last
                        prefixes.append(common)
                        last = common
                        nxt = _next_prefix(common)
                        if nxt is None:
                            return contents, prefixes, False, last
                        cursor, inclusive, restart = nxt, True, True
                        break
                if len(contents) + len(prefixes) >= max_keys:
                    return contents, prefixes, True, last
                contents.append(self._object(row))
                last = key
                cursor, inclusive = key, False
            if not restart and len(rows) < max(64, max_keys + 1):
                return contents, prefixes, False, last

    def has_objects(self, bucket: str, prefix: str = "") -> bool:
        contents, prefixes, _, _ = self.list_objects(bucket, prefix=prefix, max_keys=1)
        return bool(contents or prefixes)

    def copy_object(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        replace_meta: bool,
        content_type: str | None,
        meta: dict[str, str],
    ) -> ObjectInfo:
        """CopyObject (heavy: call from a worker thread). The copy keeps ETag and CRC of the source."""
        info, path = self.require_object(src_bucket, src_key)
        self.require_bucket(dst_bucket)
        tmp = self.tmp_path()
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                _copy_range(src, dst, info.size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.commit_object(
            dst_bucket,
            dst_key,
            tmp,
            size=info.size,
            etag=info.etag,
            crc64=info.crc64,
            content_type=(content_type or info.content_type) if replace_meta else info.content_type,
            meta=meta if replace_meta else info.meta,
            object_type=info.object_type,
        )

    # ---- multipart -----------------------------------------------------------------------------------------------
    @staticmethod
    def _upload(row) -> UploadInfo:
        return UploadInfo(
            upload_id=row["upload_id"],
            bucket=row["bucket"],
            key=row["key"],
            initiated=row["initiated"],
            content_type=row["content_type"],
            meta=json.loads(row["meta"]),
        )

    def create_upload(self, bucket: str, key: str, content_type: str, meta: dict[str, str]) -> UploadInfo:
        self.require_bucket(bucket)
        upload_id = secrets.token_hex(16).upper()
        now = time.time()
        self.store.execute(
            "INSERT INTO oss_uploads(upload_id, bucket, key, initiated, content_type, meta) VALUES(?, ?, ?, ?, ?, ?)",
            (upload_id, bucket, key, now, content_type, json.dumps(meta)),
        )
        return UploadInfo(
            upload_id=upload_id, bucket=bucket, key=key, initiated=now, content_type=content_type, meta=meta
        )

    def require_upload(self, bucket: str, key: str, upload_id: str) -> UploadInfo:
        row = self.store.one(
            "SELECT * FROM oss_uploads WHERE upload_id = ? AND bucket = ? AND key = ?",
            (upload_id, bucket, key),
        )
        if row is None:
            self.require_bucket(bucket)
            raise OssError("NoSuchUpload", UploadId=upload_id)
        return self._upload(row)

    def commit_part(
        self, upload: UploadInfo, part_number: int, tmp: Path, *, size: int, etag: str, crc64: int
    ) -> PartInfo:
        rel = self._place(tmp, self.parts_dir / upload.upload_id)
        now = time.time()
        try:
            with self.store.tx() as db:
                if not db.execute(
                    "SELECT 1 FROM oss_uploads WHERE upload_id = ?", (upload.upload_id,)
                ).fetchone():
                    raise OssError("NoSuchUpload", UploadId=upload.upload_id)
                old = db.execute(
                    "SELECT file FROM oss_parts WHERE upload_id = ? AND part_number = ?",
                    (upload.upload_id, part_number),
                ).fetchone()
                db.execute(
                    """INSERT OR REPLACE INTO oss_parts(upload_id, part_number, size, etag, crc64, last_modified, file)
                       VALUES(?, ?, ?, ?, ?, ?, ?)""",
                    (upload.upload_id, part_number, size, etag, str(crc64), now, rel),
                )
        except BaseException:
            self._unlink(rel)
            raise
        if old is not None:
            self._unlink(old["file"])
        return PartInfo(part_number=part_number, size=size, etag=etag, crc64=crc64, last_modified=now)

    def list_parts(
        self, upload_id: str, marker: int = 0, max_parts: int = 1000
    ) -> tuple[list[PartInfo], bool]:
        rows = self.store.query(
            "SELECT * FROM oss_parts WHERE upload_id = ? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, marker, max_parts + 1),
        )
        parts = [
            PartInfo(
                part_number=r["part_number"],
                size=r["size"],
                etag=r["etag"],
                crc64=int(r["crc64"]),
                last_modified=r["last_modified"],
            )
            for r in rows[:max_parts]
        ]
        return parts, len(rows) > max_parts

    def list_uploads(
        self,
        bucket: str,
        prefix: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> tuple[list[UploadInfo], bool]:
        if upload_id_marker:
            after = "(key > ? OR (key = ? AND upload_id > ?))"
            args: tuple = (key_marker, key_marker, upload_id_marker)
        else:
            after, args = "key > ?", (key_marker,)
        rows = self.store.query(
            f"SELECT * FROM oss_uploads WHERE bucket = ? AND substr(key, 1, ?) = ? AND {after} "
            "ORDER BY key, upload_id LIMIT ?",
            (bucket, len(prefix), prefix, *args, max_uploads + 1),
        )
        return [self._upload(r) for r in rows[:max_uploads]], len(rows) > max_uploads

    def _drop_upload(self, upload_id: str) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM oss_parts WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM oss_uploads WHERE upload_id = ?", (upload_id,))
        shutil.rmtree(self.parts_dir / upload_id, ignore_errors=True)

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.require_upload(bucket, key, upload_id)
        self._drop_upload(upload_id)

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, requested: list[tuple[int, str]] | None
    ) -> ObjectInfo:
        """CompleteMultipartUpload (heavy: call from a worker thread).

        ``requested`` is the body's ``[(PartNumber, ETag)]`` in document order, or None for ``x-oss-complete-all``.
        The object's ETag is OSS's multipart form: upper-case hex MD5 of the concatenated binary part MD5s, ``-N``;
        its CRC-64 is the combination of the parts' CRCs.
        """
        upload = self.require_upload(bucket, key, upload_id)
        stored = {
            r["part_number"]: r
            for r in self.store.query("SELECT * FROM oss_parts WHERE upload_id = ?", (upload_id,))
        }
        if requested is None:
            chosen = [stored[n] for n in sorted(stored)]
            if not chosen:
                raise OssError("InvalidPart", "No part has been uploaded.", UploadId=upload_id)
        else:
            if not requested:
                raise OssError("MalformedXML")
            numbers = [n for n, _ in requested]
            if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
                raise OssError("InvalidPartOrder", UploadId=upload_id)
            chosen = []
            for number, etag in requested:
                row = stored.get(number)
                if row is None or etag.strip().strip('"').upper() != row["etag"]:
                    raise OssError("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
                chosen.append(row)
        for row in chosen[:-1]:
            if row["size"] < MIN_PART_SIZE:
                raise OssError(
                    "EntityTooSmall",
                    PartNumber=str(row["part_number"]),
                    MinSizeAllowed=str(MIN_PART_SIZE),
                    ProposedSize=str(row["size"]),
                )
        md5s = b"".join(bytes.fromhex(r["etag"]) for r in chosen)
        etag = f"{hashlib.md5(md5s).hexdigest().upper()}-{len(chosen)}"
        crc = 0
        size = 0
        tmp = self.tmp_path()
        try:
            with open(tmp, "wb") as out:
                for row in chosen:
                    with open(self.root / row["file"], "rb") as src:
                        _copy_range(src, out, row["size"])
                    crc = combine(crc, int(row["crc64"]), row["size"])
                    size += row["size"]
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        info = self.commit_object(
            bucket,
            key,
            tmp,
            size=size,
            etag=etag,
            crc64=crc,
            content_type=upload.content_type,
            meta=upload.meta,
            object_type="Multipart",
        )
        self._drop_upload(upload_id)
        return info


def _copy_range(src, dst, size: int) -> None:
    """Copy ``size`` bytes between files inside the kernel where possible (copy_file_range), else in 8 MiB reads."""
    remaining = size
    try:
        while remaining > 0:
            n = os.copy_file_range(src.fileno(), dst.fileno(), min(remaining, 1 << 30))
            if n == 0:
                break
            remaining -= n
    except (AttributeError, OSError):
        pass
    while remaining > 0:
        chunk = src.read(min(remaining, 8 << 20))
        if not chunk:
            break
        dst.write(chunk)
        remaining -= len(chunk)
    if remaining:
        raise OssError("InternalError", "object data is shorter than recorded")
