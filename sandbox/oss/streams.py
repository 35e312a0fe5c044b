"""Object bodies in and out, streamed: memory stays flat whatever the object size.

Upload: the request body (``request.stream()``) is gathered into batches of a few MiB; each batch is hashed (MD5 for
the ETag/Content-MD5, CRC-64/ECMA for ``x-oss-hash-crc64ecma``) and written to a temporary file in a worker thread,
while the event loop keeps receiving the next batch. At most two batches per request are in memory.

Download: the object file is read in 1 MiB blocks by a worker thread and handed to the response as they come.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO

from starlette.requests import ClientDisconnect, Request

from .crc import crc64
from .errors import OssError

BATCH = 4 << 20
READ_BLOCK = 1 << 20


class _Sink:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self.md5 = hashlib.md5()
        self.crc = 0
        self.size = 0

    def feed(self, chunks: list[bytes]) -> None:
        for data in chunks:  # chunk by chunk: no joined copy of the batch
            self.md5.update(data)
            self.crc = crc64(data, self.crc)
            view = memoryview(data)
            while view:
                n = self.f.write(view)
                view = view[n:]
            self.size += len(data)

    def close(self) -> None:
        self.f.close()


class Received:
    def __init__(self, size: int, md5: bytes, crc: int) -> None:
        self.size = size
        self.md5 = md5
        self.crc = crc

    @property
    def etag(self) -> str:
        return self.md5.hex().upper()

    @property
    def content_md5(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")


def expected_md5(header: str) -> bytes | None:
    """The decoded ``Content-MD5`` header, or None when absent; malformed -> InvalidDigest (EC 0017-00000502)."""
    if not header:
        return None
    try:
        digest = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OssError("InvalidDigest", EC="0017-00000502") from exc
    if len(digest) != 16:
        raise OssError("InvalidDigest", EC="0017-00000502")
    return digest


async def receive_to_file(
    request: Request, path: Path, executor: Executor, *, max_size: int, md5: bytes | None = None
) -> Received:
    """Stream the request body into ``path``; verify ``Content-MD5`` when given (mismatch: InvalidDigest)."""
    loop = asyncio.get_running_loop()
    sink = _Sink(path)
    pending: asyncio.Future | None = None
    batch: list[bytes] = []
    batch_len = 0
    total = 0
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > max_size:
                raise OssError("EntityTooLarge", MaxSizeAllowed=str(max_size))
            batch.append(chunk)
            batch_len += len(chunk)
            if batch_len >= BATCH:
                full, batch, batch_len = batch, [], 0
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(executor, sink.feed, full)
        if pending is not None:
            await pending
            pending = None
        if batch:
            await loop.run_in_executor(executor, sink.feed, batch)
    except BaseException as exc:
        if pending is not None:
            await asyncio.gather(pending, return_exceptions=True)
        sink.close()
        path.unlink(missing_ok=True)
        if isinstance(exc, ClientDisconnect):
            raise OssError(
                "InvalidRequest", "The client closed the connection before the body was sent."
            ) from exc
        raise
    sink.close()
    got = Received(sink.size, sink.md5.digest(), sink.crc)
    if md5 is not None and md5 != got.md5:
        path.unlink(missing_ok=True)
        raise OssError(
            "InvalidDigest",
            "The Content-MD5 you specified did not match what we received.",
            EC="0017-00000503",
        )
    return got


async def iter_file(f: BinaryIO, start: int, length: int, executor: Executor) -> AsyncIterator[bytes]:
    """Yield ``length`` bytes of ``f`` from ``start``; closes the file at the end (or when the client goes away)."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(executor, f.seek, start)
        remaining = length
        while remaining > 0:
            block = await loop.run_in_executor(executor, f.read, min(READ_BLOCK, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block
    finally:
        f.close()


def copy_span(src: Path, start: int, length: int, dst: Path) -> Received:
    """Copy ``length`` bytes of ``src`` from ``start`` into the new file ``dst``, hashing them (MD5, CRC-64) as they
    pass; server-side copies (UploadPartCopy) get the same ``Received`` as a request body. Blocking: call it from a
    worker thread. ``FileNotFoundError`` (the source replaced meanwhile) is left to the caller, ``dst`` removed."""
    sink = _Sink(dst)
    try:
        with open(src, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                block = f.read(min(BATCH, remaining))
                if not block:
                    raise OssError("InternalError", "object data is shorter than recorded")
                sink.feed([block])
                remaining -= len(block)
    except BaseException:
        sink.close()
        dst.unlink(missing_ok=True)
        raise
    sink.close()
    return Received(sink.size, sink.md5.digest(), sink.crc)
