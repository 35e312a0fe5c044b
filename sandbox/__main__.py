"""``python -m sandbox up --dir DIR --speed X``: the sandbox in the foreground (what ``--detach`` starts)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .runner import DEFAULT_DIR, DEFAULT_SPEED, PID_FILE, Sandbox


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    up.add_argument("--speed", type=float, default=DEFAULT_SPEED)
    up.add_argument("--faults", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options = {"faults": str(args.faults)} if args.faults else {}
    sandbox = Sandbox(args.dir, speed=args.speed, options=options)
    pid_file = sandbox.state_dir / PID_FILE
    sandbox.state_dir.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(os.getpid()))
    try:
        sandbox.run_foreground()
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()


if __name__ == "__main__":
    main()
