"""The sandbox's simulated clock.

Every control-plane delay in the sandbox (ECS boot, kubelet start, HPA sync, ...) is stated in *simulated*
seconds; the clock turns them into real seconds with one speed factor (``--speed``). Traffic (HTTP requests)
always runs in real time. Simulated time is a Unix timestamp that starts at the real time of the first start and
resumes where it stopped after a restart, so timestamps shown to clients look like real ones.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

# Above this, a 5 s HPA sync or a 1 s kubelet probe would be a few milliseconds of real time, below what the event
# loop can schedule: the simulation falls behind its own clock. The bound also keeps simulated time a timestamp
# every consumer can read back (datetime stops at year 9999) for centuries of real running.
MAX_SPEED = 1000.0
# The last instant ``datetime.fromtimestamp`` (and RFC 3339 with a 4-digit year) can represent.
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def check_speed(speed: Any) -> float:
    """``speed`` as a float, or ValueError naming the rule: a finite number in (0, MAX_SPEED]."""
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise ValueError(f"speed must be a number, got {speed!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_SPEED):
        raise ValueError(f"speed must be a finite number > 0 and <= {MAX_SPEED:g}, got {speed!r}")
    return value


def valid_timestamp(value: Any) -> bool:
    """Whether ``value`` is a simulated time the clock can resume from (a finite, representable Unix time)."""
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= MAX_TIMESTAMP)


class SimClock:
    def __init__(self, speed: float = 10.0, start: float | None = None) -> None:
        self.speed = check_speed(speed)
        if start is not None and not valid_timestamp(start):
            raise ValueError(f"the stored clock {start!r} is not a representable Unix time")
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
