"""Benchmark: upload a generated model directory to the sandbox OSS and compare with a plain copy on the same disk.

    .venv/bin/python bench/upload.py [--size-mb 1024] [--small-files 200] [--dir DIR]

Generates a demo model of ``--size-mb`` MiB (a few big variable shards plus many small asset files) in a temporary
directory, starts a sandbox as its own process (``elastic-inference sandbox up``'s detached server: OSS is a service
apart from its client, and a server sharing the client's interpreter would share its GIL; ``--in-process`` runs it in
this process instead; either way its objects land on the same disk), uploads the model with ``upload_model``
(resumable multipart for the big shards, parallel files), then copies the same files with ``shutil.copytree`` +
fsync and prints both throughputs and their ratio. Then it uploads the unchanged model again (the upload manifest
decides: a ``stat`` per file and one listing of the prefix, nothing read) and prints that run's time and its
speed-up over the upload, both measured in this one run as the task's wall time. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from blocks.alibaba import AlibabaCloudCredentials  # noqa: E402
from core.demo_model import generate_demo_model  # noqa: E402
from core.spec import DeploySpec  # noqa: E402
from sandbox.daemon import start_detached, stop_detached  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402
from tasks.model import upload_model  # noqa: E402

MiB = 1024 * 1024


def make_model(base: Path, size_mb: int, small_files: int) -> tuple[int, int]:
    """A demo model of about ``size_mb`` MiB: big shards of at most 256 MiB plus ``small_files`` files of 64 KiB."""
    small_size = 64 * 1024
    small_total = small_files * small_size
    vdir = generate_demo_model(base, size_bytes=max(size_mb * MiB - small_total, 4 * MiB), shard_bytes=256 * MiB)
    assets = vdir / "assets" / "extra"
    assets.mkdir(parents=True, exist_ok=True)
    for i in range(small_files):
        (assets / f"asset-{i:04d}.bin").write_bytes(os.urandom(small_size))
    files = [p for p in base.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def plain_copy(src: Path, dst: Path) -> float:
    """``shutil.copytree`` + fsync of every file (durable, like an object store's write); returns seconds."""
    t0 = time.perf_counter()
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="model size in MiB (default 1024)")
    ap.add_argument("--small-files", type=int, default=200, help="number of 64 KiB asset files (default 200)")
    ap.add_argument("--part-mb", type=int, default=8, help="multipart part size in MiB (default 8)")
    ap.add_argument("--threads", type=int, default=4, help="parallel parts per file (default 4)")
    ap.add_argument("--file-workers", type=int, default=4, help="files in parallel (default 4)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary directory)")
    ap.add_argument("--in-process", action="store_true", help="run the sandbox in this process (shares the GIL)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ei-bench-", dir=args.dir))
    try:
        base = work / "model" / "chnsenticorp"
        t0 = time.perf_counter()
        nfiles, nbytes = make_model(base, args.size_mb, args.small_files)
        print(f"generated {nfiles} files, {nbytes / MiB:.0f} MiB in {time.perf_counter() - t0:.1f}s under {work}")

        sb = Sandbox(work / "sandbox", speed=10.0) if args.in_process else None
        info = sb.start() if sb is not None else start_detached(work / "sandbox", 10.0)
        try:
            creds = AlibabaCloudCredentials(
                access_key_id=info["access_key_id"], access_key_secret=info["access_key_secret"],
                region_id=info["region"], oss_endpoint=info["oss_endpoint"],
            )
            spec = DeploySpec.parse({
                "model": {"local_dir": str(base), "upload_part_size": args.part_mb * MiB,
                          "multipart_threshold": 2 * args.part_mb * MiB, "upload_threads": args.threads},
                "storage": {"bucket": "bench-models"},
            })
            ck = work / "checkpoints"
            t0 = time.perf_counter()
            first = upload_model.fn(spec, creds, checkpoint_dir=ck, file_workers=args.file_workers)
            upload_s = time.perf_counter() - t0
            copy_s = plain_copy(base, work / "copy")
            t0 = time.perf_counter()
            second = upload_model.fn(spec, creds, checkpoint_dir=ck, file_workers=args.file_workers)
            rerun_s = time.perf_counter() - t0
        finally:
            if sb is not None:
                sb.stop()
            else:
                stop_detached(work / "sandbox")

        upload_mb_s = first.bytes_sent / 1e6 / upload_s
        copy_mb_s = nbytes / 1e6 / copy_s
        where = "this process" if args.in_process else "its own process"
        print()
        print(f"upload:      {first.files_uploaded} files, {first.bytes_sent / 1e6:.0f} MB in {upload_s:.2f}s"
              f" = {upload_mb_s:.1f} MB/s (sandbox OSS in {where})")
        print(f"plain copy:  {nfiles} files, {nbytes / 1e6:.0f} MB in {copy_s:.2f}s = {copy_mb_s:.1f} MB/s"
              " (shutil.copytree + fsync, same disk)")
        print(f"ratio:       upload / plain copy = {upload_mb_s / copy_mb_s:.2f}")
        by = sorted({getattr(f, "skipped_by", None) or "-" for f in second.files})
        print(f"re-run:      {second.files_skipped}/{second.files_total} files unchanged (decided by: "
              f"{', '.join(by)}), {second.bytes_sent} bytes sent, {rerun_s:.3f}s")
        print(f"speed-up:    unchanged re-run is {upload_s / rerun_s:.0f}x faster than the upload")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
