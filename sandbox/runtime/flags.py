"""The model server's command line, parsed the way ``tensorflow_model_server`` parses it.

TF Serving's ``main.cc`` (tensorflow/serving ``tensorflow_serving/model_servers/main.cc``, 1.15.0 and master) builds a
``std::vector<tensorflow::Flag>`` and calls ``tensorflow::Flags::Parse`` (tensorflow
``tensorflow/core/util/command_line_flags.cc``). That parser's rules, which this module follows:

- a flag is only ``--name=value`` (``--name value`` is *not* understood: ``--name`` and ``value`` are both left
  over as unknown arguments); a bool flag may also be given bare (``--name`` = true) or as ``=true``/``=false``;
- each argument is tried against the flags in declaration order, by prefix (``--`` + name + ``=``);
- a value that does not convert (``--port=abc``) logs ``Couldn't interpret value abc for flag port.`` and makes
  ``Parse`` fail: ``main`` prints the usage text and returns -1 (the container exits with code 255);
- ``--help`` makes ``Parse`` fail too (usage, exit 255);
- arguments no flag claims (and everything after ``--``) are passed through; ``main`` then prints
  ``unknown argument: <the first one>`` and the usage text **and carries on starting the server** (TF Serving does
  not refuse unknown flags; it only complains).

The container's ``command`` + ``args`` may also be arena's shell form ``sh -c "/usr/bin/tensorflow_model_server
--port=8500 ..."``: the shell string is split with :func:`shlex.split` (POSIX shell word splitting, quotes honoured;
no variable or command substitution is performed).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FlagType = Literal["int32", "int64", "bool", "string", "float"]

# (name, type, default, help) in main.cc's declaration order (order matters: arguments are matched by prefix).
# Help texts are our short paraphrases, not TF Serving's wording.
FLAG_LIST: tuple[tuple[str, FlagType, Any, str], ...] = (
    ("port", "int32", 8500, "TCP port for the gRPC API (0 disables it)"),
    ("grpc_socket_path", "string", "", "UNIX socket for the gRPC API"),
    ("rest_api_port", "int32", 0, "port for the HTTP/REST API (0: not exported; must differ from --port)"),
    ("rest_api_num_threads", "int32", 0, "HTTP/REST worker threads (0: from the CPU count)"),
    ("rest_api_timeout_in_ms", "int32", 30000, "timeout of HTTP/REST calls"),
    ("rest_api_enable_cors_support", "bool", False, "add CORS headers to responses"),
    ("enable_batching", "bool", False, "enable batching"),
    ("allow_version_labels_for_unavailable_models", "bool", False, "allow labels on versions not yet available"),
    ("batching_parameters_file", "string", "", "BatchingParameters text proto"),
    ("enable_per_model_batching_parameters", "bool", False, "read batching_params.pbtxt from each SavedModel"),
    ("model_config_file", "string", "", "ModelServerConfig text proto (then --model_name/--model_base_path are "
                                        "ignored)"),
    ("model_config_file_poll_wait_seconds", "int32", 0, "re-read --model_config_file this often (0: once)"),
    ("model_name", "string", "default", "name of the model (without --model_config_file)"),
    ("model_base_path", "string", "", "base path of the model (without --model_config_file)"),
    ("num_load_threads", "int32", 0, "threads loading servables"),
    ("num_unload_threads", "int32", 0, "threads unloading servables"),
    ("max_num_load_retries", "int32", 5, "retries of a failed load"),
    ("load_retry_interval_micros", "int64", 60_000_000, "interval between load retries"),
    ("file_system_poll_wait_seconds", "int32", 1, "interval of the file system polls for new versions"),
    ("flush_filesystem_caches", "bool", True, "flush file system caches after loads"),
    ("tensorflow_session_parallelism", "int64", 0, "TensorFlow session threads"),
    ("tensorflow_session_config_file", "string", "", "TensorFlow ConfigProto text proto"),
    ("tensorflow_intra_op_parallelism", "int64", 0, "intra-op threads"),
    ("tensorflow_inter_op_parallelism", "int64", 0, "inter-op threads"),
    ("use_alts_credentials", "bool", False, "use ALTS credentials"),
    ("ssl_config_file", "string", "", "SSLConfig text proto for gRPC"),
    ("platform_config_file", "string", "", "PlatformConfigMap text proto"),
    ("per_process_gpu_memory_fraction", "float", 0.0, "fraction of the GPU memory to allocate"),
    ("saved_model_tags", "string", "serve", "tags of the MetaGraphDef to load"),
    ("grpc_channel_arguments", "string", "", "gRPC channel arguments"),
    ("grpc_max_threads", "int32", 0, "gRPC server threads"),
    ("enable_model_warmup", "bool", True, "replay warmup requests at load time"),
    ("num_request_iterations_for_warmup", "int32", 0, "warmup iterations"),
    ("version", "bool", False, "display the version"),
    ("monitoring_config_file", "string", "", "MonitoringConfig text proto"),
    ("remove_unused_fields_from_bundle_metagraph", "bool", True, "trim the MetaGraphDef"),
    ("prefer_tflite_model", "bool", False, "prefer model.tflite"),
    ("num_tflite_pools", "int32", 0, "TFLite interpreter pools"),
    ("num_tflite_interpreters_per_pool", "int32", 1, "TFLite interpreters per pool"),
    ("enable_signature_method_name_check", "bool", False, "check SignatureDef method names"),
    ("xla_cpu_compilation_enabled", "bool", False, "enable XLA:CPU JIT"),
    ("xla_gpu_compilation_enabled", "bool", False, "enable XLA:GPU JIT"),
    ("enable_profiler", "bool", True, "enable the profiler service"),
    ("thread_pool_factory_config_file", "string", "", "ThreadPoolConfig text proto"),
    ("mixed_precision", "string", "", "mixed precision mode"),
    ("skip_initialize_tpu", "bool", False, "skip TPU initialisation"),
    ("enable_grpc_healthcheck_service", "bool", False, "enable the gRPC health service"),
    ("enable_serialization_as_tensor_content", "bool", False, "serialize predict responses as tensor_content"),
)
_BY_NAME = {f[0]: f for f in FLAG_LIST}
MODEL_SERVER = "tensorflow_model_server"
SHELLS = ("sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash", "/bin/ash", "ash")


class ServerFlags(BaseModel):
    """The flags the sandbox's model server uses (the rest are accepted and kept in ``values``)."""

    model_config = ConfigDict(frozen=True)

    port: int = 8500
    rest_api_port: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    monitoring_config_file: str = ""
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    file_system_poll_wait_seconds: int = 1
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    version: bool = False
    values: dict[str, Any] = {}


@dataclass
class ParseResult:
    """What ``main`` sees after ``Flags::Parse``: the flags, the messages it logged, and what it does next."""

    program: str
    flags: ServerFlags
    ok: bool  # False: main prints the usage and returns -1 (exit 255)
    errors: list[str] = field(default_factory=list)  # LOG(ERROR) lines of the parser
    unknown: list[str] = field(default_factory=list)  # arguments no flag claimed
    help: bool = False

    @property
    def usage(self) -> str:
        return usage(self.program)


class CommandError(ValueError):
    """The container does not run the model server in a form we understand (e.g. ``sh -c`` with no string)."""


def server_argv(argv: list[str]) -> list[str]:
    """The model server's own argv from a container's ``command + args`` (direct or ``sh -c "..."``).

    ``sh -c STRING [name [args...]]`` runs STRING: it is split with shlex; a leading ``exec`` is dropped.
    """
    if not argv:
        raise CommandError("the container has no command")
    first = argv[0]
    if first in SHELLS or first.rsplit("/", 1)[-1] in ("sh", "bash", "ash"):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-c":
            rest = rest[1:]  # shell options such as -e, -x
        if not rest or rest[0] != "-c" or len(rest) < 2:
            raise CommandError(f"{first}: -c: option requires an argument")
        try:
            words = shlex.split(rest[1], comments=True)
        except ValueError as e:
            raise CommandError(f"{first}: -c: syntax error: {e}") from None
        if words and words[0] == "exec":
            words = words[1:]
        for sep in ("&&", "||", ";", "|"):
            if sep in words:  # `a && b`: the model server is one of the commands; take the one that runs it
                parts: list[list[str]] = [[]]
                for w in words:
                    if w in ("&&", "||", ";", "|"):
                        parts.append([])
                    else:
                        parts[-1].append(w)
                words = next((p for p in parts if p and p[0].rsplit("/", 1)[-1] == MODEL_SERVER), parts[-1])
                break
        if not words:
            raise CommandError(f"{first} -c: empty command")
        return words
    return list(argv)


def _parse_value(kind: FlagType, raw: str) -> Any:
    if kind in ("int32", "int64"):
        # sscanf("%d%c") == 1: optional sign, digits, nothing after (leading whitespace is skipped by sscanf)
        m = re.fullmatch(r"\s*([+-]?\d+)", raw)
        if not m:
            raise ValueError
        v = int(m.group(1))
        lo, hi = (-(2**31), 2**31 - 1) if kind == "int32" else (-(2**63), 2**63 - 1)
        if not lo <= v <= hi:
            raise ValueError
        return v
    if kind == "float":
        m = re.fullmatch(r"\s*([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)", raw)
        if not m:
            raise ValueError
        return float(m.group(1))
    return raw


def _try_flag(arg: str, name: str, kind: FlagType) -> tuple[bool, bool, Any]:
    """(found, value_ok, value) for one argument against one flag, like ``Flag::Parse``."""
    prefix = "--" + name
    if not arg.startswith(prefix):
        return False, True, None
    rest = arg[len(prefix):]
    if kind == "bool":
        if rest == "":
            return True, True, True
        if rest == "=true":
            return True, True, True
        if rest == "=false":
            return True, True, False
        return True, False, rest  # tensorflow's ParseBoolFlag claims the argument and fails
    if not rest.startswith("="):
        return False, True, None
    raw = rest[1:]
    try:
        return True, True, _parse_value(kind, raw)
    except ValueError:
        return True, False, raw


def parse_flags(argv: list[str]) -> ParseResult:
    """Parse the model server's argv (``argv[0]`` is the program) as ``tensorflow::Flags::Parse`` + ``main`` do."""
    program = argv[0] if argv else MODEL_SERVER
    values: dict[str, Any] = {name: default for name, _, default, _ in FLAG_LIST}
    errors: list[str] = []
    unknown: list[str] = []
    ok = True
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            unknown.extend(args[i:])
            break
        found = False
        for name, kind, _, _ in FLAG_LIST:
            found, value_ok, value = _try_flag(arg, name, kind)
            if not value_ok:
                errors.append(f"Couldn't interpret value {value} for flag {name}.")
                ok = False
            elif found:
                values[name] = value
            if found:
                break
        if not found:
            unknown.append(arg)
        i += 1
    help_ = bool(unknown) and unknown[0] == "--help"
    flags = ServerFlags(**{k: values[k] for k in ServerFlags.model_fields if k in values}, values=values)
    return ParseResult(program=program, flags=flags, ok=ok and not help_, errors=errors, unknown=unknown, help=help_)


def usage(program: str = MODEL_SERVER) -> str:
    """The usage text ``tensorflow::Flags::Usage`` prints (flag, type, help; defaults shown in the flag)."""
    lines = [f"usage: {program}", "Flags:"]
    for name, kind, default, text in FLAG_LIST:
        if kind == "bool":
            shown = f"--{name}={'true' if default else 'false'}"
        elif kind == "string":
            shown = f'--{name}="{default}"'
        elif kind == "float":
            shown = f"--{name}={default:f}"
        else:
            shown = f"--{name}={default}"
        lines.append(f"\t{shown:<33}\t{kind}\t{text}")
    return "\n".join(lines) + "\n"
