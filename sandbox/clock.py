"""The sandbox's simulated clock.

Every control-plane delay in the sandbox (ECS boot, kubelet start, HPA sync, ...) is stated in *simulated*
seconds; the clock turns them into real seconds with one speed factor (``--speed``). Traffic (HTTP requests)
always runs in real time. Simulated time is a Unix timestamp that starts at the real time of the first start and
resumes where it stopped after a restart, so timestamps shown to clients look like real ones.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime


class SimClock:
    def __init__(self, speed: float = 10.0, start: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = float(speed)
        self._sim0 = time.time() if start is None else float(start)
        self._real0 = time.monotonic()

    def now(self) -> float:
        """Simulated Unix time in seconds."""
        return self._sim0 + (time.monotonic() - self._real0) * self.speed

    def real_seconds(self, sim_seconds: float) -> float:
        return max(0.0, sim_seconds) / self.speed

    def sim_seconds(self, real_seconds: float) -> float:
        return real_seconds * self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real_seconds(sim_seconds))

    def iso(self, ts: float | None = None) -> str:
        """RFC 3339 UTC with seconds precision (the format Kubernetes and ACK print)."""
        return datetime.fromtimestamp(self.now() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
