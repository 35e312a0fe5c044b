"""Real HTTP backends for the ingress tests: a thread-served server on loopback whose every GET is answered with JSON
by a function of the request (path, headers), standing in for a pod behind a Service (the sandbox ingress reaches
it through its pod-endpoint resolver seam)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, Any], tuple[int, dict[str, Any]]]
"""(path, headers) -> (status, JSON body)."""


def json_server(answer: Answer) -> ThreadingHTTPServer:
    """Start a server on 127.0.0.1 (a free port) answering each GET with ``answer(path, headers)``; stop it with
    ``shutdown()`` and ``server_close()``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status, body = answer(self.path, self.headers)
            out = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
