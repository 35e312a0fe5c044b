"""The shape of one emulated service: an optional HTTP app bound to a loopback port, and background loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from .context import SandboxContext


class Service:
    """Base class. Subclasses set ``name`` and override what they use. A service that uses others takes them as
    constructor arguments after ``ctx`` (typed; :func:`sandbox.registry.build` passes them), never by name.

    - ``app()``: an ASGI app to serve on its own loopback port (None: no HTTP endpoint).
    - ``scheme``: ``http`` or ``https``; with https, ``ssl_options()`` gives uvicorn's ``ssl_*`` keyword arguments.
    - ``start()``: start background loops (controllers) with ``spawn()``; the default ``stop()`` cancels them.
    - ``info()``: extra keys for ``sandbox.json`` (never secrets other than the sandbox's own generated ones).
    """

    name: str = "service"
    scheme: str = "http"

    def __init__(self, ctx: SandboxContext) -> None:
        self.ctx = ctx
        self._spawned: list[asyncio.Task] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run ``coro`` as a background task of this service, cancelled by :meth:`stop`."""
        task = asyncio.create_task(coro, name=name)
        self._spawned.append(task)
        return task

    async def cancel_spawned(self) -> None:
        tasks, self._spawned = self._spawned, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def app(self) -> Any | None:
        return None

    def ssl_options(self) -> dict[str, Any]:
        return {}

    def on_bound(self, endpoint: str) -> None:  # noqa: B027 - optional hook
        """Called with this service's endpoint (``scheme://host:port``) once its socket is bound."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:
        await self.cancel_spawned()

    def info(self) -> dict[str, Any]:
        return {}
