"""`elastic-inference sandbox up --detach | down | status`: the sandbox as a background process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .runner import PID_FILE, SANDBOX_JSON, Sandbox


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat, proc(5)); None if gone.

    A PID is reused once its process has exited; (PID, start time) names one process for the life of the host.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()[19]


def pid_record(pid: int) -> str:
    """What the pid file holds: the PID and its start time."""
    return f"{pid} {_start_time(pid) or ''}".strip()


def check_pid_file(state_dir: Path) -> tuple[int | None, str | None]:
    """(PID of this state dir's sandbox or None, a message when a stale pid file was removed).

    The PID counts only when it is alive and is the process that wrote the file: same start time (or, for a
    file without one, a command line that runs the sandbox). Otherwise the file is stale, whatever runs under
    that PID now, and it is removed.
    """
    pid_file = Path(state_dir) / PID_FILE
    try:
        fields = pid_file.read_text().split()
    except OSError:
        return None, None
    try:
        pid = int(fields[0])
        recorded = fields[1] if len(fields) > 1 else None
    except (IndexError, ValueError):
        pid, recorded = None, None
    why = None
    if pid is None or pid <= 0:
        why = "it holds no PID"
    elif not _pid_alive(pid):
        why = f"process {pid} is gone"
    elif Path("/proc/self/stat").exists():
        started = _start_time(pid)
        if recorded is not None and started != recorded:
            why = f"PID {pid} now belongs to another process (started at tick {started}, not {recorded})"
        elif recorded is None:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                cmdline = []
            if b"sandbox" not in b" ".join(cmdline):
                why = f"PID {pid} now belongs to another process ({b' '.join(cmdline)[:80].decode(errors='replace')})"
    if why is None:
        return pid, None
    pid_file.unlink(missing_ok=True)
    return None, f"removed the stale pid file {pid_file}: {why}"


def running_pid(state_dir: Path) -> int | None:
    return check_pid_file(state_dir)[0]


def start_detached(state_dir: Path, speed: float, extra_args: list[str] | None = None,
                   timeout: float = 60.0) -> dict[str, Any]:
    """Start ``python -m sandbox up`` in its own session; return sandbox.json once the new process wrote it."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if (pid := running_pid(state_dir)) is not None:
        raise RuntimeError(f"a sandbox is already running in {state_dir} (pid {pid}); stop it with `sandbox down`")
    info_path = state_dir / SANDBOX_JSON
    info_path.unlink(missing_ok=True)
    log = open(state_dir / "sandbox.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up", "--dir", str(state_dir), "--speed", str(speed), *(extra_args or [])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (state_dir / PID_FILE).write_text(pid_record(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (state_dir / PID_FILE).unlink(missing_ok=True)
            tail = (state_dir / "sandbox.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sandbox exited with code {proc.returncode}:\n{tail}")
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info.get("pid") == proc.pid:
                return info
        time.sleep(0.05)
    proc.terminate()
    raise TimeoutError(f"sandbox did not start within {timeout}s (see {state_dir / 'sandbox.log'})")


def stop_detached(state_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the background sandbox of ``state_dir``. False if none was running."""
    state_dir = Path(state_dir).resolve()
    pid = running_pid(state_dir)
    if pid is None:
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    return True


def run_foreground(state_dir: Path, speed: float, options: dict[str, Any] | None = None) -> None:
    """Run the sandbox in this process until SIGINT/SIGTERM, holding DIR/sandbox.pid while it runs."""
    sandbox = Sandbox(state_dir, speed=speed, options=options or {})
    sandbox.state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = sandbox.state_dir / PID_FILE
    record = pid_record(os.getpid())
    pid_file.write_text(record)
    try:
        sandbox.run_foreground()
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == record:
            pid_file.unlink()
