"""The sandbox's admin endpoint (``name = "admin"``: ``sandbox.json`` gets ``admin_endpoint`` and ``admin_token``).

HTTP on its own loopback port; every request needs ``Authorization: Bearer <admin_token>`` (generated once,
kept in the state database, written to ``sandbox.json``) or ``Bearer <AccessKeySecret>`` of the sandbox's own
AccessKey. Routes:

- ``GET /faults`` -> ``{"faults": <active configuration>, "counters": {service: {requests, throttled, errors,
  delayed}}, "boot_failures_done": [...], "reclaims_done": [...], "injected": [...]}``
- ``PUT /faults`` with a JSON or YAML body in the :mod:`sandbox.faults` format -> replaces the configuration
  (422 with ``{"error": "<field>: <problem>"}`` when invalid); an empty body clears every fault.
- ``POST /reclaim`` ``{"instance_id": ...}`` or ``{"nodepool_id": ..., "count": n}`` -> spot interruption notices now.

It owns the :class:`~sandbox.faults.FaultEngine` the HTTP middleware consults, applies the fleet faults (spot
stock-outs, the launch-failure hook) and runs the reclaim schedule/rate on the simulated clock. The faults file
given to ``sandbox up --faults`` (``ctx.options["faults"]``) is loaded at start; an invalid file stops the start
with a message naming the field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..context import SandboxContext
from ..faults import FaultEngine, FaultsSpec, load_file, parse_spec
from ..fleet.service import FleetService
from ..service import Service

log = logging.getLogger("sandbox.admin")

TOKEN_META = "admin_token"
TICK = 5.0  # simulated seconds between reclaim checks


class AdminService(Service):
    name = "admin"

    def __init__(self, ctx: SandboxContext, fleet: FleetService) -> None:
        super().__init__(ctx)
        self.fleet = fleet
        self.faults = FaultEngine()
        token = ctx.store.get_meta(TOKEN_META)
        if not token:
            token = "sbx-admin-" + secrets.token_urlsafe(24)
            ctx.store.set_meta(TOKEN_META, token)
        self.token: str = token
        self._saved_stock: dict[tuple[str, str], int] = {}
        path = ctx.options.get("faults")
        self._initial: FaultsSpec | None = load_file(path) if path else None

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.fleet.state.launch_fault = self.faults.launch_fault
        self.apply(self._initial or FaultsSpec())
        self.spawn(self._run(), name="faults")

    def info(self) -> dict[str, Any]:
        return {"admin_token": self.token}

    # ---- faults --------------------------------------------------------------------------------------------------
    def apply(self, spec: FaultsSpec) -> None:
        """Make ``spec`` the active configuration (HTTP faults at once; fleet stock-outs now)."""
        fleet = self.fleet
        self.faults.set(spec, now=self.ctx.clock.now())
        zones = list(self.ctx.identity.zones)
        wanted: dict[tuple[str, str], int] = {}
        for so in spec.spot_stockouts:
            for z in ([so.zone] if so.zone else zones):
                wanted[(so.instance_type, z)] = so.available
        for key, original in list(self._saved_stock.items()):
            if key not in wanted:
                fleet.set_spot_stock(key[0], key[1], original)
                del self._saved_stock[key]
        for (t, z), n in wanted.items():
            if (t, z) not in self._saved_stock:
                self._saved_stock[(t, z)] = fleet.stock(t, z, spot=True)
            fleet.set_spot_stock(t, z, n)

    def reclaim(self, instance_id: str | None = None, nodepool_id: str | None = None, count: int = 1) -> list[str]:
        """Spot interruption notices: this instance, or ``count`` running spot instances (of a pool) without one,
        oldest first."""
        fleet = self.fleet
        if instance_id:
            fleet.reclaim(instance_id)
            return [instance_id]
        cands = [i for i in fleet.instances(nodepool_id) if i.spot and i.status == "Running" and not i.reclaim_at]
        out = []
        for inst in cands[:count]:
            fleet.reclaim(inst.instance_id)
            out.append(inst.instance_id)
        return out

    async def _run(self) -> None:
        clock = self.ctx.clock
        while True:
            await asyncio.sleep(clock.real_seconds(TICK))
            try:
                now = clock.now()
                for r in self.faults.due_reclaims(now):
                    ids = self.reclaim(r.instance_id, r.nodepool_id, r.count)
                    self.faults.log.append({"fault": "reclaim", "instances": ids, "at": now})
                p = self.faults.reclaim_probability(TICK)
                if p > 0:
                    fleet = self.fleet
                    pool = self.faults.spec.reclaim_nodepool_id
                    for inst in fleet.instances(pool):
                        if inst.spot and inst.status == "Running" and not inst.reclaim_at \
                                and self.faults.draw() < p:
                            fleet.reclaim(inst.instance_id)
                            self.faults.log.append({"fault": "reclaim", "instances": [inst.instance_id], "at": now})
            except Exception:  # noqa: BLE001 - keep the fault loop alive
                log.exception("fault loop failed")

    # ---- HTTP ----------------------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return False
        given = auth[7:].strip().encode()
        secret = self.ctx.identity.access_key.access_key_secret.get_secret_value().encode()
        return hmac.compare_digest(given, self.token.encode()) or hmac.compare_digest(given, secret)

    async def _faults(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized: send Authorization: Bearer <admin_token>"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        if request.method == "PUT":
            raw = await request.body()
            try:
                data = yaml.safe_load(raw) if raw.strip() else {}
                spec = parse_spec(data, "faults")
            except yaml.YAMLError as e:
                return JSONResponse({"error": f"faults: not valid JSON/YAML: {e}"}, 400)
            except ValueError as e:
                return JSONResponse({"error": str(e)}, 422)
            self.apply(spec)
        return JSONResponse(self.faults.status())

    async def _reclaim(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Bearer"})
        try:
            body = json.loads(await request.body() or b"{}")
            ids = self.reclaim(body.get("instance_id"), body.get("nodepool_id"), int(body.get("count", 1)))
        except Exception as e:  # noqa: BLE001 - report any bad request plainly
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse({"reclaimed": ids})

    def app(self) -> Any:
        return Starlette(routes=[Route("/faults", self._faults, methods=["GET", "PUT"]),
                                 Route("/reclaim", self._reclaim, methods=["POST"])])
