"""A constant-rate (open-loop) HTTP load: requests leave on schedule whether or not earlier ones have answered.

A closed loop (N users, each waiting for its answer) slows down when the service does, which hides overload; a
constant arrival rate is what makes a queue build up on an overloaded replica, as real traffic does. Every
request is recorded with the time it was *due* (so time spent waiting for a free connection counts as latency),
its latency and its outcome (HTTP status, or the exception's name).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Sample:
    due: float  # time.monotonic() when the request was due
    latency: float  # seconds from ``due`` to the complete answer
    outcome: int | str  # HTTP status, or the exception class name
    lag: float  # seconds from ``due`` to the moment the generator sent it (its own delay, if it fell behind)


def p95(samples: list[Sample]) -> float:
    """The 95th percentile latency in seconds (nearest rank) of ``samples``."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(s.latency for s in samples)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


class OpenLoopLoad:
    """POST ``body`` to ``url`` (with ``Host: host``) ``rate`` times per second until stopped.

    The client runs in a process of its own, as a load generator would: in the test's process it would share the
    GIL with the in-process sandbox and slow the very service it measures. ``samples`` is filled at ``stop()``.
    """

    def __init__(self, url: str, host: str, body: dict[str, Any], rate: float, timeout: float = 60.0) -> None:
        self.url, self.host, self.body, self.rate, self.timeout = url, host, body, rate, timeout
        self.samples: list[Sample] = []
        self.started = 0.0
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._scheduled = ctx.Value("d", 0.0)  # the due time of the last request the child has sent
        self._out: mp.Queue = ctx.Queue()
        self._proc = ctx.Process(target=_generate, name="open-loop", daemon=True,
                                 args=(url, host, body, rate, timeout, self._stop, self._scheduled, self._out))

    def __enter__(self) -> OpenLoopLoad:
        self._proc.start()
        self.started = self._out.get(timeout=60)  # the child's first due time, once its client is ready
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, covering: float | None = None) -> None:
        """Stop sending (once every request due before ``covering`` has been sent, if given) and collect."""
        if self._proc.is_alive() or not self.samples:
            deadline = time.monotonic() + self.timeout
            while covering is not None and self._scheduled.value < covering and time.monotonic() < deadline \
                    and self._proc.is_alive():
                time.sleep(0.05)
            self._stop.set()
            self.samples = [Sample(*row) for row in self._out.get(timeout=self.timeout + 30)]
            self._proc.join(10)

    def between(self, start: float, end: float) -> list[Sample]:
        """The samples of requests that were due in ``[start, end)`` (``time.monotonic()``: one clock for all
        processes of the machine)."""
        return [s for s in self.samples if start <= s.due < end]

    @staticmethod
    def errors(samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if s.outcome != 200]


def _generate(url: str, host: str, body: dict[str, Any], rate: float, timeout: float, stop: Any, scheduled: Any,
              out: Any) -> None:
    """The child process: send on schedule until ``stop`` is set, then put every ``(due, latency, outcome, lag)``."""
    rows: list[tuple[float, float, int | str, float]] = []
    content = json.dumps(body).encode()  # encoded once: the generator must keep its schedule

    async def one(http: aiohttp.ClientSession, due: float) -> None:
        lag = time.monotonic() - due
        try:
            async with http.post(url, data=content) as r:
                await r.read()
                outcome: int | str = r.status
        except (TimeoutError, aiohttp.ClientError) as e:
            outcome = type(e).__name__
        rows.append((due, time.monotonic() - due, outcome, lag))

    async def run() -> None:
        # aiohttp rather than httpx: with hundreds of requests outstanding (an overloaded replica) httpx's pool cost
        # enough CPU per request that the generator fell seconds behind its own schedule on a busy machine
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(headers={"Host": host, "Content-Type": "application/json"},
                                         connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            pending: set[asyncio.Task] = set()
            due = time.monotonic()
            out.put(due)
            while not stop.is_set():
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(one(http, due))
                pending.add(task)
                task.add_done_callback(pending.discard)
                scheduled.value = due
                due += 1.0 / rate
            if pending:
                await asyncio.wait(pending, timeout=timeout + 5)

    asyncio.run(run())
    out.put(rows)
