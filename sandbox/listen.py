"""Listening sockets for the sandbox's endpoints, on the same port after a restart.

A cloud's endpoints do not move, and what the sandbox stores refers to them: an OSS PersistentVolume keeps its
``url`` (and a PV's volume source is immutable, so a re-run could not change it), a saved block keeps its endpoints.
So a sandbox started again on its state directory listens where it did, when the port is free; the port each
service last had is kept in the store's meta table (``port:<service>``).
"""

from __future__ import annotations

import logging
import socket

from .store import Store

log = logging.getLogger("sandbox")


BACKLOG = 4096  # the ingress's uvicorn backlog; asyncio's create_server listens again with its own, which is fine


def _socket(host: str) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the socket says it is TCP
    # (base_events._set_nodelay checks sock.proto); without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def listen_socket(store: Store, host: str, name: str, requested: int = 0) -> socket.socket:
    """A listening TCP socket on ``host``: on ``requested`` if given, else on the port ``name`` had before, else on a
    free one. It listens here, not first in uvicorn: with SO_REUSEADDR, ``bind`` succeeds on a port that a
    client's outgoing connection holds as its local port (an ephemeral port, from the range free ports come from),
    and only ``listen`` fails then (EADDRINUSE); both are tried before the old port is given up."""
    previous = store.get_meta(f"port:{name}")
    sock = _socket(host)
    if requested:
        sock.bind((host, requested))
        sock.listen(BACKLOG)
    else:
        try:
            sock.bind((host, int(previous or 0)))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            log.warning("sandbox %s: port %s of the last run is taken (%s); listening on a new one: objects that "
                        "name the old endpoint (an OSS PersistentVolume's url) will not reach it", name, previous, exc)
            sock = _socket(host)
            sock.bind((host, 0))
            sock.listen(BACKLOG)
    store.set_meta(f"port:{name}", sock.getsockname()[1])
    return sock
