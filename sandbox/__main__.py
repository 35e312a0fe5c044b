"""``python -m sandbox up --dir DIR --speed X``: the sandbox in the foreground (what ``--detach`` starts)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .clock import check_speed
from .daemon import run_foreground
from .runner import DEFAULT_DIR, DEFAULT_SPEED
from .timings import POD_TIME


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    up.add_argument("--speed", type=float, default=DEFAULT_SPEED)
    up.add_argument("--faults", type=Path, default=None)
    up.add_argument("--pods", choices=POD_TIME, default="simulated")
    args = parser.parse_args()
    try:
        check_speed(args.speed)
    except ValueError as e:
        parser.error(f"--speed: {e}")  # exit 2, one line, before the state directory is touched
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_foreground(args.dir, args.speed, {"pods": args.pods} | ({"faults": str(args.faults)} if args.faults else {}))


if __name__ == "__main__":
    main()
