"""`elastic-inference sandbox up --detach | status | down` as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import oss2

CLI = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, check=check, timeout=120)


def test_up_status_down_and_state_survives(tmp_path: Path) -> None:
    state = tmp_path / "sb"
    up = run("sandbox", "up", "--detach", "--dir", str(state), "--speed", "20", "--pods", "real-time")
    try:
        info_path = state / "sandbox.json"
        info = json.loads(info_path.read_text())
        for key in ("oss_endpoint", "cs_endpoint", "region", "cluster_id", "access_key_id", "access_key_secret"):
            assert info[key], key
        assert stat.S_IMODE(os.stat(info_path).st_mode) == 0o600
        # Loopback only: every endpoint is 127.0.0.1, and the secret is not echoed by `up`.
        for key in ("oss_endpoint", "cs_endpoint"):
            assert urlparse(info[key]).hostname == "127.0.0.1"
        assert info["access_key_secret"] not in up.stdout + up.stderr

        status = run("sandbox", "status", "--dir", str(state), "--json")
        shown = json.loads(status.stdout)
        assert shown["running"] is True
        assert shown["access_key_secret"] == "********"
        assert info["access_key_secret"] not in status.stdout

        # Something stored before `down` is still there after the next `up`.
        auth = oss2.Auth(info["access_key_id"], info["access_key_secret"])
        bucket = oss2.Bucket(auth, info["oss_endpoint"], "cli-survives")
        bucket.create_bucket()
        bucket.put_object("kept.txt", b"still here")
    finally:
        run("sandbox", "down", "--dir", str(state))

    gone = run("sandbox", "status", "--dir", str(state), check=False)
    assert gone.returncode == 3
    port = urlparse(info["oss_endpoint"]).port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the sandbox still listens after `down`"

    run("sandbox", "up", "--detach", "--dir", str(state))
    try:
        again = json.loads((state / "sandbox.json").read_text())
        assert again["cluster_id"] == info["cluster_id"]
        # the endpoints stay where they were (an OSS PersistentVolume names its url, immutably)
        assert {k: again[k] for k in again if k.endswith("endpoint")} == \
            {k: info[k] for k in info if k.endswith("endpoint")}
        assert again["access_key_id"] == info["access_key_id"]
        auth = oss2.Auth(again["access_key_id"], again["access_key_secret"])
        assert oss2.Bucket(auth, again["oss_endpoint"], "cli-survives").get_object("kept.txt").read() == b"still here"
    finally:
        run("sandbox", "down", "--dir", str(state))


def test_second_up_in_same_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "sb"
    run("sandbox", "up", "--detach", "--dir", str(state))
    try:
        second = run("sandbox", "up", "--detach", "--dir", str(state), check=False)
        assert second.returncode != 0
        assert "already running" in second.stdout + second.stderr
    finally:
        run("sandbox", "down", "--dir", str(state))


def test_bad_speed_is_refused_before_start(tmp_path: Path) -> None:
    res = run("sandbox", "up", "--dir", str(tmp_path / "sb"), "--speed", "0", check=False)
    assert res.returncode != 0
    assert "--speed" in res.stdout + res.stderr
    assert not (tmp_path / "sb" / "sandbox.json").exists()


def test_an_unknown_pods_mode_is_refused_before_start(tmp_path: Path) -> None:
    res = run("sandbox", "up", "--detach", "--dir", str(tmp_path / "sb"), "--pods", "realtime", check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "--pods" in out and "real-time" in out and "Traceback" not in out, out
    assert not (tmp_path / "sb").exists()


def test_a_stale_pid_of_another_live_process_is_neither_reported_nor_killed(tmp_path: Path) -> None:
    """Issue 14: the pid file names a PID that now belongs to an unrelated process (here a `sleep`)."""
    state = tmp_path / "sb"
    state.mkdir()
    other = subprocess.Popen(["sleep", "300"])
    try:
        (state / "sandbox.pid").write_text(str(other.pid))
        status = run("sandbox", "status", "--dir", str(state), check=False)
        assert status.returncode == 3, status.stdout + status.stderr
        assert "no sandbox running" in status.stdout
        assert "removed the stale pid file" in status.stderr and str(other.pid) in status.stderr
        assert not (state / "sandbox.pid").exists()

        (state / "sandbox.pid").write_text(str(other.pid))
        down = run("sandbox", "down", "--dir", str(state), check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "removed the stale pid file" in down.stdout and "no sandbox running" in down.stdout
        assert other.poll() is None, "sandbox down killed an unrelated process"
    finally:
        other.kill()
        other.wait()


def test_a_pid_file_from_a_process_that_reused_the_pid_is_stale(tmp_path: Path) -> None:
    """Same PID, another start time: the pid file was written by a process that has exited."""
    state = tmp_path / "sb"
    state.mkdir()
    other = subprocess.Popen(["sleep", "300"])
    try:
        (state / "sandbox.pid").write_text(f"{other.pid} 1")  # started at tick 1: not this process
        down = run("sandbox", "down", "--dir", str(state), check=False)
        assert "now belongs to another process" in down.stdout, down.stdout + down.stderr
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_demo_with_a_model_dir_holding_no_model_is_refused_before_any_sandbox_starts(tmp_path: Path) -> None:
    empty = tmp_path / "mine"
    (empty / "1").mkdir(parents=True)
    state = tmp_path / "sb"
    r = run("demo", "--model", str(empty), "--dir", str(state), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "local_dir" in r.stderr and "mine/1' is empty" in r.stderr, r.stdout + r.stderr
    assert not (state / "sandbox.json").exists()
