"""Benchmark: the deploy flow's time to serving and its scale-out latency, against their lower bounds.

Runs the whole deploy flow (the demo spec with a short step load) on an in-process sandbox and a temporary Prefect
server, then prints, in SIMULATED seconds (real seconds x sandbox speed, since the control plane runs on the
simulated clock):

- time to serving: flow start -> end of the first successful predict through the Ingress (the smoke task),
- scale-out latency: start of the load step -> every desired replica Ready (from the report's timeline),

each as a ratio to its lower bound, the sum of the configured delays on its critical path (sandbox/timings.py):
  serving:   node pool active + CA scan + ECS create + boot + kubelet register + node ready + volume mount
             + image pull + container start + TF Serving startup and model load + readiness
  scale-out: HPA sync + CA scan + ECS create + boot + kubelet register + node ready + volume mount + image pull
             + container start + TF Serving startup and model load + readiness
A ratio of 1.0 would mean no time at all was lost between stages. Usage: python bench/demo.py [--speed 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE_MB = 1700  # tensorflow/serving:1.15.0-gpu as the kubelet prices it (sandbox.controllers)


def lower_bounds(t: dict[str, float], model_mb: float) -> tuple[float, float]:
    pod = (t["volume_mount"] + t["image_pull_overhead"] + IMAGE_MB / t["image_pull_mb_per_s"] + t["container_start"]
           + t["tfserving_startup"] + t["tfserving_load"] + model_mb / t["tfserving_load_mb_per_s"] + t["pod_readiness"])
    node = t["ca_scan"] + t["ecs_create"] + t["ecs_boot"] + t["kubelet_register"] + t["node_ready"]
    return t["nodepool_create"] + node + pod, t["hpa_sync"] + node + pod


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--step-users", type=int, default=40)
    parser.add_argument("--step-seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bench-prefect-")

    from prefect.client.orchestration import get_client
    from prefect.testing.utilities import prefect_test_harness

    from cli.sandbox_profile import save_sandbox_blocks
    from core.demo_model import generate_demo_model
    from core.spec import DeploySpec
    from flows.deploy import deploy
    from sandbox.runner import Sandbox
    from sandbox.timings import DEFAULTS

    work = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    model = work / "model"
    generate_demo_model(model, version=1623831335)
    model_mb = sum(f.stat().st_size for f in model.rglob("*") if f.is_file()) / 1e6
    data = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
    data["model"]["local_dir"] = str(model)
    data["load_test"]["stages"] = [
        {"duration_s": 10, "users": 2, "spawn_rate": 2},
        {"duration_s": args.step_seconds, "users": args.step_users, "spawn_rate": args.step_users},
    ]
    data["load_test"]["sample_interval_s"] = 0.5
    spec = DeploySpec.parse(data)

    with prefect_test_harness(server_startup_timeout=180), Sandbox(work / "sandbox", speed=args.speed) as sb:
        block = save_sandbox_blocks(sb.info, name="bench")
        state = deploy(spec=spec, cluster_block=block, reports_dir=str(work / "reports"), return_state=True)
        result = state.result()
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(state.state_details.flow_run_id)
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        smoke = next(tr for tr in task_runs if tr.name.startswith("smoke_predict"))
        to_serving_real = (smoke.end_time - flow_run.start_time).total_seconds()

    report = json.loads((Path(result.report.directory) / "report.json").read_text())
    timeline = report["timeline"]
    load = result.load_test
    step = next(s for s in load.stages if s.index == 1)
    # Timeline samples carry ISO timestamps; the load step began at load.started_at + step.start_s (unix).
    step_unix = load.started_at + step.start_s
    for s in timeline:
        s["unix"] = datetime.fromisoformat(s["timestamp"]).timestamp()
    # Scale-out: from the load step until the ready pods first reach the peak desired replica count.
    peak = max((s.get("hpa_desired") or 0) for s in timeline)
    ready_at = next((s for s in timeline if (s.get("pods_ready") or 0) >= peak and s["unix"] >= step_unix), None)
    bound_serving, bound_scale = lower_bounds(DEFAULTS, model_mb)
    to_serving = to_serving_real * args.speed
    print(f"speed x{args.speed:g}; model {model_mb:.1f} MB; lower bounds: serving {bound_serving:.0f} s, "
          f"scale-out {bound_scale:.0f} s (simulated)")
    print(f"time to serving:    {to_serving:8.0f} simulated s  ratio {to_serving / bound_serving:5.2f}")
    if ready_at is None or peak <= 1:
        print(f"scale-out latency:  not reached (peak desired replicas {peak})")
    else:
        scale = (ready_at["unix"] - step_unix) * args.speed
        print(f"scale-out latency:  {scale:8.0f} simulated s  ratio {scale / bound_scale:5.2f}  "
              f"(1 -> {peak} replicas)")


if __name__ == "__main__":
    main()
