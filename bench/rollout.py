"""Benchmark: a canary rollout from flow start to promoted, against its lower bound measured from the same spec.

    .venv/bin/python bench/rollout.py [--speed 50] [--steps 10,50] [--step-seconds 10] [--stress-seconds 30]

Starts a sandbox in this process and a temporary Prefect server, deploys v1 of the demo model (no load test), then
rolls out v2 and measures the deploy flow's wall time until it returns promoted. The lower bound is what the
rollout cannot do faster: the isolated stress test (the sum of its stages), every analysis window
(``len(steps) * step_seconds``), the wait before the previous version is scaled to zero (the drain, or SLS showing
its route quiet over ``QUIET_S`` after the switch plus the shipping lag, whichever is longer), the new pods' start
(the sandbox runs pods in real time, so the timing table's pod stages are real seconds: ``volume_mount`` +
``container_start`` + the later of the readiness gate, the probe's ``initialDelaySeconds`` + ``pod_readiness``, and
TF Serving's ``tfserving_startup`` + ``tfserving_load``; the image is already on the nodes v1 runs on), ingress-nginx's sync and reload after each Ingress change,
and the SLS shipping lag each step's users' data waits for. Prints both and their ratio (1.0 would be no overhead
at all); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cli.sandbox_profile import save_sandbox_blocks  # noqa: E402
from core.demo_model import generate_demo_model  # noqa: E402
from core.spec import DeploySpec  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402
from sandbox.timings import DEFAULTS  # noqa: E402
from tasks.rollout.analysis import SLS_LAG_S  # noqa: E402
from tasks.rollout.quiet import QUIET_S  # noqa: E402

READINESS_INITIAL_DELAY_S = 5.0  # tasks/serving.py's readiness probe
DRAIN_S = 2.0


def spec(model: Path, version: int, label: str, steps: list[int], step_s: float, stress_s: float) -> DeploySpec:
    data = yaml.safe_load((ROOT / "examples" / "sandbox.yaml").read_text())
    data["model"].update({"local_dir": str(model), "version_policy": f"specific:{version}"})
    data["serving"]["version"] = label
    data["node_pool"]["name"] = "bench-rollout"
    data["load_test"]["stages"] = [{"duration_s": 5, "users": 5, "spawn_rate": 5},
                                   {"duration_s": stress_s - 5, "users": 30, "spawn_rate": 15}]
    data["rollout"] = {**data.get("rollout", {}), "steps": steps, "step_seconds": step_s, "drain_seconds": DRAIN_S}
    return DeploySpec.parse(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", type=float, default=50.0)
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--step-seconds", type=float, default=10.0)
    ap.add_argument("--stress-seconds", type=float, default=30.0)
    args = ap.parse_args()
    steps = [int(x) for x in args.steps.split(",")]
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.deploy import deploy

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        generate_demo_model(model, version=1)
        generate_demo_model(model, version=2, seed=2)
        sb = Sandbox(Path(tmp) / "sb", speed=args.speed, options={"pods": "real-time"})
        info = sb.start()
        try:
            block = save_sandbox_blocks(info, name="bench-rollout")
            v1 = spec(model, 1, "v1", steps, args.step_seconds, args.stress_seconds)
            v1 = v1.model_copy(update={"load_test": v1.load_test.model_copy(update={"enabled": False}),
                                       "verification": v1.verification.model_copy(
                                           update={"require_scale_out": False, "require_mix": False})})
            deploy(spec=v1, cluster_block=block, reports_dir=str(Path(tmp) / "reports"))
            v2 = spec(model, 2, "v2", steps, args.step_seconds, args.stress_seconds)
            t0 = time.perf_counter()
            result = deploy(spec=v2, cluster_block=block, reports_dir=str(Path(tmp) / "reports"))
            took = time.perf_counter() - t0
        finally:
            sb.stop()
    assert result.rollout is not None and result.rollout.decision == "promoted", result.rollout
    start_up = DEFAULTS["volume_mount"] + DEFAULTS["container_start"] + max(
        READINESS_INITIAL_DELAY_S + DEFAULTS["pod_readiness"], DEFAULTS["tfserving_startup"] + DEFAULTS["tfserving_load"])
    # every Ingress change (preview, canary at 0 and at each weight, the switch) reaches requests after ingress-nginx's
    # sync and reload; each step's users' data is read from SLS once the window's end is SLS_LAG_S in the past
    nginx = (len(steps) + 3) * (DEFAULTS["ingress_sync_period"] + DEFAULTS["ingress_reload"]) / args.speed
    sls_lag = len(steps) * SLS_LAG_S
    retire_wait = max(DRAIN_S, QUIET_S + SLS_LAG_S)
    bound = args.stress_seconds + len(steps) * args.step_seconds + retire_wait + start_up + nginx + sls_lag
    print(f"rollout v1 -> v2 (canary {steps}, {args.step_seconds:g} s per step, {args.stress_seconds:g} s stress "
          f"test, sandbox x{args.speed:g})")
    print(f"  flow start -> promoted: {took:.1f} s")
    print(f"  lower bound:            {bound:.1f} s (stress {args.stress_seconds:g} + steps "
          f"{len(steps) * args.step_seconds:g} + retire wait {retire_wait:g} + pod start {start_up:.1f} + nginx syncs {nginx:.1f} "
          f"+ SLS lag {sls_lag:.1f})")
    print(f"  ratio:                  {took / bound:.2f}x the lower bound")


if __name__ == "__main__":
    main()
