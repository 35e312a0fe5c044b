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


# --- `elastic-inference demo --rollout` ---------------------------------------------------------------------------
ROLLOUT_VERSIONS = {"v1": (1623831335, 0.0), "v2": (1623831400, 0.0), "v3": (1623831500, 0.3)}
USERS_RPS = 10.0


def rollout_demo_model(base: Path) -> Path:
    """v1 and v2 healthy, v3 failing 30% of its computations (``serving.error_rate`` in its model files)."""
    from core.demo_model import generate_demo_model

    for seed, (version, error_rate) in enumerate(ROLLOUT_VERSIONS.values()):
        if not (base / str(version) / "model.json").exists():
            generate_demo_model(base, version=version, seed=seed, error_rate=error_rate)
    return base


def rollout_demo_spec(spec_path: Path, base: Path, label: str) -> Any:
    """The example spec serving one version of the rollout demo model, with short stress test and steps."""
    import yaml

    from core.spec import DeploySpec

    data = yaml.safe_load(spec_path.read_text()) or {}
    version = ROLLOUT_VERSIONS[label][0]
    data["model"].update({"local_dir": str(base), "version_policy": f"specific:{version}"})
    data["serving"]["version"] = label
    data["load_test"]["stages"] = [{"duration_s": 10, "users": 5, "spawn_rate": 5},
                                   {"duration_s": 40, "users": 40, "spawn_rate": 10}]
    data["rollout"] = {**(data.get("rollout") or {}), "steps": [10, 50], "step_seconds": 20, "drain_seconds": 5}
    return DeploySpec.parse(data, source=f"{spec_path} ({label})")


class UserTraffic:
    """Steady user requests through the main Ingress (no canary header) in a thread: what users would see."""

    def __init__(self, endpoint: Any, spec: Any) -> None:
        import threading

        self.spec = spec.model_copy(update={"rollout": spec.rollout.model_copy(update={"analysis_rps": USERS_RPS})})
        self.endpoint, self.stop = endpoint, threading.Event()
        self.result: tuple[int, int, list[float], str | None] = (0, 0, [], None)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tasks.rollout.analysis import send_requests

        self.result = send_requests(self.endpoint, self.spec, 24 * 3600, stop=self.stop)

    def __enter__(self) -> UserTraffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def run_rollout_demo(spec_path: Path = DEFAULT_SPEC, state_dir: Path = REPO / ".sandbox", speed: float = 10.0,
                     keep: bool = False, console: Console | None = None) -> None:
    """Deploy v1, then, under steady user traffic, roll out a good v2 (promoted) and a bad v3 (rolled back)."""
    console = console or Console()
    _prefect_env()
    from flows.deploy import deploy, summarize
    from flows.rollout import RolloutFailed

    from .sandbox_profile import save_sandbox_blocks

    base = rollout_demo_model(state_dir / "models" / "rollout-demo")
    console.print(f"[bold]rollout demo model[/] {base}: v1, v2 healthy; v3 fails 30% of its requests")
    with running_sandbox(state_dir, speed, keep) as info:
        block = save_sandbox_blocks(info)
        first = deploy(spec=rollout_demo_spec(spec_path, base, "v1"), cluster_block=block, show_progress=False)
        console.print(f"[bold]v1[/] {first.run_kind}: serving at {first.endpoint.url} (Host {first.endpoint.host})")
        outcomes = []
        with UserTraffic(first.endpoint, rollout_demo_spec(spec_path, base, "v1")) as users:
            for label in ("v2", "v3"):
                try:
                    result = deploy(spec=rollout_demo_spec(spec_path, base, label), cluster_block=block)
                    outcomes.append((label, "promoted", summarize(result).get("rollout", "")))
                except RolloutFailed as failed:
                    outcomes.append((label, "rolled back", failed.report.reason))
        table = Table(title="elastic-inference demo --rollout")
        for col in ("version", "outcome", "why"):
            table.add_column(col)
        for row in outcomes:
            table.add_row(*row)
        console.print(table)
        sent, failures, _, first_failure = users.result
        console.print(f"[bold]users[/] {sent} requests at {USERS_RPS:g}/s through the main Ingress during both "
                      f"rollouts, {failures} failed" + (f" (first: {first_failure})" if first_failure else ""))
        console.print("reports, with rollout.md and rollout.png for each rollout: reports/")
        if keep:
            console.print(f"sandbox kept running: `elastic-inference sandbox down --dir {state_dir}` stops it")
