"""upload_model against the sandbox's OSS, through oss2 over loopback: skip, resume, CRC, errors, copy, delete."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import oss2
import pytest
from pydantic import SecretStr

from blocks.alibaba import AlibabaCloudCredentials
from clients.oss import UploadError
from core.demo_model import generate_demo_model
from core.spec import DeploySpec
from tasks.model import delete_model_objects, upload_model
from tasks.model_transfer import crc64_file

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def creds(sandbox) -> AlibabaCloudCredentials:
    info = sandbox.info
    return AlibabaCloudCredentials(
        access_key_id=info["access_key_id"],
        access_key_secret=info["access_key_secret"],
        region_id=info["region"],
        oss_endpoint=info["oss_endpoint"],
    )


def _bucket_name(tag: str) -> str:
    return f"ei-{tag}-{secrets.token_hex(4)}"


def _spec(local_dir: Path | None, bucket: str, **model) -> DeploySpec:
    data: dict = {"model": dict(model), "storage": {"bucket": bucket}}
    if local_dir is not None:
        data["model"]["local_dir"] = str(local_dir)
    return DeploySpec.parse(data)


def _objects(creds: AlibabaCloudCredentials, bucket: str, prefix: str = "") -> dict[str, int]:
    b = creds.get_oss_bucket(bucket)
    return {o.key: o.size for o in oss2.ObjectIteratorV2(b, prefix=prefix)}


def _files(base: Path) -> dict[str, int]:
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    base = tmp_path / "chnsenticorp"
    generate_demo_model(base)
    return base


def test_upload_creates_the_bucket_and_second_run_sends_nothing(creds, model, tmp_path):
    bucket = _bucket_name("twice")
    spec = _spec(model, bucket)
    prefix = spec.names.model_oss_prefix
    first = upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck")
    local = _files(model)
    assert first.files_total == len(local) and first.files_uploaded == len(local) and first.files_skipped == 0
    assert first.bytes_sent == first.bytes_total == sum(local.values())
    assert _objects(creds, bucket) == {prefix + k: v for k, v in local.items()}
    # The objects are the files, byte for byte (oss2 checks the CRC of the download too).
    b = creds.get_oss_bucket(bucket)
    assert b.get_object(prefix + "1623831335/model.json").read() == (model / "1623831335/model.json").read_bytes()
    assert b.get_bucket_acl().acl == oss2.BUCKET_ACL_PRIVATE

    second = upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck")
    assert second.bytes_sent == 0
    assert second.files_uploaded == 0 and second.files_skipped == len(local)
    assert second.bytes_skipped == second.bytes_total == first.bytes_total
    assert all(f.action == "skipped" for f in second.files)


def test_only_the_changed_file_is_sent_again(creds, model, tmp_path):
    bucket = _bucket_name("changed")
    spec = _spec(model, bucket)
    upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck")
    # Same size, one byte different: only the CRC-64 can tell.
    index = model / "1623831335/variables/variables.index"
    data = bytearray(index.read_bytes())
    data[-2:-1] = b" " if data[-2:-1] != b" " else b"\t"
    index.write_bytes(bytes(data))
    report = upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck")
    sent = [f for f in report.files if f.action == "uploaded"]
    assert [f.key for f in sent] == [spec.names.model_oss_prefix + "1623831335/variables/variables.index"]
    assert report.bytes_sent == len(data)
    assert report.files_skipped == report.files_total - 1
    remote = creds.get_oss_bucket(bucket).get_object(sent[0].key).read()
    assert remote == bytes(data)


def test_large_file_goes_up_in_parallel_parts_with_crc(creds, model, tmp_path):
    bucket = _bucket_name("large")
    big = model / "1623831335/variables/variables.data-00000-of-00001"
    generate_demo_model(model, size_bytes=64 * MiB, shard_bytes=128 * MiB)
    spec = _spec(model, bucket, upload_part_size=4 * MiB, multipart_threshold=8 * MiB, upload_threads=4)
    report = upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck", show_progress=True)
    key = spec.names.model_oss_prefix + "1623831335/variables/variables.data-00000-of-00001"
    result = next(f for f in report.files if f.key == key)
    assert result.method == "multipart" and result.bytes_sent == big.stat().st_size == 64 * MiB
    local_crc = crc64_file(big)
    assert result.crc64 == local_crc
    head = creds.get_oss_bucket(bucket).head_object(key)
    assert head.content_length == 64 * MiB
    assert head.server_crc == local_crc
    assert head.object_type == "Multipart"
    assert not any((tmp_path / "ck").rglob("*--*"))  # the checkpoint record is gone once complete


def test_an_interrupted_upload_resumes_from_its_checkpoint(creds, model, tmp_path):
    bucket = _bucket_name("resume")
    part = 1 * MiB
    size = 24 * MiB
    generate_demo_model(model, size_bytes=size, shard_bytes=size)
    big = model / "1623831335/variables/variables.data-00000-of-00001"
    spec = _spec(model, bucket, upload_part_size=part, multipart_threshold=4 * MiB, upload_threads=1)
    ck = tmp_path / "ck"

    class Interrupted(Exception):
        pass

    def stop_after_five_parts(key: str, done: int, total: int) -> None:
        if key.endswith("variables.data-00000-of-00001") and done >= 5 * part:
            raise Interrupted(f"stopped at {done} bytes")

    with pytest.raises(Interrupted):
        upload_model.fn(spec, creds, checkpoint_dir=ck, progress_hook=stop_after_five_parts, file_workers=1)
    records = list(ck.rglob("*--*"))
    assert len(records) == 1  # oss2's ResumableStore record of the unfinished multipart upload
    key = spec.names.model_oss_prefix + "1623831335/variables/variables.data-00000-of-00001"
    with pytest.raises(oss2.exceptions.NoSuchKey):
        creds.get_oss_bucket(bucket).head_object(key)

    report = upload_model.fn(spec, creds, checkpoint_dir=ck)
    result = next(f for f in report.files if f.key == key)
    assert result.action == "uploaded"
    assert result.bytes_sent == size - 5 * part  # the five parts already on OSS were not sent again
    assert creds.get_oss_bucket(bucket).head_object(key).server_crc == crc64_file(big)
    assert not list(ck.rglob("*--*"))


def test_wrong_secret_fails_clearly_without_leaking_it(sandbox, creds, model, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng" + secrets.token_hex(12)
    bad = creds.model_copy(update={"access_key_secret": SecretStr(wrong)})
    with pytest.raises(UploadError) as err:
        upload_model.fn(_spec(model, _bucket_name("badkey")), bad, checkpoint_dir=tmp_path / "ck", attempts=1)
    assert err.value.code == "SignatureDoesNotMatch"
    assert "SignatureDoesNotMatch" in str(err.value)
    real = sandbox.info["access_key_secret"]
    for text in (str(err.value), repr(err.value), caplog.text):
        assert wrong not in text
        assert real not in text


def test_unknown_access_key_id_is_named(creds, model, tmp_path):
    bad = creds.model_copy(update={"access_key_id": "LTAI" + secrets.token_hex(8)})
    with pytest.raises(UploadError, match="InvalidAccessKeyId"):
        upload_model.fn(_spec(model, _bucket_name("badid")), bad, checkpoint_dir=tmp_path / "ck", attempts=1)


@pytest.mark.parametrize("breakage", ["empty-version", "no-model-file", "no-version"])
def test_bad_layout_is_rejected_before_any_call(creds, model, tmp_path, breakage):
    bucket = _bucket_name("layout")
    spec = _spec(model, bucket)  # valid when the spec was made; broken before the upload runs
    vdir = model / "1623831335"
    if breakage == "no-model-file":
        (vdir / "model.json").unlink()
    else:
        for p in sorted(vdir.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        if breakage == "no-version":
            vdir.rmdir()
    # An endpoint nobody listens on: any call would fail with a network error, not a layout error.
    unreachable = creds.model_copy(update={"oss_endpoint": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="model (version )?directory"):
        upload_model.fn(spec, unreachable, checkpoint_dir=tmp_path / "ck", attempts=1)
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        creds.get_oss_bucket(bucket).list_objects(max_keys=1)


@pytest.mark.parametrize("multipart", [False, True], ids=["copy_object", "upload_part_copy"])
def test_copy_from_a_source_uri_stays_inside_oss_and_skips_the_second_time(creds, model, tmp_path, multipart):
    src_bucket = _bucket_name("src")
    dst_bucket = _bucket_name("dst")
    # Put the model at oss://src/registry/chnsenticorp/ (a registry's layout); 6 MiB of weights.
    generate_demo_model(model, size_bytes=6 * MiB, shard_bytes=8 * MiB)
    src_spec = DeploySpec.parse({
        "model": {"local_dir": str(model)},
        "storage": {"bucket": src_bucket, "path": "/registry"},
        "serving": {"model_path": "/models/chnsenticorp"},
    })
    upload_model.fn(src_spec, creds, checkpoint_dir=tmp_path / "ck")
    src_prefix = src_spec.names.model_oss_prefix
    assert src_prefix == f"registry/chnsenticorp/{src_spec.names.release}/"

    threshold = 2 * MiB if multipart else 64 * MiB
    spec = _spec(None, dst_bucket, source_uri=f"oss://{src_bucket}/{src_prefix}",
                 multipart_threshold=threshold, upload_part_size=1 * MiB)
    report = upload_model.fn(spec, creds)
    assert report.mode == "copy" and report.files_uploaded == report.files_total == len(_files(model))
    methods = {f.key.rsplit("/", 1)[-1]: f.method for f in report.files}
    assert methods["variables.data-00000-of-00001"] == ("multipart-copy" if multipart else "copy")
    assert methods["model.json"] == "copy"
    prefix = spec.names.model_oss_prefix
    assert _objects(creds, dst_bucket) == {prefix + k: v for k, v in _files(model).items()}
    src, dst = creds.get_oss_bucket(src_bucket), creds.get_oss_bucket(dst_bucket)
    for rel in _files(model):
        assert dst.head_object(prefix + rel).server_crc == src.head_object(src_prefix + rel).server_crc
    if multipart:  # assembled on the server from UploadPartCopy parts of upload_part_size (1 MiB) each
        big, size = next((k, v) for k, v in _files(model).items() if k.endswith("variables.data-00000-of-00001"))
        head = dst.head_object(prefix + big)
        assert head.object_type == "Multipart" and head.etag.endswith(f"-{-(-size // MiB)}")

    again = upload_model.fn(spec, creds)
    assert again.files_skipped == again.files_total and again.bytes_sent == 0


def test_copy_from_a_source_without_a_model_is_rejected(creds, model, tmp_path):
    src_bucket = _bucket_name("nomodel")
    b = creds.get_oss_bucket(src_bucket)
    b.create_bucket()
    b.put_object("stuff/readme.txt", b"not a model")
    spec = _spec(None, _bucket_name("dst"), source_uri=f"oss://{src_bucket}/stuff")
    with pytest.raises(ValueError, match="no version directory"):
        upload_model.fn(spec, creds)


def test_delete_model_objects_removes_the_prefix_only(creds, model, tmp_path):
    bucket = _bucket_name("delete")
    spec = _spec(model, bucket)
    upload_model.fn(spec, creds, checkpoint_dir=tmp_path / "ck")
    creds.get_oss_bucket(bucket).put_object("other/keep.txt", b"keep me")
    n = delete_model_objects(creds, bucket, spec.names.model_oss_prefix)
    assert n == len(_files(model))
    assert _objects(creds, bucket) == {"other/keep.txt": 7}
    with pytest.raises(ValueError, match="non-empty"):
        delete_model_objects(creds, bucket, "/")


def test_inside_a_flow_run_progress_goes_to_a_prefect_artifact(creds, model, tmp_path, prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    generate_demo_model(model, size_bytes=12 * MiB, shard_bytes=16 * MiB)
    spec = _spec(model, _bucket_name("flow"), upload_part_size=1 * MiB, multipart_threshold=2 * MiB)

    @flow
    def deploy_model():
        return upload_model(spec, creds, checkpoint_dir=tmp_path / "ck")

    state = deploy_model(return_state=True)
    report = state.result()
    with get_client(sync_client=True) as client:
        # The Prefect server is shared by the test session: look at this flow run's artifacts only.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["model-upload"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert report.files_uploaded == report.files_total
    assert len(artifacts) == 1
    assert artifacts[0].type == "progress"
    assert float(artifacts[0].data) == 100.0
    assert spec.storage.bucket in (artifacts[0].description or "")


class FlakyLink:
    """A TCP relay in front of the sandbox's OSS that breaks connections mid-request, like a flaky network.

    ``should_cut(upstream_bytes_on_this_connection, total_upstream_bytes)`` decides, as bytes flow from the
    client, when to cut the connection (both directions, at once).
    """

    def __init__(self, target: str, should_cut) -> None:
        u = urlparse(target)
        self.target = (u.hostname, u.port)
        self.should_cut = should_cut
        self.total = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, counted: bool) -> None:
        sent = 0
        try:
            while data := src.recv(256 * 1024):
                if counted:
                    with self._lock:
                        self.total += len(data)
                        cut = self.should_cut(sent + len(data), self.total)
                        self.cuts += cut
                    if cut:
                        raise ConnectionError("cut")
                    sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_cut_mid_part_is_retried_and_the_upload_completes(creds, model, tmp_path, caplog):
    size = 16 * MiB
    generate_demo_model(model, size_bytes=size, shard_bytes=size)
    big = model / "1623831335/variables/variables.data-00000-of-00001"
    spec = _spec(model, _bucket_name("flaky"), upload_part_size=1 * MiB, multipart_threshold=2 * MiB)
    cut_once = {"done": False}

    def cut(conn_bytes: int, total: int) -> bool:  # one cut, in the middle of the upload
        if not cut_once["done"] and total > 6 * MiB:
            cut_once["done"] = True
            return True
        return False

    link = FlakyLink(creds.oss_endpoint, cut)
    try:
        flaky = creds.model_copy(update={"oss_endpoint": link.endpoint})
        report = upload_model.fn(spec, flaky, checkpoint_dir=tmp_path / "ck")
    finally:
        link.close()
    assert link.cuts == 1
    assert "retrying" in caplog.text
    key = spec.names.model_oss_prefix + "1623831335/variables/variables.data-00000-of-00001"
    assert next(f for f in report.files if f.key == key).action == "uploaded"
    assert creds.get_oss_bucket(spec.storage.bucket).head_object(key).server_crc == crc64_file(big)


def test_a_file_that_keeps_failing_fails_the_task_naming_it(creds, model, tmp_path):
    generate_demo_model(model, size_bytes=4 * MiB, shard_bytes=4 * MiB)
    spec = _spec(model, _bucket_name("broken"))
    link = FlakyLink(creds.oss_endpoint, lambda conn_bytes, total: conn_bytes > 1 * MiB)  # no big request passes
    try:
        flaky = creds.model_copy(update={"oss_endpoint": link.endpoint})
        with pytest.raises(UploadError) as err:
            upload_model.fn(spec, flaky, checkpoint_dir=tmp_path / "ck", attempts=2)
    finally:
        link.close()
    assert "variables.data-00000-of-00001" in str(err.value)
    assert err.value.code == "RequestError"
    assert link.cuts >= 2  # tried, and tried again


# ---- the upload manifest: unchanged models cost O(files) ---------------------------------------------------------
def test_an_unchanged_rerun_is_decided_by_the_manifest_and_a_changed_file_or_object_still_goes_up(
        creds, model, tmp_path):
    bucket = _bucket_name("manifest")
    spec = _spec(model, bucket)
    prefix = spec.names.model_oss_prefix
    ck = tmp_path / "ck"
    upload_model.fn(spec, creds, checkpoint_dir=ck)
    manifests = list((ck / "manifests").glob("*.json"))
    assert len(manifests) == 1 and manifests[0].stat().st_mode & 0o077 == 0
    assert creds.access_key_secret.get_secret_value() not in manifests[0].read_text()

    again = upload_model.fn(spec, creds, checkpoint_dir=ck)
    assert again.bytes_sent == 0 and {f.skipped_by for f in again.files} == {"manifest"}

    # a rewritten file (new mtime) is checked by its CRC-64 and sent; an untouched one stays decided by the manifest
    vocab = model / "1623831335/assets/vocab.txt"
    vocab.write_text(vocab.read_text().replace("[MASK]", "[MASQ]"))
    # an object changed in the bucket behind our back (same size): its new ETag gives it away
    index_key = prefix + "1623831335/variables/variables.index"
    b = creds.get_oss_bucket(bucket)
    original = b.get_object(index_key).read()
    b.put_object(index_key, bytes(reversed(original)))
    third = upload_model.fn(spec, creds, checkpoint_dir=ck)
    by_key = {f.key: f for f in third.files}
    assert by_key[prefix + "1623831335/assets/vocab.txt"].action == "uploaded"
    assert by_key[index_key].action == "uploaded"
    assert b.get_object(index_key).read() == original
    assert third.files_uploaded == 2
    assert {f.skipped_by for f in third.files if f.action == "skipped"} == {"manifest"}

    # a file touched without a change: verified by its CRC-64 once (nothing sent), then by the manifest again
    model_json = model / "1623831335/model.json"
    os.utime(model_json, ns=(model_json.stat().st_atime_ns, model_json.stat().st_mtime_ns + 1_000_000))
    fourth = upload_model.fn(spec, creds, checkpoint_dir=ck)
    assert fourth.bytes_sent == 0
    assert {f.key: f.skipped_by for f in fourth.files}[prefix + "1623831335/model.json"] == "crc64"
    assert {f.skipped_by for f in upload_model.fn(spec, creds, checkpoint_dir=ck).files} == {"manifest"}


# ---- resume across a restart of the service ----------------------------------------------------------------------
def _creds_of(info: dict) -> AlibabaCloudCredentials:
    return AlibabaCloudCredentials(access_key_id=info["access_key_id"], access_key_secret=info["access_key_secret"],
                                   region_id=info["region"], oss_endpoint=info["oss_endpoint"])


def _interrupt_after(parts: int, part: int):
    class Interrupted(Exception):
        pass

    def hook(key: str, done: int, total: int) -> None:
        if key.endswith("variables.data-00000-of-00001") and done >= parts * part:
            raise Interrupted(f"stopped at {done} bytes")

    return Interrupted, hook


def test_an_upload_interrupted_by_a_sandbox_restart_resumes_sending_only_the_missing_parts(fresh_sandbox, tmp_path):
    from sandbox.runner import Sandbox

    model = tmp_path / "chnsenticorp"
    part, size = 1 * MiB, 12 * MiB
    generate_demo_model(model, size_bytes=size, shard_bytes=size)
    big = model / "1623831335/variables/variables.data-00000-of-00001"
    bucket = _bucket_name("restart")
    spec = _spec(model, bucket, upload_part_size=part, multipart_threshold=4 * MiB, upload_threads=1)
    key = spec.names.model_oss_prefix + "1623831335/variables/variables.data-00000-of-00001"
    ck = tmp_path / "ck"
    Interrupted, stop_after_five = _interrupt_after(5, part)
    with pytest.raises(Interrupted):
        upload_model.fn(spec, _creds_of(fresh_sandbox.info), checkpoint_dir=ck, progress_hook=stop_after_five,
                        file_workers=1)
    old_endpoint = fresh_sandbox.info["oss_endpoint"]
    fresh_sandbox.stop()

    # The restarted sandbox would listen where it did (sandbox/listen.py); holding its old OSS port makes it move,
    # as an endpoint may (another region, an internal/public switch): the checkpoint must not depend on it.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", urlparse(old_endpoint).port))
    squatter.listen()
    again = Sandbox(fresh_sandbox.state_dir, speed=50.0)
    info = again.start()
    try:
        assert info["oss_endpoint"] != old_endpoint  # a new port
        creds = _creds_of(info)
        b = creds.get_oss_bucket(bucket)
        (upload,) = list(oss2.MultipartUploadIterator(b))
        assert len(list(oss2.PartIterator(b, key, upload.upload_id))) >= 5  # what the server holds
        reported: list[int] = []
        report = upload_model.fn(spec, creds, checkpoint_dir=ck, file_workers=1,
                                 progress_hook=lambda k, done, total: reported.append(done) if k == key else None)
        result = next(f for f in report.files if f.key == key)
        assert result.action == "uploaded" and result.bytes_sent == size - 5 * part
        assert reported[0] == 5 * part  # oss2 started from the parts on the server
        assert b.head_object(key).server_crc == crc64_file(big)
        assert list(oss2.MultipartUploadIterator(b)) == []
        assert not list(ck.rglob("*--*"))
    finally:
        again.stop()
        squatter.close()


def test_the_multipart_upload_of_an_abandoned_checkpoint_is_aborted(creds, model, tmp_path):
    part, size = 1 * MiB, 12 * MiB
    generate_demo_model(model, size_bytes=size, shard_bytes=size)
    big = model / "1623831335/variables/variables.data-00000-of-00001"
    bucket = _bucket_name("orphan")
    spec = _spec(model, bucket, upload_part_size=part, multipart_threshold=4 * MiB, upload_threads=1)
    ck = tmp_path / "ck"
    Interrupted, stop_after_five = _interrupt_after(5, part)
    with pytest.raises(Interrupted):
        upload_model.fn(spec, creds, checkpoint_dir=ck, progress_hook=stop_after_five, file_workers=1)
    b = creds.get_oss_bucket(bucket)
    (stale,) = list(oss2.MultipartUploadIterator(b))
    # the file changes before the re-run: its checkpoint cannot be resumed
    data = bytearray(big.read_bytes())
    data[:8] = b"changed!"
    big.write_bytes(bytes(data))
    report = upload_model.fn(spec, creds, checkpoint_dir=ck)
    key = spec.names.model_oss_prefix + "1623831335/variables/variables.data-00000-of-00001"
    assert next(f for f in report.files if f.key == key).bytes_sent == size
    assert b.head_object(key).server_crc == crc64_file(big)
    assert list(oss2.MultipartUploadIterator(b)) == []  # the stale upload was aborted, not left behind
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        list(oss2.PartIterator(b, key, stale.upload_id))
