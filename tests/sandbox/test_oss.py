"""The sandbox's OSS endpoint, exercised with the real oss2 client over loopback sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
import uuid
from email.utils import formatdate
from pathlib import Path

import crcmod
import oss2
import pytest
import requests
from oss2.credentials import StaticCredentialsProvider
from oss2.models import PartInfo
from polling import wait_for

_CRC = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
REQUEST_ID = re.compile(r"^[0-9A-F]{24}$")


def file_crc64(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            crc = _CRC(block, crc)
    return crc


@pytest.fixture(scope="module")
def info(sandbox) -> dict:
    return sandbox.info


@pytest.fixture(scope="module")
def auth(info) -> oss2.Auth:
    return oss2.Auth(info["access_key_id"], info["access_key_secret"])


def _new_bucket(auth, info, acl: str | None = None) -> oss2.Bucket:
    bucket = oss2.Bucket(auth, info["oss_endpoint"], f"t-{uuid.uuid4().hex[:12]}")
    bucket.create_bucket(acl) if acl else bucket.create_bucket()
    return bucket


@pytest.fixture
def bucket(auth, info) -> oss2.Bucket:
    return _new_bucket(auth, info)


def _raw(info, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, info["oss_endpoint"] + path, timeout=30, **kw)


# ---- buckets -------------------------------------------------------------------------------------------------------
def test_bucket_lifecycle(auth, info):
    bucket = _new_bucket(auth, info)
    names = [b.name for b in oss2.BucketIterator(oss2.Service(auth, info["oss_endpoint"]))]
    assert bucket.bucket_name in names
    bi = bucket.get_bucket_info()
    assert bi.name == bucket.bucket_name and bi.acl.grant == "private"
    assert bucket.get_bucket_location().location == f"oss-{info['region']}"
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.create_bucket()
    assert (exc.value.status, exc.value.code) == (409, "BucketAlreadyExists")

    bucket.put_object("k", b"x")
    with pytest.raises(oss2.exceptions.BucketNotEmpty):
        bucket.delete_bucket()
    bucket.delete_object("k")
    bucket.delete_bucket()
    with pytest.raises(oss2.exceptions.NoSuchBucket) as exc:
        bucket.get_object("k")
    assert REQUEST_ID.match(exc.value.request_id)


def test_invalid_bucket_name(auth, info):
    svc = oss2.Service(auth, info["oss_endpoint"])
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        svc._do("PUT", "Bad_Name", "")  # oss2 refuses such names client-side; send it anyway
    assert (exc.value.status, exc.value.code) == (400, "InvalidBucketName")


# ---- objects -------------------------------------------------------------------------------------------------------
def test_put_get_head_delete(bucket):
    data = os.urandom(300_000)
    put = bucket.put_object("dir/obj.bin", data, headers={"x-oss-meta-owner": "ml-team"})
    md5 = hashlib.md5(data).hexdigest().upper()
    assert put.etag == md5
    assert put.crc == _CRC(data)
    assert REQUEST_ID.match(put.request_id)
    assert put.headers["server"] == "AliyunOSS" and "date" in put.headers

    got = bucket.get_object("dir/obj.bin")
    assert got.read() == data
    assert got.server_crc == _CRC(data) and got.client_crc == got.server_crc
    assert got.object_type == "Normal"

    head = bucket.head_object("dir/obj.bin")
    assert head.content_length == len(data) and head.etag == md5
    assert head.headers["x-oss-meta-owner"] == "ml-team"
    assert head.headers["x-oss-hash-crc64ecma"] == str(_CRC(data))
    meta = bucket.get_object_meta("dir/obj.bin")
    assert meta.content_length == len(data) and meta.etag == md5

    assert bucket.object_exists("dir/obj.bin")
    bucket.delete_object("dir/obj.bin")
    assert not bucket.object_exists("dir/obj.bin")
    bucket.delete_object("dir/obj.bin")  # deleting a missing key is not an error on OSS

    with pytest.raises(oss2.exceptions.NoSuchKey) as exc:
        bucket.get_object("dir/obj.bin")
    assert exc.value.code == "NoSuchKey" and REQUEST_ID.match(exc.value.request_id)
    with pytest.raises(oss2.exceptions.NotFound) as exc:  # HEAD: the error comes in x-oss-err
        bucket.head_object("dir/obj.bin")
    assert exc.value.code == "NoSuchKey"


def test_get_object_to_file_checks_crc(bucket, tmp_path):
    data = os.urandom(1 << 20) + b"\0" * (1 << 20)
    bucket.put_object("blob", data)
    bucket.get_object_to_file("blob", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data


def test_range_get(bucket):
    data = bytes(range(256)) * 4  # 1000+ bytes
    data = data[:1000]
    bucket.put_object("r", data)
    part = bucket.get_object("r", byte_range=(10, 19))
    assert part.status == 206 and part.read() == data[10:20]
    assert part.headers["content-range"] == "bytes 10-19/1000"
    assert bucket.get_object("r", byte_range=(990, None)).read() == data[990:]
    assert bucket.get_object("r", byte_range=(None, 5)).read() == data[-5:]
    # out of range without x-oss-range-behavior: OSS ignores the Range and sends the whole object
    whole = bucket.get_object("r", byte_range=(500, 2000))
    assert whole.status == 200 and whole.read() == data
    whole = bucket.get_object("r", byte_range=(1000, 2000))
    assert whole.status == 200 and whole.read() == data
    # with the standard behaviour: clamped end, 416 InvalidRange for a start past the end
    std = {"x-oss-range-behavior": "standard"}
    clamped = bucket.get_object("r", byte_range=(500, 2000), headers=std)
    assert clamped.status == 206 and clamped.read() == data[500:]
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.get_object("r", byte_range=(1000, 2000), headers=std)
    assert (exc.value.status, exc.value.code) == (416, "InvalidRange")


def test_conditional_get(bucket):
    put = bucket.put_object("c", b"abc")
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object("c", headers={"If-None-Match": f'"{put.etag}"'})
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object("c", headers={"If-Match": '"0000"'})


KEYS = [
    "a.txt",
    "dir/one two.txt",
    "dir/plus+sign.txt",
    "dir/percent%41.txt",
    "dir/sub/deep.txt",
    "dir/sub2/x&y<z>.txt",
    "dir/日本語.txt",
    "dir/émoji-😀.bin",
    "zzz",
]


@pytest.fixture(scope="module")
def listing_bucket(auth, info) -> oss2.Bucket:
    b = _new_bucket(auth, info)
    for k in KEYS:
        b.put_object(k, k.encode())
    return b


def _utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


@pytest.mark.parametrize("iterator", [oss2.ObjectIterator, oss2.ObjectIteratorV2])
def test_list_objects_paginated(listing_bucket, iterator):
    listed = [o.key for o in iterator(listing_bucket, max_keys=2)]
    assert listed == _utf8_sorted(KEYS)
    dir_only = [o.key for o in iterator(listing_bucket, prefix="dir/", max_keys=3)]
    assert dir_only == _utf8_sorted(k for k in KEYS if k.startswith("dir/"))


@pytest.mark.parametrize("iterator", [oss2.ObjectIterator, oss2.ObjectIteratorV2])
def test_list_objects_delimiter(listing_bucket, iterator):
    top = list(iterator(listing_bucket, delimiter="/", max_keys=1))
    assert [o.key for o in top] == ["a.txt", "dir/", "zzz"]
    assert [o.is_prefix() for o in top] == [False, True, False]
    inner = list(iterator(listing_bucket, prefix="dir/", delimiter="/", max_keys=2))
    files = [o.key for o in inner if not o.is_prefix()]
    prefixes = [o.key for o in inner if o.is_prefix()]
    assert prefixes == ["dir/sub/", "dir/sub2/"]
    assert files == _utf8_sorted(k for k in KEYS if k.startswith("dir/") and k.count("/") == 1)


def test_list_objects_fields(listing_bucket):
    v1 = listing_bucket.list_objects(prefix="dir/one", max_keys=10)
    assert not v1.is_truncated
    (obj,) = v1.object_list
    assert obj.key == "dir/one two.txt" and obj.size == len(obj.key.encode())
    assert obj.etag == hashlib.md5(obj.key.encode()).hexdigest().upper()
    assert obj.type == "Normal" and obj.storage_class == "Standard" and obj.owner is not None
    assert abs(obj.last_modified - time.time()) < 3600
    v2 = listing_bucket.list_objects_v2(start_after="dir/sub2/x&y<z>.txt")
    assert [o.key for o in v2.object_list] == _utf8_sorted(["dir/日本語.txt", "dir/émoji-😀.bin", "zzz"])
    body = listing_bucket._do("GET", listing_bucket.bucket_name, "", params={"max-keys": "1"}).read()
    assert re.search(rb"<LastModified>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z</LastModified>", body)
    with pytest.raises(oss2.exceptions.InvalidArgument):
        listing_bucket.list_objects(max_keys=1001)


def test_copy_object(bucket):
    data = os.urandom(200_000)
    src = bucket.put_object("src key+1", data, headers={"Content-Type": "text/x-a", "x-oss-meta-a": "1"})
    copied = bucket.copy_object(bucket.bucket_name, "src key+1", "dst/key 2")
    assert copied.etag == src.etag and copied.crc == _CRC(data)
    head = bucket.head_object("dst/key 2")
    assert head.content_type == "text/x-a" and head.headers["x-oss-meta-a"] == "1"
    assert bucket.get_object("dst/key 2").read() == data
    bucket.update_object_meta("dst/key 2", {"Content-Type": "text/x-b", "x-oss-meta-b": "2"})
    head = bucket.head_object("dst/key 2")
    assert head.content_type == "text/x-b" and "x-oss-meta-a" not in head.headers
    with pytest.raises(oss2.exceptions.NoSuchKey):
        bucket.copy_object(bucket.bucket_name, "missing", "x")


def test_batch_delete(bucket):
    for k in ("d/1", "d/2 x", "d/3+"):
        bucket.put_object(k, b"1")
    result = bucket.batch_delete_objects(["d/1", "d/2 x", "d/3+", "d/none"])
    assert sorted(result.deleted_keys) == ["d/1", "d/2 x", "d/3+", "d/none"]
    assert list(oss2.ObjectIterator(bucket, prefix="d/")) == []


# ---- multipart -----------------------------------------------------------------------------------------------------
def test_multipart_by_hand(bucket):
    key = "mp/model weights.bin"
    chunks = [os.urandom(150 * 1024), b"\0" * (120 * 1024), os.urandom(1000)]
    up = bucket.init_multipart_upload(key)
    assert REQUEST_ID.match(up.request_id) and len(up.upload_id) == 32
    uploads = [u.upload_id for u in oss2.MultipartUploadIterator(bucket, prefix="mp/")]
    assert up.upload_id in uploads
    parts = []
    for i, chunk in enumerate(chunks, 1):
        r = bucket.upload_part(key, up.upload_id, i, chunk)
        assert r.etag == hashlib.md5(chunk).hexdigest().upper() and r.crc == _CRC(chunk)
        parts.append(PartInfo(i, r.etag, size=len(chunk), part_crc=r.crc))
    listed = list(oss2.PartIterator(bucket, key, up.upload_id, max_parts=2))
    assert [(p.part_number, p.etag, p.size) for p in listed] == [
        (p.part_number, p.etag, p.size) for p in parts
    ]

    done = bucket.complete_multipart_upload(key, up.upload_id, parts)  # oss2 checks the combined CRC
    data = b"".join(chunks)
    md5s = b"".join(hashlib.md5(c).digest() for c in chunks)
    assert done.etag == hashlib.md5(md5s).hexdigest().upper() + "-3"
    assert done.crc == _CRC(data)
    got = bucket.get_object(key)
    assert got.read() == data and got.object_type == "Multipart" and got.server_crc == _CRC(data)
    assert up.upload_id not in [u.upload_id for u in oss2.MultipartUploadIterator(bucket)]
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.list_parts(key, up.upload_id)


def test_multipart_errors(bucket):
    key = "mp/bad"
    up = bucket.init_multipart_upload(key)
    small = bucket.upload_part(key, up.upload_id, 1, b"tiny")
    big = bucket.upload_part(key, up.upload_id, 2, os.urandom(200 * 1024))
    p1, p2 = PartInfo(1, small.etag), PartInfo(2, big.etag)
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.complete_multipart_upload(key, up.upload_id, [p1, p2])
    assert (exc.value.status, exc.value.code) == (400, "EntityTooSmall")
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bucket.complete_multipart_upload(key, up.upload_id, [PartInfo(2, "0" * 32)])
    assert exc.value.code == "InvalidPart"
    with pytest.raises(oss2.exceptions.ServerError) as exc:  # sent as given: out of order
        bucket._do(
            "POST",
            bucket.bucket_name,
            key,
            params={"uploadId": up.upload_id},
            data=b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>x</ETag></Part>"
            b"<Part><PartNumber>1</PartNumber><ETag>y</ETag></Part></CompleteMultipartUpload>",
        )
    assert exc.value.code == "InvalidPartOrder"
    with pytest.raises(oss2.exceptions.MalformedXml):
        bucket._do("POST", bucket.bucket_name, key, params={"uploadId": up.upload_id}, data=b"<Complete")
    with pytest.raises(oss2.exceptions.NoSuchUpload) as exc:
        bucket.upload_part(key, "0" * 32, 1, b"data")
    assert exc.value.code == "NoSuchUpload"
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.upload_part(key, up.upload_id, 10001, b"data")
    # the upload survived the failed completions; a complete with only the big part works
    done = bucket.complete_multipart_upload(key, up.upload_id, [p2])
    assert done.etag.endswith("-1")
    up2 = bucket.init_multipart_upload(key)
    bucket.abort_multipart_upload(key, up2.upload_id)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.abort_multipart_upload(key, up2.upload_id)


# ---- UploadPartCopy ------------------------------------------------------------------------------------------------
def test_upload_part_copy_ranges(auth, info, bucket):
    src_bucket = _new_bucket(auth, info)  # another bucket of the same account: readable with the same key
    data = os.urandom(300 * 1024 + 17)
    src = src_bucket.put_object("src/weights +1.bin", data)
    key = "mp/copied.bin"
    up = bucket.init_multipart_upload(key)
    spans = [(0, 150 * 1024 - 1), (150 * 1024, 260 * 1024 - 1), (260 * 1024, None)]  # None: "bytes=266240-"
    parts = []
    for n, (first, last) in enumerate(spans, 1):
        r = bucket.upload_part_copy(src_bucket.bucket_name, "src/weights +1.bin", (first, last), key, up.upload_id, n)
        chunk = data[first : None if last is None else last + 1]
        assert r.etag == hashlib.md5(chunk).hexdigest().upper() and r.crc == _CRC(chunk)
        assert REQUEST_ID.match(r.request_id)
        parts.append(PartInfo(n, r.etag, size=len(chunk), part_crc=r.crc))
    listed = list(oss2.PartIterator(bucket, key, up.upload_id))
    assert [(p.part_number, p.etag, p.size) for p in listed] == [(p.part_number, p.etag, p.size) for p in parts]

    done = bucket.complete_multipart_upload(key, up.upload_id, parts)  # oss2 checks the CRC combined from the parts
    assert done.crc == _CRC(data) == src.crc
    md5s = b"".join(bytes.fromhex(p.etag) for p in parts)
    assert done.etag == hashlib.md5(md5s).hexdigest().upper() + "-3"
    got = bucket.get_object(key)
    assert got.read() == data and got.server_crc == _CRC(data) and got.object_type == "Multipart"


def test_upload_part_copy_wire_shape(info, bucket):
    """The raw answer: CopyPartResult document, ETag header; a whole-object copy's ETag is the source's MD5."""
    data = os.urandom(1000)
    src = bucket.put_object("s", data)
    up = bucket.init_multipart_upload("d")
    r = bucket.upload_part_copy(bucket.bucket_name, "s", None, "d", up.upload_id, 1)
    assert r.etag == src.etag and r.crc == src.crc
    body = r.resp.read()
    assert re.search(rb"<CopyPartResult><LastModified>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z</LastModified>"
                     rb'<ETag>"[0-9A-F]{32}"</ETag></CopyPartResult>', body)


@pytest.mark.parametrize(
    "byte_range",
    [(500, 2000), (900, 100), "bytes=abc", "bytes=5000-"],
    ids=["last-past-end", "first-after-last", "malformed", "first-past-end"],
)
def test_upload_part_copy_unsatisfiable_range_copies_everything(bucket, byte_range):
    """OSS ignores a copy range it cannot satisfy and copies the whole source (see sandbox/oss/partcopy.py)."""
    data = os.urandom(1000)
    bucket.put_object("s", data)
    up = bucket.init_multipart_upload("d")
    if isinstance(byte_range, tuple):
        r = bucket.upload_part_copy(bucket.bucket_name, "s", byte_range, "d", up.upload_id, 1)
    else:
        r = bucket.upload_part_copy(bucket.bucket_name, "s", None, "d", up.upload_id, 1,
                                    headers={"x-oss-copy-source-range": byte_range})
    assert r.etag == hashlib.md5(data).hexdigest().upper() and r.crc == _CRC(data)
    bucket.complete_multipart_upload("d", up.upload_id, [PartInfo(1, r.etag, size=len(data), part_crc=r.crc)])
    assert bucket.get_object("d").read() == data


def test_upload_part_copy_suffix_range(bucket):
    data = os.urandom(1000)
    bucket.put_object("s", data)
    up = bucket.init_multipart_upload("d")
    r = bucket.upload_part_copy(bucket.bucket_name, "s", (None, 10), "d", up.upload_id, 1)  # "bytes=-10"
    assert r.etag == hashlib.md5(data[-10:]).hexdigest().upper()


def test_upload_part_copy_errors(auth, info, bucket):
    bucket.put_object("s", b"source bytes")
    up = bucket.init_multipart_upload("d")
    name = bucket.bucket_name
    with pytest.raises(oss2.exceptions.NoSuchKey) as exc:
        bucket.upload_part_copy(name, "missing", (0, 1), "d", up.upload_id, 1)
    assert exc.value.details["Key"] == "missing"
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        bucket.upload_part_copy(f"no-such-{uuid.uuid4().hex[:8]}", "s", (0, 1), "d", up.upload_id, 1)
    with pytest.raises(oss2.exceptions.NoSuchUpload) as exc:
        bucket.upload_part_copy(name, "s", (0, 1), "d", "0" * 32, 1)
    assert exc.value.details["UploadId"] == "0" * 32
    with pytest.raises(oss2.exceptions.NoSuchUpload):  # an upload id belongs to its key
        bucket.upload_part_copy(name, "s", (0, 1), "other", up.upload_id, 1)
    bucket.abort_multipart_upload("d", up.upload_id)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        bucket.upload_part_copy(name, "s", (0, 1), "d", up.upload_id, 1)

    up = bucket.init_multipart_upload("d")
    with pytest.raises(oss2.exceptions.InvalidArgument):
        bucket.upload_part_copy(name, "s", (0, 1), "d", up.upload_id, 10001)
    for value, ec in ((f"{name}/s", "0042-00000301"), ("", "0042-00000302")):
        with pytest.raises(oss2.exceptions.InvalidArgument) as exc:
            bucket._do("PUT", name, "d", params={"uploadId": up.upload_id, "partNumber": "1"},
                       headers={"x-oss-copy-source": value})
        assert exc.value.ec == ec
    assert list(oss2.PartIterator(bucket, "d", up.upload_id)) == []


def test_upload_part_copy_conditions(bucket):
    src = bucket.put_object("s", b"x" * 100)
    up = bucket.init_multipart_upload("d")
    past, future = formatdate(time.time() - 3600, usegmt=True), formatdate(time.time() + 3600, usegmt=True)
    failing = [
        {"x-oss-copy-source-if-match": '"0123456789ABCDEF0123456789ABCDEF"'},
        {"x-oss-copy-source-if-none-match": src.etag},
        {"x-oss-copy-source-if-unmodified-since": past},
        {"x-oss-copy-source-if-modified-since": future},
    ]
    for headers in failing:
        with pytest.raises(oss2.exceptions.PreconditionFailed) as exc:
            bucket.upload_part_copy(bucket.bucket_name, "s", None, "d", up.upload_id, 1, headers=headers)
        assert exc.value.details["Condition"] == next(iter(headers))
    holding = {
        "x-oss-copy-source-if-match": f'"{src.etag}"',
        "x-oss-copy-source-if-none-match": '"0123456789ABCDEF0123456789ABCDEF"',
        "x-oss-copy-source-if-unmodified-since": future,
        "x-oss-copy-source-if-modified-since": past,
    }
    r = bucket.upload_part_copy(bucket.bucket_name, "s", None, "d", up.upload_id, 1, headers=holding)
    assert r.etag == src.etag


def test_upload_part_copy_needs_read_access_to_the_source(auth, info, bucket):
    """Anonymous requests: the destination must be public-read-write and the source readable, as for CopyObject."""
    bucket.put_object("private", b"secret")
    dst = _new_bucket(auth, info, acl=oss2.BUCKET_ACL_PUBLIC_READ_WRITE)
    up = dst.init_multipart_upload("d")
    anon = oss2.Bucket(oss2.AnonymousAuth(), info["oss_endpoint"], dst.bucket_name)
    with pytest.raises(oss2.exceptions.AccessDenied):
        anon.upload_part_copy(bucket.bucket_name, "private", None, "d", up.upload_id, 1)
    public = _new_bucket(auth, info, acl=oss2.BUCKET_ACL_PUBLIC_READ)
    public.put_object("open", b"public bytes")
    r = anon.upload_part_copy(public.bucket_name, "open", None, "d", up.upload_id, 1)
    assert r.etag == hashlib.md5(b"public bytes").hexdigest().upper()
    wrong = oss2.Bucket(oss2.Auth(info["access_key_id"], "not-the-secret"), info["oss_endpoint"], dst.bucket_name)
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        wrong.upload_part_copy(public.bucket_name, "open", None, "d", up.upload_id, 2)
    assert (exc.value.status, exc.value.code) == (403, "SignatureDoesNotMatch")


def _make_file(path: Path, size: int) -> None:
    """Half random, half zeros (sparse-ish), in 1 MiB blocks."""
    block = 1 << 20
    with open(path, "wb") as f:
        for i in range(size // block):
            f.write(os.urandom(block) if i % 2 == 0 else b"\0" * block)
        f.write(os.urandom(size % block))


def test_resumable_upload_200mb(bucket, tmp_path):
    path = tmp_path / "model.bin"
    size = 200 * 1024 * 1024 + 12345
    _make_file(path, size)
    store = oss2.ResumableStore(root=str(tmp_path / "ckpt"))
    assert bucket.enable_crc
    t0 = time.perf_counter()
    result = oss2.resumable_upload(
        bucket,
        "models/model.bin",
        str(path),
        store=store,
        multipart_threshold=10 << 20,
        part_size=8 << 20,
        num_threads=4,
    )
    elapsed = time.perf_counter() - t0
    print(f"\nresumable_upload {size / 2**20:.0f} MiB in {elapsed:.2f}s = {size / 2**20 / elapsed:.0f} MiB/s")
    expected = file_crc64(path)
    assert result.crc == expected  # oss2 also compared it with the CRC it combined from the parts
    head = bucket.head_object("models/model.bin")
    assert head.content_length == size and head.server_crc == expected and head.object_type == "Multipart"
    with open(path, "rb") as f:
        f.seek(150 << 20)
        want = f.read(4096)
    assert bucket.get_object("models/model.bin", byte_range=(150 << 20, (150 << 20) + 4095)).read() == want


class _CountingBucket(oss2.Bucket):
    """Records the part numbers it uploads (to tell which parts a resumed upload sends)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[int] = []

    def upload_part(self, key, upload_id, part_number, data, progress_callback=None, headers=None):
        result = super().upload_part(key, upload_id, part_number, data, progress_callback, headers)
        self.sent.append(part_number)
        return result


class _Interrupt(Exception):
    pass


def test_interrupted_upload_resumes(auth, info, bucket, tmp_path):
    path = tmp_path / "weights.bin"
    part = 1 << 20
    _make_file(path, 24 * part + 777)  # 25 parts
    store = oss2.ResumableStore(root=str(tmp_path / "ckpt"))
    key = "resume/weights.bin"

    first = _CountingBucket(auth, info["oss_endpoint"], bucket.bucket_name)

    def explode(consumed, total):
        if consumed >= 8 * part:
            raise _Interrupt()

    with pytest.raises(_Interrupt):
        oss2.resumable_upload(
            first,
            key,
            str(path),
            store=store,
            multipart_threshold=part,
            part_size=part,
            num_threads=2,
            progress_callback=explode,
        )
    assert not bucket.object_exists(key)
    (upload,) = [u for u in oss2.MultipartUploadIterator(bucket, prefix="resume/")]
    done_before = {p.part_number for p in oss2.PartIterator(bucket, key, upload.upload_id)}
    assert 8 <= len(done_before) < 25

    second = _CountingBucket(auth, info["oss_endpoint"], bucket.bucket_name)
    result = oss2.resumable_upload(
        second, key, str(path), store=store, multipart_threshold=part, part_size=part, num_threads=3
    )
    assert sorted(second.sent) == sorted(set(range(1, 26)) - done_before)  # only the missing parts
    assert result.crc == file_crc64(path)
    assert bucket.get_object(key).read() == path.read_bytes()
    assert list(oss2.MultipartUploadIterator(bucket, prefix="resume/")) == []


def test_crc_mismatch_detected(sandbox, bucket, tmp_path):
    """A corrupted object on 'disk' no longer matches its recorded x-oss-hash-crc64ecma: oss2 notices."""
    data = os.urandom(64 * 1024)
    bucket.put_object("rot", data)
    _, path = sandbox.services.oss.state.get_object(bucket.bucket_name, "rot")
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(bytes([data[1000] ^ 0xFF]))
    with pytest.raises(oss2.exceptions.InconsistentError):
        bucket.get_object_to_file("rot", str(tmp_path / "rot"))


# ---- authentication ------------------------------------------------------------------------------------------------
def test_wrong_secret_rejected(info, bucket):
    bad = oss2.Bucket(
        oss2.Auth(info["access_key_id"], "not-the-secret"), info["oss_endpoint"], bucket.bucket_name
    )
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as exc:
        bad.put_object("x", b"1")
    assert exc.value.status == 403 and REQUEST_ID.match(exc.value.request_id)
    assert "not-the-secret" not in str(exc.value.body)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        bad.head_object("x")


def test_unknown_key_id_rejected(info, bucket):
    bad = oss2.Bucket(
        oss2.Auth("LTAInobodyhasthiskey00", info["access_key_secret"]),
        info["oss_endpoint"],
        bucket.bucket_name,
    )
    with pytest.raises(oss2.exceptions.ServerError) as exc:
        bad.get_object("x")
    assert (exc.value.status, exc.value.code) == (403, "InvalidAccessKeyId")
    assert REQUEST_ID.match(exc.value.request_id)


def test_anonymous_access(auth, info, bucket):
    bucket.put_object("p", b"private")
    r = _raw(info, "GET", f"/{bucket.bucket_name}/p")
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    public = _new_bucket(auth, info, acl=oss2.BUCKET_ACL_PUBLIC_READ)
    public.put_object("p", b"public")
    anon = oss2.Bucket(oss2.AnonymousAuth(), info["oss_endpoint"], public.bucket_name)
    assert anon.get_object("p").read() == b"public"
    with pytest.raises(oss2.exceptions.AccessDenied):
        anon.put_object("q", b"no")


def test_presigned_url(info, bucket):
    bucket.put_object("signed key", b"via url")
    url = bucket.sign_url("GET", "signed key", 60)
    assert requests.get(url, timeout=30).content == b"via url"
    tampered = url.replace("Signature=", "Signature=A")
    r = requests.get(tampered, timeout=30)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    expired = bucket.sign_url("GET", "signed key", -10)
    r = requests.get(expired, timeout=30)
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content


def _v4_bucket(info, secret: str, name: str) -> oss2.Bucket:
    provider = StaticCredentialsProvider(info["access_key_id"], secret)
    return oss2.Bucket(oss2.ProviderAuthV4(provider), info["oss_endpoint"], name, region=info["region"])


def test_v4_signature(info, bucket):
    v4 = _v4_bucket(info, info["access_key_secret"], bucket.bucket_name)
    v4.put_object("v4/a b+c.txt", b"signed with v4", headers={"x-oss-meta-x": "y"})
    assert v4.get_object("v4/a b+c.txt").read() == b"signed with v4"
    assert [o.key for o in oss2.ObjectIteratorV2(v4, prefix="v4/")] == ["v4/a b+c.txt"]
    up = v4.init_multipart_upload("v4/mp")
    r = v4.upload_part("v4/mp", up.upload_id, 1, b"z" * 1000)
    v4.complete_multipart_upload("v4/mp", up.upload_id, [PartInfo(1, r.etag, size=1000, part_crc=r.crc)])
    url = v4.sign_url("GET", "v4/a b+c.txt", 60)
    assert requests.get(url, timeout=30).content == b"signed with v4"

    bad = _v4_bucket(info, "wrong-secret", bucket.bucket_name)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as exc:
        bad.get_object("v4/a b+c.txt")
    assert REQUEST_ID.match(exc.value.request_id)


def test_v2_signature(info, bucket):
    v2 = oss2.Bucket(
        oss2.AuthV2(info["access_key_id"], info["access_key_secret"]),
        info["oss_endpoint"],
        bucket.bucket_name,
    )
    v2.put_object("v2/k ey", b"v2")
    assert v2.get_object("v2/k ey", byte_range=(0, 0)).read() == b"v"


# ---- malformed requests: real codes, never a 500 -------------------------------------------------------------------
def test_bad_content_md5(bucket):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("md5", b"payload", headers={"Content-MD5": wrong})
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("md5", b"payload", headers={"Content-MD5": "not base64!"})
    assert not bucket.object_exists("md5")
    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    bucket.put_object("md5", b"payload", headers={"Content-MD5": good})
    # a failed overwrite leaves the previous object intact
    with pytest.raises(oss2.exceptions.InvalidDigest):
        bucket.put_object("md5", b"changed", headers={"Content-MD5": wrong})
    assert bucket.get_object("md5").read() == b"payload"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", "/", {}, 403, "AccessDenied"),
        ("GET", "/{b}/k", {"Authorization": "Bearer x"}, 400, "InvalidArgument"),
        ("GET", "/{b}/k", {"Authorization": "OSS nocolon"}, 400, "InvalidArgument"),
        ("GET", "/{b}/k", {"Authorization": "OSS LTAIx:sig"}, 403, "InvalidAccessKeyId"),
        ("GET", "/{b}/k", {"Authorization": "OSS4-HMAC-SHA256 Credential=a/b"}, 400, "InvalidArgument"),
        ("GET", "/{b}/k?OSSAccessKeyId=LTAIx&Expires=1&Signature=x", {}, 403, "InvalidAccessKeyId"),
        ("GET", "/nosuchbucket-zz/k", {}, 404, "NoSuchBucket"),
        ("GET", "/{b}/%FF%FE", {}, 400, "InvalidObjectName"),
        ("PATCH", "/{b}/k", {}, 403, "AccessDenied"),
    ],
)
def test_raw_malformed_requests(info, bucket, method, path, headers, status, code):
    r = _raw(info, method, path.format(b=bucket.bucket_name), headers=headers)
    assert r.status_code == status
    assert f"<Code>{code}</Code>".encode() in r.content
    assert REQUEST_ID.match(r.headers["x-oss-request-id"]) and r.headers["server"] == "AliyunOSS"


def test_signed_malformed_requests(bucket):
    name = bucket.bucket_name
    cases = [
        (("GET", name, "", {"params": {"max-keys": "abc"}}), "InvalidArgument"),
        (("GET", name, "", {"params": {"encoding-type": "base64"}}), "InvalidArgument"),
        (("GET", name, "", {"params": {"list-type": "2", "continuation-token": "!!!"}}), "InvalidArgument"),
        (("PUT", name, "", {"params": {"acl": ""}, "headers": {"x-oss-acl": "world"}}), "InvalidArgument"),
        (("POST", name, "", {"params": {"delete": ""}, "data": b"<Delete>"}), "MalformedXML"),
        (("POST", name, "k", {"params": {"uploadId": "nope"}, "data": b"<x/>"}), "NoSuchUpload"),
        (("PUT", name, "k", {"headers": {"x-oss-copy-source": "nobucket"}}), "InvalidArgument"),
        (("PUT", name, "k", {"headers": {"x-oss-copy-source": f"/{name}/missing"}}), "NoSuchKey"),
        (("PUT", name, "", {"params": {"cors": ""}}), "NotImplemented"),
    ]
    for (method, b, key, kw), code in cases:
        with pytest.raises(oss2.exceptions.ServerError) as exc:
            bucket._do(method, b, key, **kw)
        assert exc.value.code == code, (method, key, kw)
        assert 400 <= exc.value.status < 500


def test_request_time_too_skewed(info, bucket):
    date = formatdate(time.time() - 3600, usegmt=True)
    sts = f"GET\n\n\n{date}\n/{bucket.bucket_name}/k"
    sig = base64.b64encode(hmac.new(info["access_key_secret"].encode(), sts.encode(), hashlib.sha1).digest())
    headers = {"Date": date, "Authorization": f"OSS {info['access_key_id']}:{sig.decode()}"}
    r = _raw(info, "GET", f"/{bucket.bucket_name}/k", headers=headers)
    assert r.status_code == 403 and b"<Code>RequestTimeTooSkewed</Code>" in r.content


def test_interrupted_put_keeps_previous_object(info, bucket):
    """A PUT whose connection dies mid-body must not touch the object it was replacing."""
    import socket
    from urllib.parse import urlparse

    bucket.put_object("keep", b"original")
    date = formatdate(time.time(), usegmt=True)
    sts = f"PUT\n\napplication/octet-stream\n{date}\n/{bucket.bucket_name}/keep"
    sig = base64.b64encode(hmac.new(info["access_key_secret"].encode(), sts.encode(), hashlib.sha1).digest())
    ep = urlparse(info["oss_endpoint"])
    head = (
        f"PUT /{bucket.bucket_name}/keep HTTP/1.1\r\nHost: {ep.netloc}\r\nDate: {date}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {8 << 20}\r\n"
        f"Authorization: OSS {info['access_key_id']}:{sig.decode()}\r\n\r\n"
    )
    with socket.create_connection((ep.hostname, ep.port)) as s:
        s.sendall(head.encode() + os.urandom(1 << 20))

    def partial_body_gone() -> bool:
        assert bucket.get_object("keep").read() == b"original"  # never replaced, not even for a moment
        return os.listdir(bucket_tmp_dir(info)) == []

    wait_for(partial_body_gone, "the partial body thrown away", timeout=10, interval=0.2,
             state=lambda: os.listdir(bucket_tmp_dir(info)))
    assert bucket.get_object("keep").read() == b"original"


def bucket_tmp_dir(info) -> Path:
    return Path(info["state_dir"]) / "oss" / "tmp"


# ---- in-process API and persistence -------------------------------------------------------------------------------
def test_in_process_api(sandbox, listing_bucket):
    svc = sandbox.services.oss
    assert svc.bucket_exists(listing_bucket.bucket_name) and not svc.bucket_exists("no-such-bucket-x")
    assert svc.list_keys(listing_bucket.bucket_name, "dir/sub") == ["dir/sub/deep.txt", "dir/sub2/x&y<z>.txt"]
    with svc.open_object(listing_bucket.bucket_name, "dir/日本語.txt") as f:
        assert f.read() == "dir/日本語.txt".encode()
    info = svc.object_info(listing_bucket.bucket_name, "zzz")
    assert info.size == 3 and info.crc64 == _CRC(b"zzz")
    with pytest.raises(KeyError):
        svc.open_object(listing_bucket.bucket_name, "missing")
    ak = sandbox.info["access_key_id"]
    assert svc.check_credentials(ak, sandbox.info["access_key_secret"]) and not svc.check_credentials(ak, "x")


def test_state_survives_restart(fresh_sandbox):
    from sandbox.runner import Sandbox

    info = fresh_sandbox.info
    auth = oss2.Auth(info["access_key_id"], info["access_key_secret"])
    b = oss2.Bucket(auth, info["oss_endpoint"], "persist-me")
    b.create_bucket()
    data = os.urandom(300_000)
    b.put_object("kept/obj", data)
    up = b.init_multipart_upload("kept/partial")
    b.upload_part("kept/partial", up.upload_id, 1, b"p" * 200_000)
    fresh_sandbox.stop()

    again = Sandbox(fresh_sandbox.state_dir, speed=50.0)
    info2 = again.start()
    try:
        assert info2["access_key_id"] == info["access_key_id"]
        b2 = oss2.Bucket(auth, info2["oss_endpoint"], "persist-me")
        got = b2.get_object("kept/obj")
        assert got.read() == data and got.server_crc == _CRC(data)
        assert [p.part_number for p in oss2.PartIterator(b2, "kept/partial", up.upload_id)] == [1]
        assert [o.key for o in oss2.ObjectIterator(b2)] == ["kept/obj"]
    finally:
        again.stop()
