"""`make demo` / `elastic-inference demo`: the deploy flow on a sandbox, from nothing, in one command.

Starts a sandbox (``.sandbox/``), generates the demo model where ``examples/sandbox.yaml`` expects it, saves the
Prefect blocks for the sandbox, runs the deploy flow, prints what it did, and stops the sandbox unless ``keep``.

``--model DIR`` rehearses with the user's own model instead: ``DIR`` is a TF Serving model base directory
(``DIR/<version>/saved_model.pb``); every version found is served (policy ``latest`` unless ``--version-policy``),
under ``--model-name`` (default: the spec's). A SavedModel is executed by real TensorFlow in the sandbox, which
needs the extra: ``pip install 'elastic-inference[tensorflow]'``.
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


def spec_with_model(spec_path: Path, model_dir: Path, model_name: str | None = None,
                    version_policy: str = "latest") -> Any:
    """The spec of ``spec_path`` with its model replaced by the user's ``model_dir`` (checked like any spec)."""
    import yaml

    from core.spec import DeploySpec

    data = yaml.safe_load(spec_path.read_text()) or {}
    model = data.setdefault("model", {})
    model["local_dir"] = str(Path(model_dir).expanduser().resolve())
    model["version_policy"] = version_policy
    if model_name:
        model["name"] = model_name
    return DeploySpec.parse(data, source=f"{spec_path} with --model {model_dir}")


def require_tensorflow_for(model_dir: Path) -> None:
    """A SavedModel needs TensorFlow where the sandbox runs: say how to install it before anything starts."""
    import importlib.util

    from core.spec import SpecError

    if any(Path(model_dir).expanduser().glob("*/saved_model.pb*")) and importlib.util.find_spec("tensorflow") is None:
        raise SpecError(f"--model {model_dir} holds a TensorFlow SavedModel: the sandbox serves it with real TensorFlow, "
                         "which is not installed here; install the extra: pip install 'elastic-inference[tensorflow]'")


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
    model: Path | None = None,
    model_name: str | None = None,
    version_policy: str = "latest",
) -> Any:
    console = console or Console()
    _prefect_env()
    from core.spec import DeploySpec
    from flows.deploy import deploy, summarize

    from .sandbox_profile import save_sandbox_blocks

    if model is not None:
        require_tensorflow_for(model)
        spec = spec_with_model(spec_path, model, model_name, version_policy)
        console.print(f"[bold]your model[/] {spec.model.local_dir} (served as {spec.model.name!r}, "
                      f"versions: {spec.model.version_policy})")
    else:
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
