"""Benchmark of the sandbox Kubernetes API server: ratios to the same stack answering a no-op request.

Prints (not a test):
- creates per second (pods, sequential over one keep-alive HTTPS connection) vs no-op requests per second; the pods
  name a scheduler that does not run (``spec.schedulerName``), so they stay Pending without scheduling attempts;
- time to list 5,000 pods (JSON and Table) as a multiple of one no-op request;
- watch fan-out: time until 50 watchers have each seen 100 new objects, as a multiple of the time to create them.

Run: ``.venv/bin/python bench/kube_api.py [--pods 5000] [--watchers 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from sandbox.runner import Sandbox


def _client(kubeconfig: str) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = doc["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return cluster["server"], ctx, {"Authorization": "Bearer " + doc["users"][0]["user"]["token"]}


def _pod(name: str) -> dict:
    # a scheduler of its own name: default-scheduler (like kube-scheduler) leaves the pod alone, so no binding,
    # kubelet, FailedScheduling events or autoscaler work follows each create and the figures are the API server's
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"schedulerName": "bench-no-scheduler",
                     "containers": [{"name": "c", "image": "tensorflow/serving:1.15.0-gpu",
                                     "ports": [{"containerPort": 8501}],
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}


def bench(pods: int, watchers: int) -> None:
    with tempfile.TemporaryDirectory() as d, Sandbox(Path(d), speed=50) as sb:
        server, ctx, headers = _client(sb.info["kubeconfig"])
        with httpx.Client(base_url=server, verify=ctx, headers=headers, timeout=120) as http:
            http.get("/version")
            n = 500
            t0 = time.perf_counter()
            for _ in range(n):
                http.get("/version")
            noop = (time.perf_counter() - t0) / n
            http.post("/api/v1/namespaces", json={"metadata": {"name": "bench"}})
            t0 = time.perf_counter()
            for i in range(pods):
                r = http.post("/api/v1/namespaces/bench/pods", json=_pod(f"p{i:05d}"))
                assert r.status_code == 201, r.text
            create = (time.perf_counter() - t0) / pods
            print(f"no-op request:        {noop * 1000:8.2f} ms  ({1 / noop:8.0f}/s)")
            print(f"create pod:           {create * 1000:8.2f} ms  ({1 / create:8.0f}/s)  "
                  f"ratio creates/s : no-ops/s = {noop / create:.2f}")
            for label, accept in (("json", "application/json"),
                                  ("table", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")):
                t0 = time.perf_counter()
                r = http.get("/api/v1/namespaces/bench/pods", headers={"Accept": accept})
                dt = time.perf_counter() - t0
                items = len(r.json().get("items", r.json().get("rows", [])))
                print(f"list {items} pods ({label}): {dt * 1000:8.1f} ms  = {dt / noop:8.0f} x no-op")
        asyncio.run(_fanout(server, ctx, headers, watchers, 100, noop))


async def _fanout(server: str, ctx: ssl.SSLContext, headers: dict, watchers: int, n: int, noop: float) -> None:
    async with httpx.AsyncClient(base_url=server, verify=ctx, headers=headers, timeout=120,
                                 limits=httpx.Limits(max_connections=watchers + 10)) as http:
        r = await http.post("/api/v1/namespaces", json={"metadata": {"name": "fan"}})
        rv = r.json()["metadata"]["resourceVersion"]
        ready = asyncio.Event()
        started = 0
        done_at: list[float] = []

        async def watch() -> None:
            nonlocal started
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "120"}
            async with http.stream("GET", "/api/v1/namespaces/fan/configmaps", params=params) as resp:
                started += 1
                if started == watchers:
                    ready.set()
                seen = 0
                async for line in resp.aiter_lines():
                    if line.strip() and json.loads(line)["type"] == "ADDED":
                        seen += 1
                        if seen == n:
                            done_at.append(time.perf_counter())
                            return

        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        for i in range(n):
            await http.post("/api/v1/namespaces/fan/configmaps", json={"metadata": {"name": f"c{i}"}})
        created = time.perf_counter() - t0
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        total = max(done_at) - t0
        print(f"watch fan-out: {watchers} watchers x {n} events delivered in {total * 1000:.0f} ms "
              f"(creating took {created * 1000:.0f} ms): ratio {total / created:.2f}; "
              f"per event per watcher {total / (n * watchers) / noop:.3f} x no-op")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--watchers", type=int, default=50)
    a = p.parse_args()
    bench(a.pods, a.watchers)


if __name__ == "__main__":
    main()
