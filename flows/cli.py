"""The `elastic-inference` command line: the sandbox, the deploy flow, and the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
sandbox_app = typer.Typer(no_args_is_help=True, help="The local emulation of ACK, OSS, ECS/ESS and SLS.")
app.add_typer(sandbox_app, name="sandbox")
console = Console()

DirOpt = Annotated[Path, typer.Option("--dir", help="Sandbox state directory")]


@sandbox_app.command("up")
def sandbox_up(
    dir: DirOpt = Path(".sandbox"),
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 10.0,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background")] = False,
    faults: Annotated[Path | None, typer.Option(help="Fault injection file (YAML)")] = None,
) -> None:
    """Start the sandbox; its endpoints and credentials go to DIR/sandbox.json (mode 0600)."""
    from sandbox.daemon import run_foreground, running_pid, start_detached

    if speed <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--speed")
    if (pid := running_pid(dir)) is not None:
        console.print(f"[yellow]a sandbox is already running in {dir} (pid {pid})[/]")
        raise typer.Exit(1)
    extra = ["--faults", str(faults)] if faults else []
    if detach:
        info = start_detached(dir, speed, extra)
        _print_info(info)
        console.print(f"stop it with: elastic-inference sandbox down --dir {dir}")
        return
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console.print(f"sandbox starting in {dir.resolve()} (Ctrl-C to stop)")
    run_foreground(dir, speed, {"faults": str(faults)} if faults else {})


@sandbox_app.command("down")
def sandbox_down(dir: DirOpt = Path(".sandbox")) -> None:
    """Stop the background sandbox of DIR (its state stays for the next `up`)."""
    from sandbox.daemon import stop_detached

    if stop_detached(dir):
        console.print(f"sandbox in {dir} stopped")
    else:
        console.print(f"no sandbox running in {dir}")


@sandbox_app.command("status")
def sandbox_status(
    dir: DirOpt = Path(".sandbox"),
    as_json: Annotated[bool, typer.Option("--json", help="Print sandbox.json (secret masked)")] = False,
) -> None:
    """Say whether the sandbox of DIR runs, and where its endpoints are."""
    from sandbox.daemon import running_pid

    pid = running_pid(dir)
    info_path = dir / "sandbox.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    masked = {k: ("********" if "secret" in k or "token" in k else v) for k, v in info.items()}
    if as_json:
        print(json.dumps({"running": pid is not None, **masked}, indent=2))
        raise typer.Exit(0 if pid else 3)
    if pid is None:
        console.print(f"no sandbox running in {dir}" + (" (state kept from a previous run)" if info else ""))
        raise typer.Exit(3)
    console.print(f"sandbox running in {dir} (pid {pid})")
    _print_info(masked)


@app.command("demo")
def demo(
    spec: Annotated[Path | None, typer.Option(help="Spec file (default examples/sandbox.yaml)")] = None,
    dir: DirOpt = Path(".sandbox"),
    speed: Annotated[float, typer.Option(help="Sandbox speed (simulated seconds per real second)")] = 10.0,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the sandbox running afterwards")] = False,
) -> None:
    """Start a sandbox, run the whole deploy flow on it, print what happened, stop the sandbox."""
    from .demo import DEFAULT_SPEC, run_demo

    run_demo(spec or DEFAULT_SPEC, dir, speed=speed, keep=keep, console=console)


@app.command("deploy")
def deploy_cmd(
    spec: Annotated[Path, typer.Argument(help="DeploySpec YAML or JSON file")],
    cluster_block: Annotated[
        str | None, typer.Option(help="Name of the saved `ACK Cluster` block to deploy to")
    ] = None,
    sandbox_dir: Annotated[
        Path | None, typer.Option(help="Deploy to the running sandbox of this directory (saves its blocks)")
    ] = None,
    plan: Annotated[
        bool, typer.Option("--plan", help="Print every ACK request and manifest as YAML; call nothing")
    ] = False,
    server: Annotated[
        bool, typer.Option("--server", help="With --plan: send the manifests as server-side dry runs")
    ] = False,
) -> None:
    """Run the deploy flow with SPEC against a saved cluster block, or against a running sandbox."""
    from .spec import DeploySpec, SpecError

    try:
        parsed = DeploySpec.from_file(spec)
    except SpecError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if server and not plan:
        raise typer.BadParameter("--server only goes with --plan", param_hint="--server")
    if plan:
        _plan(parsed, cluster_block, sandbox_dir, server)
        return
    from .deploy import deploy, summarize

    if (cluster_block is None) == (sandbox_dir is None):
        raise typer.BadParameter("give exactly one of --cluster-block or --sandbox-dir")
    if sandbox_dir is not None:
        from .sandbox_profile import read_sandbox_info, save_sandbox_blocks

        cluster_block = save_sandbox_blocks(read_sandbox_info(sandbox_dir))
    result = deploy(spec=parsed, cluster_block=cluster_block, show_progress=True)
    for key, value in summarize(result).items():
        console.print(f"{key:<10} {value}")


def _plan(spec, cluster_block: str | None, sandbox_dir: Path | None, server: bool) -> None:
    from .plan import render_plan, server_dry_run

    cluster = None
    if sandbox_dir is not None:
        from .sandbox_profile import cluster_from_sandbox, read_sandbox_info

        cluster = cluster_from_sandbox(read_sandbox_info(sandbox_dir))
    elif cluster_block is not None:
        from blocks import AckCluster

        cluster = AckCluster.load(cluster_block)
    print(render_plan(spec, cluster), end="")
    if server:
        if cluster is None:
            raise typer.BadParameter("--plan --server needs --cluster-block or --sandbox-dir")
        for result in server_dry_run(spec, cluster):
            console.print(f"# server dry run: {result}", highlight=False, soft_wrap=True)


def _print_info(info: dict) -> None:
    for key in sorted(info):
        if key.endswith("_endpoint") or key in ("region", "cluster_id", "access_key_id", "kubeconfig", "speed"):
            console.print(f"  {key:<18} {info[key]}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
