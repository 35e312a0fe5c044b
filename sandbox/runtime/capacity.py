"""The capacity of one model-server replica: a concurrency limit, a service time, and a queue in front.

A replica runs at most ``concurrency`` requests at once; each holds its slot for ``service_time_ms`` (+
``per_instance_ms`` for every instance of the batch beyond the first); the others wait in FIFO order
(:class:`asyncio.Semaphore`), so once the arrival rate passes ``concurrency / service time`` the queue and the
latency grow without bound, as on an overloaded GPU. Time here is real time (traffic is real time in the sandbox,
only the control plane runs on the simulated clock).

Defaults, meant to mimic BERT-base (seq 128) behind ``tensorflow/serving:1.15.0-gpu`` on one T4 (``ecs.gn6i``):

- ``concurrency`` 4: TF Serving executes requests on a small pool of session threads that share one GPU stream;
  without ``--enable_batching`` a handful of requests run concurrently and the GPU serializes their kernels
  (TF Serving's default batching thread pool ``model_server_batch_threads`` has 4 threads on a 4-vCPU node);
- ``service_time_ms`` 40: NVIDIA reports 2.2 ms for BERT-base on a T4 only with TensorRT-optimised FP16/INT8 kernels
  (devblogs.nvidia.com "Real-Time Natural Language Understanding with BERT Using TensorRT", 2019); stock TensorFlow
  1.15 FP32 graphs without XLA/TensorRT run an order of magnitude slower, ~20-50 ms per seq-128 request, so 40 ms
  is a plausible middle. That is ~100 requests/s per replica at saturation.

Configuration: sandbox option ``runtime`` (``Sandbox(options={"runtime": {"concurrency": 1, "service_time_ms": 50,
"per_instance_ms": 0, "max_queue": 0}})``), overridden per pod by annotations ``sandbox.elastic-inference/concurrency``,
``sandbox.elastic-inference/service-time-ms``, ``sandbox.elastic-inference/per-instance-ms`` and
``sandbox.elastic-inference/max-queue`` (``max_queue`` > 0 rejects requests beyond that many waiting with
``RESOURCE_EXHAUSTED``/429, as a bounded batching queue would; 0 = unbounded).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ANNOTATION_PREFIX = "sandbox.elastic-inference/"
_ANNOTATIONS = {"concurrency": "concurrency", "service-time-ms": "service_time_ms",
                "per-instance-ms": "per_instance_ms", "max-queue": "max_queue"}


class CapacitySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(4, ge=1)
    service_time_ms: float = Field(40.0, ge=0)
    per_instance_ms: float = Field(0.0, ge=0)
    max_queue: int = Field(0, ge=0)


def resolve_settings(options: dict[str, Any] | None, annotations: dict[str, str] | None) -> CapacitySettings:
    """Defaults <- sandbox option ``runtime`` <- the pod's annotations (invalid annotation values are ignored)."""
    base = {k: v for k, v in ((options or {}).get("runtime") or {}).items() if k in CapacitySettings.model_fields}
    settings = CapacitySettings(**base)
    for ann, fieldname in _ANNOTATIONS.items():
        raw = (annotations or {}).get(ANNOTATION_PREFIX + ann)
        if raw is None:
            continue
        try:
            settings = CapacitySettings(**{**settings.model_dump(), fieldname: float(raw) if "ms" in ann
                                           else int(raw)})
        except ValueError:
            continue
    return settings


class Overloaded(Exception):
    pass


class Capacity:
    """One replica's slots and queue; ``async with capacity.serve(batch):`` around the model's work."""

    def __init__(self, settings: CapacitySettings) -> None:
        self.settings = settings
        self._sem = asyncio.Semaphore(settings.concurrency)
        self.waiting = 0
        self.running = 0
        self.served = 0

    def service_seconds(self, batch: int) -> float:
        s = self.settings
        return (s.service_time_ms + s.per_instance_ms * max(0, batch - 1)) / 1000.0

    @asynccontextmanager
    async def serve(self, batch: int = 1, extra_seconds: float = 0.0):
        """Hold a slot for the service time (+ ``extra_seconds``: a slower model version) around the work."""
        if self.settings.max_queue and self.waiting >= self.settings.max_queue and self._sem.locked():
            raise Overloaded(f"the request queue is full ({self.waiting} waiting)")
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            yield
            left = self.service_seconds(batch) + extra_seconds - (time.monotonic() - started)
            if left > 0:
                await asyncio.sleep(left)
        finally:
            self.running -= 1
            self.served += 1
            self._sem.release()
