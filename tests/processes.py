"""Servers the tests start as processes of their own: a free loopback port, and a process group stopped whole.

Importable from every test module (pytest puts ``tests/`` on ``sys.path`` for the root ``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A background process in its own process group, logging to a file; stopped by its group id."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def text(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.text()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.log.close()
