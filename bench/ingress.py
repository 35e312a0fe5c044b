"""Benchmark: requests/s and p99 through the sandbox's ingress data plane vs. the same backend answered directly.

    .venv/bin/python bench/ingress.py [--seconds 5] [--connections 32]

The backend is uvicorn + httptools serving a raw ASGI app with zero service time (a 2-byte JSON body), in a
process of its own: "the same HTTP server stack" the ingress listener uses. Each figure is measured by a
closed-loop load generator (asyncio + httptools, keep-alive connections, one request in flight per connection) in
a third process: first straight to the backend, then through a whole in-process sandbox (the ingress shares its
event loop with the API server and controllers, as in real use) routing by Host to a selector-less Service whose
Endpoints point at a pod IP resolved to the backend. Prints figures and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "bench.example.com"
POD_IP = "10.250.9.9"


# ---- backend -----------------------------------------------------------------------------------------------------
async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _serve_backend(port_q: mp.Queue) -> None:
    import uvicorn

    # proto IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP (else every
    # keep-alive response split in two writes waits ~40 ms for the client's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port_q.put(sock.getsockname()[1])
    config = uvicorn.Config(_app, log_level="warning", access_log=False, lifespan="off", http="httptools",
                            proxy_headers=False, server_header=False, backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


# ---- load generator ----------------------------------------------------------------------------------------------
class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.done: asyncio.Future | None = None
        self.status = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.done and not self.done.done():
            self.done.set_result(self.status)

    def connection_lost(self, exc) -> None:
        if self.done and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))


async def _load(port: int, seconds: float, connections: int) -> tuple[int, list[float], int]:
    loop = asyncio.get_running_loop()
    req = f"GET /v1/models/m HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: bench\r\n\r\n".encode()
    lat: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        _, c = await loop.create_connection(_Client, "127.0.0.1", port)
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            c.done = loop.create_future()
            c.transport.write(req)
            status = await c.done
            lat.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
        c.transport.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    return int(len(lat) / elapsed), lat, errors


def _run_load(port: int, seconds: float, connections: int, out: mp.Queue) -> None:
    rps, lat, errors = asyncio.run(_load(port, seconds, connections))
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
    out.put((rps, p50, p99, errors, len(lat)))


def measure(port: int, seconds: float, connections: int) -> tuple[int, float, float, int, int]:
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_run_load, args=(port, seconds, connections, q))
    p.start()
    res = q.get()
    p.join()
    return res


# ---- main --------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    backend = ctx.Process(target=_serve_backend, args=(port_q,), daemon=True)
    backend.start()
    bport = port_q.get(timeout=30)
    time.sleep(0.5)

    from sandbox.runner import Sandbox

    with tempfile.TemporaryDirectory() as tmp:
        sb = Sandbox(Path(tmp) / "sb", speed=10.0)
        sb.start()
        try:
            kube = sb.services.kube.store
            ingress = sb.services.ingress
            ingress.add_resolver(lambda ip, port: ("127.0.0.1", bport) if (ip, port) == (POD_IP, 8501) else None)
            kube.create("namespaces", {"metadata": {"name": "bench"}})
            kube.create("services", {"metadata": {"name": "web", "namespace": "bench"},
                                     "spec": {"ports": [{"name": "http", "port": 8501}]}}, "bench")
            kube.create("endpoints", {"metadata": {"name": "web", "namespace": "bench"}, "subsets": [
                {"addresses": [{"ip": POD_IP}], "ports": [{"name": "http", "port": 8501}]}]}, "bench")
            kube.create("ingresses", {"metadata": {"name": "web", "namespace": "bench"}, "spec": {
                "ingressClassName": "nginx", "rules": [{"host": HOST, "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "web", "port": {"number": 8501}}}}]}}]}}, "bench")
            iport = int(sb.info["ingress_endpoint"].rsplit(":", 1)[1])
            deadline = time.monotonic() + 10
            while ingress.table.match(HOST, "/") is None or not ingress.table.match(HOST, "/").endpoints:
                if time.monotonic() > deadline:
                    raise SystemExit("ingress route did not appear")
                time.sleep(0.05)
            measure(bport, 1.0, args.connections)  # warm-up
            d_rps, d_p50, d_p99, d_err, d_n = measure(bport, args.seconds, args.connections)
            measure(iport, 1.0, args.connections)  # warm-up (upstream pool fills)
            i_rps, i_p50, i_p99, i_err, i_n = measure(iport, args.seconds, args.connections)
            counted = ingress.log.total("bench-web-8501")
        finally:
            sb.stop()
    backend.terminate()

    print(f"connections={args.connections} seconds={args.seconds} cpus={mp.cpu_count()}")
    print(f"direct : {d_rps:7d} req/s  p50 {d_p50:6.2f} ms  p99 {d_p99:6.2f} ms  errors {d_err}/{d_n}")
    print(f"ingress: {i_rps:7d} req/s  p50 {i_p50:6.2f} ms  p99 {i_p99:6.2f} ms  errors {i_err}/{i_n}"
          f"  (counted on the route: {counted})")
    print(f"ratio  : throughput {i_rps / max(d_rps, 1):.2f}x of direct, p99 {i_p99 / max(d_p99, 1e-9):.2f}x of direct")


if __name__ == "__main__":
    main()
