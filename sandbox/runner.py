"""Start and stop a whole sandbox: in-process (tests, the demo) or as a background process (the CLI).

``Sandbox(state_dir).start()`` runs every service on its own event loop in a daemon thread, binds each HTTP app to
a free loopback port, writes ``sandbox.json`` (mode 0600) and returns its contents; ``stop()`` shuts everything
down and closes the state database. The same state directory started again resumes every object and the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from .accounts import Accounts
from .clock import SimClock, check_speed, valid_timestamp
from .context import SandboxContext
from .faults import wrap_app
from .listen import listen_socket
from .service import Service
from .store import Store
from .timings import with_real_time_pods

if TYPE_CHECKING:
    from .registry import Services

log = logging.getLogger("sandbox")

SANDBOX_JSON = "sandbox.json"
PID_FILE = "sandbox.pid"
DEFAULT_DIR = Path(".sandbox")
DEFAULT_SPEED = 10.0


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (it holds the sandbox's generated credentials)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _save_clock(store: Store, clock: SimClock) -> None:
    """Persist the simulated time, only ever as a value the next start can resume from."""
    now = clock.now()
    if valid_timestamp(now):
        store.set_meta("clock", now)
    else:
        log.error("simulated time %r is beyond what can be stored; the clock is not persisted", now)


class Sandbox:
    def __init__(
        self,
        state_dir: Path | str = DEFAULT_DIR,
        speed: float = DEFAULT_SPEED,
        host: str = "127.0.0.1",
        options: dict[str, Any] | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the sandbox listens on loopback only")
        self.state_dir = Path(state_dir).resolve()
        self.speed = check_speed(speed)  # refused before anything is created or persisted
        self.host = host
        self.options = with_real_time_pods(options, self.speed)  # a bad "pods" value is refused here, too
        self.info: dict[str, Any] = {}
        self.ctx: SandboxContext | None = None
        self.services: Services | None = None  # every service, typed (tests reach in-process APIs through it)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[uvicorn.Server] = []
        self._services: list[Service] = []
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start in a background thread; returns the contents of ``sandbox.json`` once every endpoint listens."""
        self._thread = threading.Thread(target=self._thread_main, name="sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"sandbox did not start within {timeout}s")
        if self._error:
            raise RuntimeError(f"sandbox failed to start: {self._error}") from self._error
        return self.info

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(timeout)

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_foreground(self) -> None:
        """Run in this thread until SIGINT/SIGTERM (``sandbox up`` without ``--detach``)."""
        self._thread = threading.current_thread()
        loop = asyncio.new_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self._shutdown(), loop=loop))
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    # ---- internals -------------------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store = Store(self.state_dir / "state.db")
        stored = store.get_meta("clock")
        if stored is not None and not valid_timestamp(stored):
            # Written by an older version that accepted any --speed (inf, nan, 1e308): resume from real time
            # rather than refuse to start this state directory forever.
            log.warning("the stored simulated clock %r is not a Unix time; resuming from the real time", stored)
            stored = None
        clock = SimClock(self.speed, start=stored)
        accounts = Accounts(store)
        ctx = SandboxContext(state_dir=self.state_dir, store=store, clock=clock, accounts=accounts, host=self.host,
                             options=self.options)
        self.ctx = ctx
        tasks: list[asyncio.Task] = []
        try:
            from .registry import build  # here: the services import this module (write_private)

            self.services = build(ctx)
            self._services = self.services.in_start_order()
            for svc in self._services:
                app = svc.app()
                app = wrap_app(app, svc, self.services.admin.faults) if app is not None else None  # sandbox.faults
                if app is not None:
                    sock = listen_socket(store, self.host, svc.name)
                    port = sock.getsockname()[1]
                    endpoint = f"{svc.scheme}://{self.host}:{port}"
                    ctx.endpoints[svc.name] = endpoint
                    svc.on_bound(endpoint)
                    config = uvicorn.Config(
                        app, log_level="warning", access_log=False, lifespan="off",
                        timeout_keep_alive=75, **svc.ssl_options(),
                    )
                    server = uvicorn.Server(config)
                    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
                    self._servers.append(server)
                    tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{svc.name}"))
            for svc in self._services:
                await svc.start()
            while not all(s.started for s in self._servers):
                if any(t.done() for t in tasks):
                    for t in tasks:
                        if t.done() and t.exception():
                            raise t.exception()  # type: ignore[misc]
                await asyncio.sleep(0.01)
            self.info = self._render_info()
            write_private(self.state_dir / SANDBOX_JSON, json.dumps(self.info, indent=2) + "\n")
            self._ready.set()
            log.info("sandbox up: %s", {k: v for k, v in self.info.items() if k.endswith("endpoint")})
            persist = asyncio.create_task(self._persist_clock(), name="clock-persist")
            await self._stopped_async()
            persist.cancel()
        finally:
            for svc in reversed(self._services):
                with contextlib.suppress(Exception):
                    await svc.stop()
            for server in self._servers:
                server.should_exit = True
            if tasks:
                await asyncio.wait(tasks, timeout=10)
            _save_clock(store, clock)
            store.close()

    async def _persist_clock(self) -> None:
        assert self.ctx
        while True:
            await asyncio.sleep(1.0)
            _save_clock(self.ctx.store, self.ctx.clock)

    async def _stopped_async(self) -> None:
        self._stop_event = asyncio.Event()
        await self._stop_event.wait()

    async def _shutdown(self) -> None:
        while not hasattr(self, "_stop_event"):
            await asyncio.sleep(0.01)
        self._stop_event.set()

    def _render_info(self) -> dict[str, Any]:
        assert self.ctx
        ident = self.ctx.identity
        info: dict[str, Any] = {
            "region": ident.region,
            "zones": ident.zones,
            "cluster_id": ident.cluster_id,
            "account_id": ident.account_id,
            "access_key_id": ident.access_key.access_key_id,
            "access_key_secret": ident.access_key.access_key_secret.get_secret_value(),
            "speed": self.speed,
            "state_dir": str(self.state_dir),
            "pid": os.getpid(),
            "started_at": time.time(),
        }
        for name, endpoint in self.ctx.endpoints.items():
            info[f"{name}_endpoint"] = endpoint
        for svc in self._services:
            info.update(svc.info())
        return info
