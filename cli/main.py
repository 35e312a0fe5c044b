"""The `elastic-inference` command line: the sandbox, the deploy flow, and the demo."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.exceptions import TyperException

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
sandbox_app = typer.Typer(no_args_is_help=True, help="The local emulation of ACK, OSS, ECS/ESS and SLS.")
app.add_typer(sandbox_app, name="sandbox")
console = Console()
err_console = Console(stderr=True)

_debug = False
ERROR_LINE_MAX = 800


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error instead of its one-line summary")
    ] = False,
) -> None:
    global _debug
    _debug = debug
    if not debug:
        import logging

        # The ACK SDK logs every failed attempt at ERROR with its own wording; the retry loop already reports each
        # attempt (tasks/ack_api.py) and the final error is one line below.
        logging.getLogger("aliyunsdkcore").setLevel(logging.CRITICAL)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its own words (they name the file, field, object or endpoint), whitespace folded."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > ERROR_LINE_MAX:
        text = text[:ERROR_LINE_MAX] + " ..."
    return text


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Every error a user can cause (a bad spec, a missing file, a manifest the API server refuses, an endpoint
    that does not answer) ends the command with one line on stderr; ``--debug`` shows the traceback instead.
    Exit codes: 2 for input the command refuses (a bad spec or file), 1 for anything else."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from core.spec import SpecError

        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException, click.exceptions.Exit, click.ClickException):
            # typer's own exits and usage errors (it vendors click; plain click's, for older typer)
            raise
        except Exception as exc:
            if _debug:
                raise
            if isinstance(exc, SpecError):
                err_console.print(str(exc), markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            code = 2 if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                         PermissionError, UnicodeDecodeError, json.JSONDecodeError)) else 1
            err_console.print(f"error: {one_line(exc)} (--debug shows the traceback)", markup=False,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper


def _refuse(option: str, reason: str) -> typer.Exit:
    """One line naming the option and what is wrong with it (exit 2, as usage errors do); raise what it returns."""
    err_console.print(f"error: {option}: {' '.join(reason.split())}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _check_speed(speed: float) -> None:
    """Refuse a --speed the sandbox clock cannot run at (inf, nan, 1e308, <= 0) before anything starts."""
    from sandbox.clock import check_speed

    try:
        check_speed(speed)
    except ValueError as e:
        raise _refuse("--speed", str(e)) from None


DirOpt = Annotated[Path, typer.Option("--dir", help="Sandbox state directory")]


@sandbox_app.command("up")
@user_errors
def sandbox_up(
    dir: DirOpt = Path(".sandbox"),
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 10.0,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background")] = False,
    faults: Annotated[Path | None, typer.Option(help="Fault injection file (YAML)")] = None,
    pods: Annotated[str, typer.Option(help="simulated: pods start at the sandbox's speed; real-time: a pod's "
                                           "start, probes and grace period take real seconds (rehearse a rollout)")
                    ] = "simulated",
    save_blocks: Annotated[
        bool | None,
        typer.Option(
            "--save-blocks/--no-save-blocks",
            help="Save the Prefect blocks named `sandbox` for it (default: on when PREFECT_API_URL is set)",
        ),
    ] = None,
) -> None:
    """Start the sandbox; its endpoints and credentials go to DIR/sandbox.json (mode 0600)."""
    from sandbox.daemon import run_foreground, running_pid, start_detached

    if save_blocks is None:
        save_blocks = bool(os.environ.get("PREFECT_API_URL"))

    _check_speed(speed)
    from sandbox.timings import with_real_time_pods

    try:
        with_real_time_pods({"pods": pods}, speed)
    except ValueError as e:
        raise _refuse("--pods", str(e)) from None
    if faults is not None:
        from sandbox.faults import load_file

        try:
            load_file(faults)  # the whole reason in one line, before anything starts
        except ValueError as e:
            raise _refuse("--faults", str(e)) from None
    if (pid := running_pid(dir)) is not None:
        console.print(f"[yellow]a sandbox is already running in {dir} (pid {pid})[/]")
        raise typer.Exit(1)
    extra = (["--faults", str(faults)] if faults else []) + ["--pods", pods]
    options = {"pods": pods} | ({"faults": str(faults)} if faults else {})
    if detach:
        info = start_detached(dir, speed, extra)
        _print_info(info)
        if save_blocks:
            _save_sandbox_blocks(info)
        console.print(f"stop it with: elastic-inference sandbox down --dir {dir}")
        return
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    console.print(f"sandbox starting in {dir.resolve()} (Ctrl-C to stop)")
    if save_blocks:
        _save_blocks_when_ready(dir)
    run_foreground(dir, speed, options)


def _save_sandbox_blocks(info: dict) -> None:
    """Save the `sandbox` blocks (credentials + ACK cluster) on the configured Prefect server."""
    from .sandbox_profile import save_sandbox_blocks

    try:
        name = save_sandbox_blocks(info)
    except Exception as exc:  # noqa: BLE001 - the sandbox runs on without blocks; say why
        console.print(f"[yellow]could not save the Prefect blocks: {type(exc).__name__}: {exc}[/]")
        return
    console.print(f"Prefect blocks saved: AckCluster {name!r} and AlibabaCloudCredentials {name!r}")


def _save_blocks_when_ready(state_dir: Path, timeout: float = 120.0) -> None:
    """In the foreground the sandbox owns this thread: save the blocks from a helper thread once it wrote
    a fresh sandbox.json."""
    import threading
    import time

    started = time.time()
    info_path = state_dir / "sandbox.json"

    def wait_and_save() -> None:
        while time.time() - started < timeout:
            try:
                if info_path.stat().st_mtime >= started - 1:
                    _save_sandbox_blocks(json.loads(info_path.read_text()))
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        console.print("[yellow]the sandbox wrote no sandbox.json in time; Prefect blocks not saved[/]")

    threading.Thread(target=wait_and_save, name="save-sandbox-blocks", daemon=True).start()


@sandbox_app.command("down")
@user_errors
def sandbox_down(dir: DirOpt = Path(".sandbox")) -> None:
    """Stop the background sandbox of DIR (its state stays for the next `up`)."""
    from sandbox.daemon import check_pid_file, stop_detached

    if stale := check_pid_file(dir)[1]:
        console.print(f"[yellow]{stale}[/]", highlight=False)
    if stop_detached(dir):
        console.print(f"sandbox in {dir} stopped")
    else:
        console.print(f"no sandbox running in {dir}")


@sandbox_app.command("status")
@user_errors
def sandbox_status(
    dir: DirOpt = Path(".sandbox"),
    as_json: Annotated[bool, typer.Option("--json", help="Print sandbox.json (secret masked)")] = False,
) -> None:
    """Say whether the sandbox of DIR runs, and where its endpoints are."""
    from sandbox.daemon import check_pid_file

    pid, stale = check_pid_file(dir)
    if stale:
        err_console.print(stale, markup=False, highlight=False)
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
@user_errors
def demo(
    spec: Annotated[Path | None, typer.Option(help="Spec file (default examples/sandbox.yaml)")] = None,
    dir: DirOpt = Path(".sandbox"),
    speed: Annotated[float, typer.Option(help="Sandbox speed (simulated seconds per real second)")] = 10.0,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the sandbox running afterwards")] = False,
    model: Annotated[Path | None, typer.Option(
        help="Rehearse with your own model: a TF Serving base directory (DIR/<version>/saved_model.pb); "
             "SavedModels need pip install 'elastic-inference[tensorflow]'")] = None,
    model_name: Annotated[str | None, typer.Option(help="With --model: the name to serve it under")] = None,
    version_policy: Annotated[str, typer.Option(help="With --model: latest[:N] | all | specific:N[,N...]")]
        = "latest",
    rollout: Annotated[bool, typer.Option("--rollout", help="Deploy v1, then roll out a good v2 (promoted) and a "
                                          "bad v3 (rolled back) under steady user traffic")] = False,
) -> None:
    """Start a sandbox, run the whole deploy flow on it, print what happened, stop the sandbox."""
    from .demo import DEFAULT_SPEC, run_demo, run_rollout_demo

    _check_speed(speed)
    if rollout:
        if model is not None:
            raise typer.BadParameter("--rollout uses its own three-version demo model", param_hint="--model")
        run_rollout_demo(spec or DEFAULT_SPEC, dir, speed=speed, keep=keep, console=console)
        return
    run_demo(spec or DEFAULT_SPEC, dir, speed=speed, keep=keep, console=console, model=model,
             model_name=model_name, version_policy=version_policy)


@app.command("deploy")
@user_errors
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
    from core.spec import DeploySpec

    parsed = DeploySpec.from_file(spec)
    if server and not plan:
        raise typer.BadParameter("--server only goes with --plan", param_hint="--server")
    if plan:
        _plan(parsed, cluster_block, sandbox_dir, server)
        return
    from flows.deploy import deploy, summarize

    if (cluster_block is None) == (sandbox_dir is None):
        raise typer.BadParameter("give exactly one of --cluster-block or --sandbox-dir")
    parsed.require_model_source(str(spec))
    if sandbox_dir is not None:
        from .sandbox_profile import read_sandbox_info, save_sandbox_blocks

        cluster_block = save_sandbox_blocks(read_sandbox_info(sandbox_dir))
    result = deploy(spec=parsed, cluster_block=cluster_block, show_progress=True)
    for key, value in summarize(result).items():
        console.print(f"{key:<10} {value}")


@app.command("rollback")
@user_errors
def rollback_cmd(
    spec: Annotated[Path, typer.Argument(help="DeploySpec YAML or JSON file of the service")],
    cluster_block: Annotated[
        str | None, typer.Option(help="Name of the saved `ACK Cluster` block of the cluster")
    ] = None,
    sandbox_dir: Annotated[
        Path | None, typer.Option(help="The running sandbox of this directory (saves its blocks)")
    ] = None,
) -> None:
    """Serve the previous kept version of SPEC's service again, then retire the current one."""
    from core.spec import DeploySpec
    from flows.rollback import rollback

    parsed = DeploySpec.from_file(spec)
    if (cluster_block is None) == (sandbox_dir is None):
        raise typer.BadParameter("give exactly one of --cluster-block or --sandbox-dir")
    if sandbox_dir is not None:
        from .sandbox_profile import read_sandbox_info, save_sandbox_blocks

        cluster_block = save_sandbox_blocks(read_sandbox_info(sandbox_dir))
    result = rollback(spec=parsed, cluster_block=cluster_block)
    console.print(f"live       {result.to_service} (version {result.to_version}, {result.replicas} replica(s))")
    console.print(f"retired    {result.from_service} (scaled to zero, kept)")


@app.command("status")
@user_errors
def status_cmd(
    spec: Annotated[Path, typer.Argument(help="DeploySpec YAML or JSON file")],
    cluster_block: Annotated[
        str | None, typer.Option(help="Name of the saved `ACK Cluster` block to look in")
    ] = None,
    sandbox_dir: Annotated[
        Path | None, typer.Option(help="Look in the running sandbox of this directory")
    ] = None,
) -> None:
    """Show what serves SPEC's host and path: the live version, the canary and its weight, every version's
    replicas and HPA, and the users' QPS. Changes nothing."""
    from blocks import AckCluster
    from clients.cluster import Cluster, check_cluster
    from core.spec import DeploySpec
    from flows.status import current_status
    from tasks.status import render_status_lines

    parsed = DeploySpec.from_file(spec)
    if (cluster_block is None) == (sandbox_dir is None):
        raise typer.BadParameter("give exactly one of --cluster-block or --sandbox-dir")
    if sandbox_dir is not None:
        from .sandbox_profile import cluster_from_sandbox, read_sandbox_info

        block, name = cluster_from_sandbox(read_sandbox_info(sandbox_dir)), str(sandbox_dir)
    else:
        block, name = AckCluster.load(cluster_block), str(cluster_block)
    parsed = check_cluster(parsed, block, name)
    for line in render_status_lines(current_status(parsed, Cluster(block))):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _plan(spec, cluster_block: str | None, sandbox_dir: Path | None, server: bool) -> None:
    from blocks import AckCluster
    from clients.cluster import Cluster, check_cluster
    from flows.plan import render_plan, server_dry_run

    cluster = None
    if sandbox_dir is not None:
        from .sandbox_profile import cluster_from_sandbox, read_sandbox_info

        cluster = Cluster(cluster_from_sandbox(read_sandbox_info(sandbox_dir)))
    elif cluster_block is not None:
        cluster = Cluster(AckCluster.load(cluster_block))
        spec = check_cluster(spec, cluster.block, cluster_block)
    print(render_plan(spec, cluster), end="")
    if server:
        if cluster is None:
            raise typer.BadParameter("--plan --server needs --cluster-block or --sandbox-dir")
        for result in server_dry_run(spec, cluster):
            console.print(f"# server dry run: {result}", highlight=False, soft_wrap=True)


def _csv(values: list[str] | None) -> frozenset[str]:
    return frozenset(v.strip() for item in values or [] for v in item.split(",") if v.strip())


def _key_values(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        pairs[key] = value
    return pairs


@app.command("registry-webhook")
@user_errors
def registry_webhook(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on", min=1, max=65535)] = 8787,
    secret_env: Annotated[
        str, typer.Option(help="Environment variable holding the webhook secret (never pass it as an argument)")
    ] = "MLFLOW_WEBHOOK_SECRET",
    event: Annotated[
        list[str] | None,
        typer.Option(help="Registry events that deploy (repeat or comma-separate; default: "
                     "model_version.created,model_version_alias.created; also model_version_tag.set)"),
    ] = None,
    alias: Annotated[
        list[str] | None, typer.Option(help="Alias events deploy only for these aliases, e.g. champion")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only these registered models deploy")] = None,
    deploy_tag: Annotated[
        list[str] | None, typer.Option(help="Tag events deploy when this KEY=VALUE tag is set")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Largest accepted clock difference, seconds")] = 300.0,
    replay_file: Annotated[
        Path | None, typer.Option(help="Remember seen delivery ids in this file across restarts")
    ] = None,
    mlflow_tracking_uri: Annotated[
        str | None,
        typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow server, to look up sources of alias/tag events"),
    ] = None,
    download_dir: Annotated[
        Path | None, typer.Option(help="Download artifacts that are neither local nor on OSS into this directory")
    ] = None,
) -> None:
    """Receive MLflow model registry webhooks and emit `model.version.registered` Prefect events."""
    import logging

    from pydantic import ValidationError

    from receivers.registry_webhook import (
        ReceiverConfig,
        ReplayGuard,
        prefect_settings,
        secret_from_env,
        serve,
    )

    api_url, api_key, auth_string = prefect_settings()
    if not api_url:
        raise typer.BadParameter("set PREFECT_API_URL to the Prefect server's API, e.g. http://127.0.0.1:4200/api")
    try:
        secret = secret_from_env(secret_env)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--secret-env") from None
    try:
        config = ReceiverConfig(
            secret=secret, prefect_api_url=api_url, prefect_api_key=api_key, prefect_auth_string=auth_string,
            tolerance_s=tolerance, replay_file=replay_file,
            **({"event_types": _csv(event)} if event else {}),
            aliases=_csv(alias), models=_csv(model), deploy_tags=_key_values(deploy_tag, "--deploy-tag"),
            mlflow_tracking_uri=mlflow_tracking_uri, download_dir=download_dir,
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        guard = ReplayGuard(config.replay_ttl, config.replay_file)
    except ValueError as exc:
        raise _refuse("--replay-file", str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(config, host=host, port=port, replay=guard)


@app.command("emit-model-event")
@user_errors
def emit_model_event_cmd(
    name: Annotated[str, typer.Option(help="Registered model name")],
    version: Annotated[str, typer.Option(help="Model version")],
    source: Annotated[
        str, typer.Option(help="Model files: a local path, oss://bucket/prefix, or an MLflow models:/ or runs:/ URI")
    ],
    alias: Annotated[str | None, typer.Option(help="Alias the version was given")] = None,
    run_id: Annotated[str | None, typer.Option(help="Training run id")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag of the version (repeatable)")] = None,
    registry: Annotated[str, typer.Option(help="Registry kind: the resource id is <registry>.model.<name>.<version>")]
    = "mlflow",
    mlflow_tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow server to resolve MLflow URIs")
    ] = None,
) -> None:
    """Emit the `model.version.registered` event by hand (CI jobs, registries without webhooks)."""
    from receivers.registry_webhook import SourceError, emit_model_event

    try:
        event = emit_model_event(
            name, version, source, alias=alias, run_id=run_id, tags=_key_values(tag, "--tag"),
            registry=registry, tracking_uri=mlflow_tracking_uri,
        )
    except (SourceError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    console.print(f"emitted {event['event']} {event['resource']['prefect.resource.id']} (event id {event['id']})")
    print(json.dumps(event["payload"]))


def _print_info(info: dict) -> None:
    for key in sorted(info):
        if key.endswith("_endpoint") or key in ("region", "cluster_id", "access_key_id", "kubeconfig", "speed"):
            console.print(f"  {key:<18} {info[key]}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
