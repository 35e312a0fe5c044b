"""`make demo` / `elastic-inference demo`: the deploy flow on a sandbox, from nothing, in one command.

Starts a sandbox (``.sandbox/``), generates the demo model where ``examples/sandbox.yaml`` expects it, saves the
Prefect blocks for the sandbox, runs the deploy flow, prints what it did, and stops the sandbox unless ``keep``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO / "examples" / "sandbox.yaml"
DEMO_MODEL_VERSION = 1623831335


@contextlib.contextmanager
def running_sandbox(state_dir: Path, speed: float, keep: bool) -> Iterator[dict[str, Any]]:
    """A sandbox for the length of the block; with ``keep`` a background one that outlives the command."""
    from sandbox.daemon import running_pid, start_detached
    from sandbox.runner import Sandbox

    from .sandbox_profile import read_sandbox_info

    if running_pid(state_dir) is not None:
        yield read_sandbox_info(state_dir)  # reuse the one already running (e.g. after `demo --keep`)
        return
    if keep:
        yield start_detached(state_dir, speed)
        return
    sb = Sandbox(state_dir, speed=speed)
    info = sb.start()
    try:
        yield info
    finally:
        sb.stop()


def ensure_demo_model(spec_path: Path) -> Path:
    """Generate the demo model at the spec's ``model.local_dir`` unless it is already there."""
    import yaml

    from core.demo_model import generate_demo_model

    raw = yaml.safe_load(spec_path.read_text()) or {}
    local_dir = (raw.get("model") or {}).get("local_dir")
    if not local_dir:
        raise ValueError(f"{spec_path}: model.local_dir is required for the demo")
    base = (spec_path.parent / local_dir).resolve()
    if not (base / str(DEMO_MODEL_VERSION) / "model.json").exists():
        generate_demo_model(base, version=DEMO_MODEL_VERSION)
    return base


def _prefect_env() -> None:
    # With no Prefect server configured, Prefect starts a temporary one in this process; on a busy 2-core
    # machine its default 20 s start-up timeout is too short.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run_demo(
    spec_path: Path = DEFAULT_SPEC,
    state_dir: Path = REPO / ".sandbox",
    speed: float = 10.0,
    keep: bool = False,
    console: Console | None = None,
) -> Any:
    console = console or Console()
    _prefect_env()
    from core.spec import DeploySpec
    from flows.deploy import deploy, summarize

    from .sandbox_profile import save_sandbox_blocks

    model_dir = ensure_demo_model(spec_path)
    console.print(f"[bold]demo model[/] {model_dir}")
    spec = DeploySpec.from_file(spec_path)
    with running_sandbox(state_dir, speed, keep) as info:
        console.print(
            f"[bold]sandbox[/] {state_dir} — ACK {info['cs_endpoint']}, OSS {info['oss_endpoint']}, "
            f"cluster {info['cluster_id']}, speed x{info.get('speed', speed)}"
        )
        block = save_sandbox_blocks(info)
        result = deploy(spec=spec, cluster_block=block, show_progress=True)
        table = Table(title="elastic-inference deploy", show_header=False)
        for key, value in summarize(result).items():
            table.add_row(key, str(value))
        console.print(table)
        if keep:
            console.print(f"sandbox kept running: `elastic-inference sandbox down --dir {state_dir}` stops it")
    return result
