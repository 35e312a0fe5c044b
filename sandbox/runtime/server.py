"""One ``tensorflow_model_server`` process in a pod: startup, model loading, REST listener, readiness, logs.

The startup sequence is TF Serving's (tensorflow/serving 1.15 ``model_servers/main.cc`` and ``server.cc``
``Server::BuildAndStart``, ``server_core.cc``, ``sources/storage_path/file_system_storage_path_source.cc``):

1. flags (:mod:`.flags`): a bad value or ``--help`` prints the usage and exits 255; unknown arguments print
   ``unknown argument: ...`` and the usage, then startup continues;
2. ``--port=0`` / neither ``--model_base_path`` nor ``--model_config_file`` -> ``Failed to start server. Error:
   Invalid argument: ...``, exit 255;
3. the model config: ``--model_config_file`` read through the pod's volumes (missing: ``Not found: <path>; No such
   file or directory``; not a valid ``ModelServerConfig`` text proto: protobuf's parse error, then ``Invalid
   argument: Invalid protobuf file: '<path>'``), or one model from ``--model_name``/``--model_base_path``;
   ``ServerCore``'s config checks;
4. for every model the file system source polls the base path every ``--file_system_poll_wait_seconds``
   (simulated seconds): a missing base path logs ``FileSystemStoragePathSource encountered a filesystem access
   error: Could not find base path <p> for servable <m>``, a policy that selects nothing logs ``No versions of
   servable <m> found under base path <p>`` (and, for each missing ``specific`` version, ``Version <v> of servable
   <m>, which was requested to be served as a 'specific' version ..., was not found in the file system``), and
   the server keeps waiting: it never exports its REST API, so the pod never becomes Ready;
5. each selected version is loaded (``Approving load`` / ``Loading servable version`` / ``Successfully loaded
   servable version {name: m version: v}``); a failing load is retried ``--max_num_load_retries`` times every
   ``--load_retry_interval_micros`` (simulated); a model left with no available version fails the startup:
   ``Failed to start server. Error: Unknown: 1 model(s) did not become available: ...``, exit 255 (then the
   kubelet's CrashLoopBackOff);
6. version labels are applied (``Request to assign label to version ... which is not currently available``);
7. ``Running gRPC ModelServer at 0.0.0.0:<port> ...`` and ``Exporting HTTP/REST API at:localhost:<rest port> ...``:
   only now does the REST API answer (on a loopback port of this machine: :attr:`ModelServer.rest_address`).

gRPC is not served (the sandbox's clients speak REST); a ``tcpSocket`` probe on ``--port`` passes once step 7 ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from sandbox.controllers.runtime import ContainerSpec, ContainerState

from .capacity import Capacity, CapacitySettings
from .core import ServerCore
from .flags import CommandError, ServerFlags, parse_flags, server_argv
from .model_config import (
    ModelConfig,
    ModelServerConfig,
    parse_model_server_config,
    select_versions,
    single_model_config,
    validate,
)
from .pbtxt import TextFormatError
from .podfs import PodFS
from .rest import RestApi
from .servables import LoadError, load_version

log = logging.getLogger("sandbox.runtime")

TF_VERSION = "1.15.0"
HEAD_LINES = 300
TAIL_LINES = 2000
MIN_POLL_REAL = 0.2  # real seconds: the file system source never polls faster than this (CPU guard at high speed)
MIN_WATCH_REAL = 2.0  # real seconds between the polls of a started server (many pods poll; TF's default is 1 s)


class ServerLog:
    """The container's stdout+stderr: glog-style lines (``2021-06-16 08:15:35.123456: I <file>:<line>] <msg>``)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.head: list[str] = []
        self.tail: list[str] = []
        self.dropped = 0

    def _add(self, line: str) -> None:
        if len(self.head) < HEAD_LINES:
            self.head.append(line)
            return
        self.tail.append(line)
        if len(self.tail) > TAIL_LINES:
            drop = len(self.tail) - TAIL_LINES
            del self.tail[:drop]
            self.dropped += drop

    def _line(self, sev: str, where: str, msg: str) -> None:
        ts = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        for i, part in enumerate(msg.split("\n")):
            self._add(f"{ts}: {sev} {where}] {part}" if i == 0 else part)

    def info(self, where: str, msg: str) -> None:
        self._line("I", where, msg)

    def warning(self, where: str, msg: str) -> None:
        self._line("W", where, msg)

    def error(self, where: str, msg: str) -> None:
        self._line("E", where, msg)

    def raw(self, text: str) -> None:
        for line in text.rstrip("\n").split("\n"):
            self._add(line)

    def text(self) -> str:
        lines = list(self.head)
        if self.dropped:
            lines.append(f"[... {self.dropped} lines not kept by the sandbox ...]")
        return "\n".join(lines + self.tail) + ("\n" if lines or self.tail else "")


def sid(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


class ModelServer:
    """A running model-server container (the :class:`~sandbox.controllers.runtime.ContainerHandle`)."""

    # tensorflow_model_server installs no SIGTERM handler (tensorflow/serving#356, #1853): a deleted pod serves on
    # until its grace period ends and the kubelet kills it.
    ignores_sigterm = True

    def __init__(self, spec: ContainerSpec, *, fs: PodFS, clock: Any, timings: dict[str, float],
                 settings: CapacitySettings, cache_dir: Path, changed: Callable[[], None],
                 on_stop: Callable[[ModelServer], None] | None = None) -> None:
        self.spec = spec
        self.fs = fs
        self.clock = clock
        self.timings = timings
        self.cache_dir = cache_dir
        self.changed = changed
        self.on_stop = on_stop
        self.log = ServerLog(clock)
        self.core = ServerCore()
        self.capacity = Capacity(settings)
        self.flags: ServerFlags | None = None
        self.api: RestApi | None = None
        self.started = False  # step 7 done: gRPC "listening", REST exported when configured
        self.exit_code: int | None = None
        self.exit_message = ""
        self.rest_address: tuple[str, int] | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._serve: asyncio.Task | None = None
        self._stopped = False
        self.task = asyncio.get_running_loop().create_task(self._main(), name=f"tfserving-{spec.pod_name}")

    # ---- the ContainerHandle seam ------------------------------------------------------------------------------------
    def state(self) -> ContainerState:
        if self.exit_code is not None:
            return ContainerState(ready=False, exit_code=self.exit_code, reason="Completed" if self.exit_code == 0
                                  else "Error", message=self.exit_message)
        probe = self.spec.container.get("readinessProbe")
        if not probe:
            return ContainerState(ready=True)
        ok, message = self.probe(probe)
        return ContainerState(ready=ok, message=message)

    def logs(self) -> str:
        return self.log.text()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self._stop_rest()
        if self.on_stop:
            self.on_stop(self)
        await asyncio.to_thread(shutil.rmtree, self.cache_dir, True)

    # ---- readiness -----------------------------------------------------------------------------------------------
    def _port(self, port: Any) -> int | None:
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for p in self.spec.container.get("ports") or []:
            if p.get("name") == port:
                return int(p.get("containerPort", 0))
        return None

    def listening(self, port: int | None) -> bool:
        if not self.started or self.flags is None or port is None:
            return False
        if port == self.flags.port:
            return True
        return self.rest_address is not None and port == self.flags.rest_api_port

    def probe(self, probe: dict[str, Any]) -> tuple[bool, str]:
        """The kubelet's readiness probe against this process: (passed, failure message in kubelet's words)."""
        ip = self.spec.pod_ip
        if "httpGet" in probe:
            h = probe["httpGet"] or {}
            port = self._port(h.get("port"))
            path = h.get("path") or "/"
            if not path.startswith("/"):
                path = "/" + path
            scheme = (h.get("scheme") or "HTTP").lower()
            if not self.listening(port) or port != (self.flags.rest_api_port if self.flags else None) \
                    or self.api is None:
                return False, (f'Get "{scheme}://{ip}:{port}{path}": dial tcp {ip}:{port}: connect: '
                               "connection refused")
            if scheme == "https":
                return False, f'Get "https://{ip}:{port}{path}": http: server gave HTTP response to HTTPS client'
            status, _ = self.api.get(path.split("?", 1)[0])
            if 200 <= status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in probe:
            port = self._port((probe["tcpSocket"] or {}).get("port"))
            if self.listening(port):
                return True, ""
            return False, f"dial tcp {ip}:{port}: connect: connection refused"
        return self.started, "" if self.started else "the model server has not started"

    # ---- the process -------------------------------------------------------------------------------------------------
    def _exit(self, code: int, message: str = "") -> None:
        self.exit_code = code
        self.exit_message = message
        self.changed()

    def _fail(self, status: str) -> None:
        self.log.raw(f"Failed to start server. Error: {status}")
        self._exit(255, f"Failed to start server. Error: {status}")

    async def _main(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the process crashes, the pod shows it
            log.exception("model server %s/%s crashed", self.spec.namespace, self.spec.pod_name)
            self.log.raw(f"terminate called after throwing an instance of 'std::runtime_error'\n  what():  {e}")
            self._exit(134, str(e))

    async def _run(self) -> None:
        try:
            argv = server_argv(self.spec.argv)
        except CommandError as e:
            self.log.raw(str(e))
            self._exit(2, str(e))
            return
        parsed = parse_flags(argv)
        for err in parsed.errors:
            self.log.error("external/org_tensorflow/tensorflow/core/util/command_line_flags.cc:81", err)
        if not parsed.ok:
            self.log.raw(parsed.usage)
            self._exit(255, "usage")
            return
        flags = self.flags = parsed.flags
        if flags.version:
            self.log.raw(f"TensorFlow ModelServer: {TF_VERSION}-rc0+dev.sha.sandbox\nTensorFlow Library: {TF_VERSION}")
            self._exit(0)
            return
        if parsed.unknown:
            self.log.raw(f"unknown argument: {parsed.unknown[0]}\n{parsed.usage}")
        await self.clock.sleep(self.timings.get("tfserving_startup", 0.0))
        if flags.port == 0:
            return self._fail("Invalid argument: server_options.grpc_port is not set.")
        if not flags.model_base_path and not flags.model_config_file:
            return self._fail("Invalid argument: Both server_options.model_base_path and "
                              "server_options.model_config_file are empty!")
        config = await self._read_config(flags)
        if config is None:
            return
        problem = validate(config)
        if problem:
            return self._fail(problem)
        self.log.info("tensorflow_serving/model_servers/server_core.cc:462", "Adding/updating models.")
        for m in config.models:
            self.log.info("tensorflow_serving/model_servers/server_core.cc:573", f" (Re-)adding model: {m.name}")
        await asyncio.gather(*(self._manage(m, flags) for m in config.models))
        unavailable = [m.name for m in config.models if not self.core.available(m.name)]
        if unavailable:
            detail = ""
            for name in unavailable:
                for s in self.core.models.get(name, {}).values():
                    err = (f" due to error: {s.error_code.replace('_', ' ').capitalize()}: {s.error_message}"
                           if s.error_code != "OK" else "")
                    detail += f"{{{sid(name, s.version)}{err}}}, "
            return self._fail(f"Unknown: {len(unavailable)} model(s) did not become available: {{{detail}}}")
        for m in config.models:
            for label, version in m.version_labels.items():
                if version not in self.core.available(m.name):
                    return self._fail(f"Failed precondition: Request to assign label to version {version} of model "
                                      f"{m.name}, which is not currently available for inference")
                self.core.labels.setdefault(m.name, {})[label] = version
        self.log.info("tensorflow_serving/model_servers/server.cc:358",
                      f"Running gRPC ModelServer at 0.0.0.0:{flags.port} ...")
        if flags.rest_api_port:
            if flags.rest_api_port == flags.port:
                self.log.error("tensorflow_serving/model_servers/server.cc:383",
                               "server_options.http_port cannot be same as grpc_port. Please use a different port "
                               "for HTTP/REST API. Skipped exporting HTTP/REST API.")
            else:
                await self._start_rest(flags)
                self.log.raw("[warn] getaddrinfo: address family for nodename not supported\n"
                             "[evhttp_server.cc : 238] NET_LOG: Entering the event loop ...")
                self.log.info("tensorflow_serving/model_servers/server.cc:378",
                              f"Exporting HTTP/REST API at:localhost:{flags.rest_api_port} ...")
        self.started = True
        self.changed()
        # serve until stopped; the file system source goes on polling and the manager loads new versions and
        # unloads the ones no longer aspired (every state of the status API is reachable in a running server)
        await asyncio.gather(asyncio.Event().wait(), *(self._watch(m, flags) for m in config.models))

    async def _read_config(self, flags: ServerFlags) -> ModelServerConfig | None:
        if not flags.model_config_file:
            self.log.info("tensorflow_serving/model_servers/server.cc:82",
                          f"Building single TensorFlow model file config:  model_name: {flags.model_name} "
                          f"model_base_path: {flags.model_base_path}")
            return single_model_config(flags.model_name, flags.model_base_path)
        path = flags.model_config_file
        try:
            raw = await asyncio.to_thread(self.fs.read_bytes, path)
        except FileNotFoundError:
            self._fail(f"Not found: {path}; No such file or directory")
            return None
        try:
            return parse_model_server_config(raw.decode("utf-8", errors="replace"))
        except TextFormatError as e:
            self.log.raw("[libprotobuf ERROR external/com_google_protobuf/src/google/protobuf/text_format.cc:307] "
                         f"Error parsing text-format tensorflow.serving.ModelServerConfig: {e}")
            self._fail(f"Invalid argument: Invalid protobuf file: '{path}'")
            return None

    async def _manage(self, model: ModelConfig, flags: ServerFlags) -> None:
        """The file system source + manager for one model, until its aspired versions settled."""
        poll_sim = float(flags.file_system_poll_wait_seconds)
        where = "tensorflow_serving/sources/storage_path/file_system_storage_path_source.cc"
        while True:
            if poll_sim < 0:
                await asyncio.Event().wait()  # negative: never polls (TF: waits forever for a first model)
            try:
                children = await asyncio.to_thread(self.fs.children, model.base_path)
            except FileNotFoundError:
                children = None
                self.log.error(f"{where}:362", "FileSystemStoragePathSource encountered a filesystem access error: "
                               f"Could not find base path {model.base_path} for servable {model.name}")
            if children is not None:
                aspired, missing = select_versions(model.version_policy, children)
                for v in missing:
                    self.log.warning(f"{where}:201", f"Version {v} of servable {model.name}, which was requested to "
                                     "be served as a 'specific' version in the servable's version policy, was not "
                                     "found in the file system")
                if not aspired:
                    self.log.warning(f"{where}:267", f"No versions of servable {model.name} found under base path "
                                     f"{model.base_path}")
                else:
                    await asyncio.gather(*(self._load(model, v, f"{model.base_path.rstrip('/')}/{child}", flags)
                                           for v, child in aspired.items()))
                    return
            if poll_sim == 0:
                await asyncio.Event().wait()  # polled once: nothing more will come
            await asyncio.sleep(max(MIN_POLL_REAL, self.clock.real_seconds(poll_sim)))

    async def _watch(self, model: ModelConfig, flags: ServerFlags) -> None:
        """After startup: TF Serving's ``FileSystemStoragePathSource`` keeps polling every
        ``--file_system_poll_wait_seconds`` and the ``AspiredVersionsManager`` reconciles, with the default
        ``AvailabilityPreservingPolicy`` (``core/availability_preserving_policy.cc``): new aspired versions are
        loaded first (START, LOADING, then AVAILABLE or END with the load error) and a version no longer aspired is
        unloaded (UNLOADING, then END) only while another aspired version is AVAILABLE. A failed load of a new
        version leaves the old one serving."""
        poll_sim = float(flags.file_system_poll_wait_seconds)
        if poll_sim <= 0:
            return
        while True:
            await asyncio.sleep(max(MIN_WATCH_REAL, self.clock.real_seconds(poll_sim)))
            try:
                children = await asyncio.to_thread(self.fs.children, model.base_path)
            except FileNotFoundError:
                continue
            aspired, _ = select_versions(model.version_policy, children)
            if not aspired:
                continue
            known = self.core.models.get(model.name, {})
            new = {v: c for v, c in aspired.items() if v not in known}
            if new:
                await asyncio.gather(*(self._load(model, v, f"{model.base_path.rstrip('/')}/{c}", flags)
                                       for v, c in new.items()))
            if any(self.core.models[model.name][v].state == "AVAILABLE" for v in aspired
                   if v in self.core.models.get(model.name, {})):
                for v, st in sorted(self.core.models.get(model.name, {}).items()):
                    if v not in aspired and st.state == "AVAILABLE":
                        await self._unload(model, v)

    async def _unload(self, model: ModelConfig, version: int) -> None:
        st = self.core.version_state(model.name, version)
        st.state = "UNLOADING"
        self.log.info("tensorflow_serving/core/loader_harness.cc:95",
                      f"Quiescing servable version {sid(model.name, version)}")
        await self.clock.sleep(self.timings.get("tfserving_unload", 0.0))
        self.log.info("tensorflow_serving/core/loader_harness.cc:118",
                      f"Unloading servable version {sid(model.name, version)}")
        st.servable = None
        st.state = "END"
        self.log.info("tensorflow_serving/core/loader_harness.cc:126",
                      f"Done unloading servable version {sid(model.name, version)}")

    async def _load(self, model: ModelConfig, version: int, path: str, flags: ServerFlags) -> None:
        st = self.core.version_state(model.name, version)
        st.state = "START"
        self.log.info("tensorflow_serving/core/basic_manager.cc:739",
                      f"Successfully reserved resources to load servable {sid(model.name, version)}")
        self.log.info("tensorflow_serving/core/loader_harness.cc:66",
                      f"Approving load for servable version {sid(model.name, version)}")
        st.state = "LOADING"
        self.log.info("tensorflow_serving/core/loader_harness.cc:74",
                      f"Loading servable version {sid(model.name, version)}")
        attempt = 0
        while True:
            self.log.info("sandbox/runtime/servables.py:1", f"Reading model from: {path}")
            try:
                size = sum((await asyncio.to_thread(self.fs.walk, path) or {}).values())
                servable = await asyncio.to_thread(load_version, self.fs, path,
                                                   self.cache_dir / model.name / str(version))
                await self.clock.sleep(self.timings.get("tfserving_load", 0.0) + size / 1e6 /
                                       max(self.timings.get("tfserving_load_mb_per_s", 1.0), 1e-6))
            except LoadError as e:
                code, _, message = str(e).partition(": ")
                self.log.error("tensorflow_serving/util/retrier.cc:37",
                               f"Loading servable: {sid(model.name, version)} failed: {e}")
                if attempt < max(0, flags.max_num_load_retries):
                    attempt += 1
                    self.log.info("tensorflow_serving/util/retrier.cc:33",
                                  f"Retrying of Loading servable: {sid(model.name, version)} retry: {attempt}")
                    await self.clock.sleep(max(0, flags.load_retry_interval_micros) / 1e6)
                    continue
                st.state = "END"
                st.error_code = code.upper().replace(" ", "_")
                st.error_message = message
                self.log.error("tensorflow_serving/core/loader_harness.cc:70",
                               f"Encountered an error for servable version {sid(model.name, version)}: {e}")
                return
            st.servable = servable
            st.state = "AVAILABLE"
            self.log.info("tensorflow_serving/core/loader_harness.cc:87",
                          f"Successfully loaded servable version {sid(model.name, version)}")
            return

    # ---- the REST listener -------------------------------------------------------------------------------------------
    async def _start_rest(self, flags: ServerFlags) -> None:
        self.api = RestApi(self.core, self.capacity, cors=flags.rest_api_enable_cors_support)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.api, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=75, proxy_headers=False, server_header=False, backlog=2048)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._uvicorn = server
        self._serve = asyncio.create_task(server.serve(sockets=[sock]), name=f"tfserving-rest-{self.spec.pod_name}")
        while not server.started:
            if self._serve.done():
                self._serve.result()
            await asyncio.sleep(0.005)
        self.rest_address = ("127.0.0.1", sock.getsockname()[1])

    async def _stop_rest(self) -> None:
        self.rest_address = None
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._serve is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._serve, 5)
