"""What every emulated service of the sandbox is given: state, clock, identity, and a change bus."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .accounts import Accounts
from .clock import SimClock
from .store import Store


class Bus:
    """Level-triggered change notification: controllers meet in the store, the bus only says 'look again'.

    ``notify(topic)`` wakes every waiter of the topic; a waiter re-reads the store (it never gets the change itself),
    so a missed or coalesced notification loses nothing. Must be used from the sandbox's event loop.
    """

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, topic: str) -> None:
        for ev in list(self._events.get(topic, ())):
            ev.set()

    async def wait(self, topic: str, timeout: float | None = None) -> bool:
        """Wait for the next notification of ``topic`` (real seconds timeout). True if notified."""
        ev = asyncio.Event()
        self._events[topic].add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._events[topic].discard(ev)


@dataclass
class SandboxContext:
    state_dir: Path
    store: Store
    clock: SimClock
    accounts: Accounts
    host: str = "127.0.0.1"
    bus: Bus = field(default_factory=Bus)
    # Endpoints of the running services, filled in by the runner as each one binds (e.g. {"oss": "http://..."}).
    endpoints: dict[str, str] = field(default_factory=dict)
    # The options the sandbox was started with (``timings``, ``faults``, ``sls``, ``ingress_port``, ...).
    # Services never find each other here: each is given the services it uses (:mod:`sandbox.registry`).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self):
        return self.accounts.identity
