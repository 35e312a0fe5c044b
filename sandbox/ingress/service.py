"""The cluster's nginx ingress load balancer: one HTTP listener on loopback (``ingress_endpoint`` in sandbox.json).

Control side, with ingress-nginx's delays (kubernetes/ingress-nginx; all in :mod:`sandbox.timings`, simulated
seconds, so they scale with ``--speed``):

- **Sync and reload.** Every change of Ingresses, Services, Endpoints or IngressClasses queues a sync
  (``syncQueue``); ``syncIngress`` (``internal/ingress/controller/controller.go``) first takes a token from
  ``syncRateLimiter``, a token bucket of one at ``--sync-rate-limit`` (default 0.3 per second, ``pkg/flags/
  flags.go``; ``nginx.go`` ``NewTokenBucketRateLimiter(config.SyncRateLimit, 1)``): at most one sync per
  ``ingress_sync_period`` (3.3 s), and everything that changed meanwhile goes into that one. The new configuration
  then reaches requests after an nginx reload or a dynamic ``/configuration/backends`` POST, which the workers'
  ``balancer.lua`` picks up on its ``BACKENDS_SYNC_INTERVAL`` (1 s) timer: ``ingress_reload``. Until then requests
  are routed by the previous table (a new canary is not there yet; a removed endpoint still is). Seen on a real
  controller (kubernetes/ingress-nginx issue 5049): Ingress CREATE at 15:23:27.44, "Backend successfully reloaded"
  at 15:23:30.99.
- **Status.** The routing table (:mod:`.routes`) is one thing, the Ingress status another: the leader's status
  loop (``internal/ingress/status/status.go``, ``statusSync.Run``: ``wait.PollUntilContextCancel`` every
  ``UpdateInterval`` = 60 s, ``--status-update-interval``, immediate first pass when it starts leading) writes the
  listener's address into each nginx-class Ingress's ``status.loadBalancer.ingress[0]`` (``{"ip": "127.0.0.1",
  "ports": [{"port": <listener port>, "protocol": "TCP"}]}``). A new Ingress gets its address at the next pass,
  up to a minute later, whether or not nginx serves it yet (issue 5049: reloaded at 15:23:30, status at 15:24:03):
  an Ingress's address proves neither that it is in effect nor that a canary merged.
Data side: :mod:`.proxy`. Access log for SLS: :mod:`.stats` (``IngressService.log``, per-route aggregates read by
the metrics service) and :mod:`.requestlog` (``IngressService.requests``, one entry per request, read by the SLS
endpoint :mod:`sandbox.sls`).

**The pod-endpoint seam.** Endpoints hold pod IPs (``10.x``) that do not exist on this machine; whoever runs the
pod's process says where it really listens. A resolver is ``fn(pod_ip, port) -> (host, port) | None``; the first
non-None answer wins. The sandbox gives the ingress the TF-Serving runtime's resolver (its per-pod loopback
listener) when it builds it (:func:`sandbox.registry.build`); more can be added::

    ingress.add_resolver(fn)
    ingress.remove_resolver(fn)

An endpoint no resolver knows is treated like a refused connection (next endpoint, then 502).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from ..listen import listen_socket
from ..service import Service
from ..timings import resolve as resolve_timings
from .proxy import IngressProxy
from .requestlog import DEFAULT_CAPACITY, RequestLog
from .routes import RouteTable, build_table, default_ingress_class, is_nginx_ingress
from .stats import AccessLog
from .upstream import UpstreamPool

if TYPE_CHECKING:
    from ..context import SandboxContext
    from ..kube.service import KubeService

log = logging.getLogger("sandbox.ingress")

Resolver = Callable[[str, int], "tuple[str, int] | None"]
_WATCHED = {"ingresses", "services", "endpoints", "ingressclasses"}
RESYNC_SECONDS = 5.0  # real seconds between full rebuilds when nothing changed (safety net)
FIELD_MANAGER = "nginx-ingress-controller"


class IngressService(Service):
    name = "ingress"

    def __init__(self, ctx: SandboxContext, kube: KubeService, resolvers: list[Resolver] | None = None) -> None:
        super().__init__(ctx)
        self.kube = kube
        self.table = RouteTable()
        self.log = AccessLog()
        self.requests = RequestLog(int((ctx.options.get("sls") or {}).get("log_capacity", DEFAULT_CAPACITY)))
        self.pool = UpstreamPool()
        self.resolvers: list[Resolver] = list(resolvers or [])
        self.host = ctx.host
        self.port = 0
        self.proxy = IngressProxy(self)
        self._dirty: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._status_task: asyncio.Task | None = None
        timings = resolve_timings(ctx.options)
        self.sync_period = timings["ingress_sync_period"]
        self.reload_delay = timings["ingress_reload"]
        self.status_period = timings["ingress_status_period"]
        self._dropped: list[str] = []
        self._server: uvicorn.Server | None = None
        self._serve: asyncio.Task | None = None
        self.endpoint = ""

    # ---- the seam --------------------------------------------------------------------------------------------------
    def add_resolver(self, fn: Resolver) -> None:
        if fn not in self.resolvers:
            self.resolvers.append(fn)

    def remove_resolver(self, fn: Resolver) -> None:
        with contextlib.suppress(ValueError):
            self.resolvers.remove(fn)

    def resolve(self, pod_ip: str, port: int) -> tuple[str, int] | None:
        for fn in self.resolvers:
            addr = fn(pod_ip, port)
            if addr is not None:
                return addr
        return None

    # ---- Service hooks ---------------------------------------------------------------------------------------------
    # The listener is served here rather than through ``app()``: nginx's $remote_addr is the TCP peer, so uvicorn's
    # proxy-headers rewriting (on by default in the runner's config) must be off, and so are its Server header and
    # access log (less work per request).
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self._dirty.set()
        sock = listen_socket(self.ctx.store, self.ctx.host, self.name, int(self.ctx.options.get("ingress_port", 0)))
        self.host, self.port = self.ctx.host, sock.getsockname()[1]
        self.proxy.port = str(self.port).encode()
        self.endpoint = f"http://{self.host}:{self.port}"
        self.ctx.endpoints[self.name] = self.endpoint
        config = uvicorn.Config(self.proxy, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=75, proxy_headers=False, server_header=False, backlog=4096)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._serve = asyncio.create_task(self._server.serve(sockets=[sock]), name="ingress-http")
        while not self._server.started:
            if self._serve.done():
                self._serve.result()
            await asyncio.sleep(0.01)
        self.kube.store.on_change(self._on_change)
        self._task = asyncio.create_task(self._run(), name="ingress-sync")
        self._status_task = asyncio.create_task(self._status_loop(), name="ingress-status")

    async def stop(self) -> None:
        for task in (self._task, self._status_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serve, 10)
        self.pool.close()

    def info(self) -> dict[str, Any]:
        return {"ingress_endpoint": self.endpoint}

    # ---- control loop ----------------------------------------------------------------------------------------------
    def _on_change(self, key: str, change: Any) -> None:
        if key.split(".", 1)[0] not in _WATCHED or self._dirty is None or self._loop is None:
            return
        try:
            if asyncio.get_running_loop() is self._loop:
                self._dirty.set()
                return
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._dirty.set)

    async def _run(self) -> None:
        """``syncQueue`` + ``syncIngress``: rate-limited rebuilds that take effect ``reload_delay`` later."""
        assert self._dirty is not None
        clock = self.ctx.clock
        last: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RESYNC_SECONDS)
            if last is not None:
                await clock.sleep(max(0.0, last + self.sync_period - clock.now()))  # syncRateLimiter.Accept()
            last = clock.now()
            self._dirty.clear()
            try:
                table = self.build()
            except Exception:  # noqa: BLE001 - the loop must survive one bad object
                log.exception("ingress sync failed")
                continue
            await clock.sleep(self.reload_delay)
            cursors = {b.upstream: b.rr for b in self.table.backends()}  # they moved on meanwhile
            for b in table.backends():
                b.rr = cursors.get(b.upstream, b.rr)
            self.table = table

    def build(self) -> RouteTable:
        """The routing table of what the store holds now (the controller's ``getConfiguration``)."""
        store = self.kube.store
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in store.list("services")}
        endpoints = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in store.list("endpoints")}
        default_class = default_ingress_class(store.list("ingressclasses"))
        table = build_table(store.list("ingresses"), services, endpoints, default_class, previous=self.table)
        if table.dropped != self._dropped:
            for line in table.dropped:
                if line not in self._dropped:
                    log.warning("%s", line)
            self._dropped = list(table.dropped)
        return table

    async def _status_loop(self) -> None:
        """``statusSync.Run``: an immediate pass, then one every ``status_period``."""
        while True:
            try:
                self.publish_status()
            except Exception:  # noqa: BLE001 - the next pass retries
                log.exception("ingress status update failed")
            await self.ctx.clock.sleep(self.status_period)

    def publish_status(self) -> None:
        """``updateStatus``: the listener's address on every nginx-class Ingress whose status differs."""
        store = self.kube.store
        default_class = default_ingress_class(store.list("ingressclasses"))
        want = [{"ip": self.host, "ports": [{"port": self.port, "protocol": "TCP"}]}]
        for ing in store.list("ingresses"):
            if not is_nginx_ingress(ing, default_class) or ing["metadata"].get("deletionTimestamp"):
                continue
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress")
            if have == want:
                continue
            ing["status"] = {**(ing.get("status") or {}), "loadBalancer": {"ingress": want}}
            try:
                store.update_status("ingresses", ing, field_manager=FIELD_MANAGER)
            except Exception as e:  # noqa: BLE001 - a conflict: "error updating ingress rule", the next pass retries
                log.debug("ingress status update of %s failed: %s", ing["metadata"]["name"], e)
