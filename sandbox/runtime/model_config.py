"""``ModelServerConfig`` (the ``--model_config_file`` text proto) as typed data, and the version policy.

Schema: tensorflow/serving ``tensorflow_serving/config/model_server_config.proto`` (``ModelServerConfig`` with
``model_config_list { config { name base_path model_type model_platform model_version_policy version_labels
logging_config } }``) and ``sources/storage_path/file_system_storage_path_source.proto``
(``ServableVersionPolicy``: oneof ``latest { num_versions }`` | ``all {}`` | ``specific { versions }``).

Version selection follows ``file_system_storage_path_source.cc`` (``PollFileSystemForServable``): children of the
base path that parse as an int64 are versions; ``latest`` aspires the ``max(num_versions, 1)`` highest, ``all`` every
one, ``specific`` those listed that exist and warns for each listed one that does not; no policy = ``latest`` 1.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .pbtxt import Field as PbField
from .pbtxt import Message, TextFormatError, parse

CONFIG_TYPE = "tensorflow.serving.ModelServerConfig"
INT64_MAX = 2**63 - 1


class VersionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1  # latest
    versions: tuple[int, ...] = ()  # specific

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {{ num_versions: {self.num_versions} }}"
        if self.kind == "all":
            return "all {}"
        return "specific { " + " ".join(f"versions: {v}" for v in self.versions) + " }"


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = ""
    base_path: str = ""
    model_platform: str = ""
    model_type: int | None = None
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    version_labels: dict[str, int] = Field(default_factory=dict)


class ModelServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    models: tuple[ModelConfig, ...] = ()


# ---- text format -> typed --------------------------------------------------------------------------------------
_MESSAGES: dict[str, dict[str, tuple[str, bool, str]]] = {
    # message type -> field -> (kind, repeated, message type or scalar type)
    "tensorflow.serving.ModelServerConfig": {
        "model_config_list": ("message", False, "tensorflow.serving.ModelConfigList"),
        "custom_model_config": ("message", False, "google.protobuf.Any"),
    },
    "tensorflow.serving.ModelConfigList": {"config": ("message", True, "tensorflow.serving.ModelConfig")},
    "tensorflow.serving.ModelConfig": {
        "name": ("scalar", False, "string"),
        "base_path": ("scalar", False, "string"),
        "model_type": ("scalar", False, "enum"),
        "model_platform": ("scalar", False, "string"),
        "model_version_policy": ("message", False,
                                 "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"),
        "version_labels": ("message", True, "tensorflow.serving.ModelConfig.VersionLabelsEntry"),
        "logging_config": ("message", False, "tensorflow.serving.LoggingConfig"),
    },
    "tensorflow.serving.ModelConfig.VersionLabelsEntry": {
        "key": ("scalar", False, "string"),
        "value": ("scalar", False, "int64"),
    },
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy": {
        "latest": ("message", False, "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
                                     ".Latest"),
        "all": ("message", False, "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.All"),
        "specific": ("message", False, "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
                                       ".Specific"),
    },
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Latest": {
        "num_versions": ("scalar", False, "uint32"),
    },
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.All": {},
    "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Specific": {
        "versions": ("scalar", True, "int64"),
    },
    "tensorflow.serving.LoggingConfig": {
        "sampling_config": ("message", False, "tensorflow.serving.SamplingConfig"),
        "log_collector_config": ("message", False, "tensorflow.serving.LogCollectorConfig"),
    },
    "tensorflow.serving.SamplingConfig": {"sampling_rate": ("scalar", False, "double")},
    "tensorflow.serving.LogCollectorConfig": {"type": ("scalar", False, "string"),
                                               "filename_prefix": ("scalar", False, "string")},
    "google.protobuf.Any": {"type_url": ("scalar", False, "string"), "value": ("scalar", False, "bytes")},
}
_ONEOFS = {"tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy":
           ("policy_choice", {"latest", "all", "specific"}),
           "tensorflow.serving.ModelServerConfig": ("config", {"model_config_list", "custom_model_config"})}
_MODEL_TYPES = {"MODEL_TYPE_UNSPECIFIED": 0, "TENSORFLOW": 1, "OTHER": 2}


def _check(msg: Message, type_name: str) -> dict[str, list[PbField]]:
    """Type-check one message against the schema; returns its fields by name."""
    schema = _MESSAGES[type_name]
    seen: dict[str, list[PbField]] = {}
    oneof = _ONEOFS.get(type_name)
    for f in msg.fields:
        spec = schema.get(f.name)
        if spec is None:
            raise TextFormatError(f.line, f.col, f'Message type "{type_name}" has no field named "{f.name}".')
        kind, repeated, sub = spec
        if not repeated and f.name in seen:
            raise TextFormatError(f.line, f.col, f'Non-repeated field "{f.name}" is specified multiple times.')
        if oneof and f.name in oneof[1]:
            other = next((n for n in seen if n in oneof[1] and n != f.name), None)
            if other:
                raise TextFormatError(f.line, f.col, f'Field "{f.name}" is specified along with field "{other}", '
                                      f'another member of oneof "{oneof[0]}".')
        if kind == "message":
            if f.kind != "message":
                raise TextFormatError(f.line, f.col, f'Expected "{{", found "{f.value}".')
            _check(f.value, sub)
        else:
            if f.kind == "message":
                raise TextFormatError(f.line, f.col, 'Expected ":", found "{".')
            _scalar(f, sub)
        seen.setdefault(f.name, []).append(f)
    return seen


def _scalar(f: PbField, typ: str) -> object:
    if typ in ("string", "bytes"):
        if f.kind != "string":
            raise TextFormatError(f.line, f.col, f'Expected string, got: {f.value}')
        return f.value
    if typ in ("int64", "uint32"):
        if f.kind != "number" or not isinstance(f.value, int):
            raise TextFormatError(f.line, f.col, f"Expected integer, got: {f.value}")
        lo, hi = (0, 2**32 - 1) if typ == "uint32" else (-(2**63), INT64_MAX)
        if not lo <= f.value <= hi:
            raise TextFormatError(f.line, f.col, f"Integer out of range ({f.value})")
        return f.value
    if typ == "double":
        if f.kind != "number":
            raise TextFormatError(f.line, f.col, f"Expected double, got: {f.value}")
        return float(f.value)
    if typ == "enum":
        if f.kind == "ident" and f.value in _MODEL_TYPES:
            return _MODEL_TYPES[f.value]
        if f.kind == "number" and isinstance(f.value, int):
            return f.value
        raise TextFormatError(f.line, f.col, f'Unknown enumeration value of "{f.value}" for field "{f.name}".')
    raise AssertionError(typ)


def _one(fields: dict[str, list[PbField]], name: str, default: object = None) -> object:
    got = fields.get(name)
    return got[-1].value if got else default


def parse_model_server_config(text: str) -> ModelServerConfig:
    """Parse ``--model_config_file`` content; :class:`TextFormatError` (with line:column) when it is not valid."""
    root = parse(text)
    top = _check(root, CONFIG_TYPE)
    if "custom_model_config" in top:
        f = top["custom_model_config"][0]
        raise TextFormatError(f.line, f.col, "custom_model_config is not supported by the sandbox's model server")
    models: list[ModelConfig] = []
    lst = _one(top, "model_config_list")
    if isinstance(lst, Message):
        for cf in _check(lst, "tensorflow.serving.ModelConfigList").get("config", []):
            c = _check(cf.value, "tensorflow.serving.ModelConfig")
            policy = VersionPolicy()
            pol = _one(c, "model_version_policy")
            if isinstance(pol, Message):
                p = _check(pol, "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy")
                if "latest" in p:
                    lf = _check(p["latest"][-1].value,
                                "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Latest")
                    policy = VersionPolicy(kind="latest", num_versions=int(_one(lf, "num_versions", 0)))  # type: ignore[arg-type]
                elif "all" in p:
                    policy = VersionPolicy(kind="all")
                elif "specific" in p:
                    sf = _check(p["specific"][-1].value,
                                "tensorflow.serving.FileSystemStoragePathSourceConfig.ServableVersionPolicy"
                                ".Specific")
                    policy = VersionPolicy(kind="specific",
                                           versions=tuple(int(f.value) for f in sf.get("versions", [])))
            labels: dict[str, int] = {}
            for lf_ in c.get("version_labels", []):
                entry = _check(lf_.value, "tensorflow.serving.ModelConfig.VersionLabelsEntry")
                labels[str(_one(entry, "key", ""))] = int(_one(entry, "value", 0))  # type: ignore[arg-type]
            mt = _one(c, "model_type")
            models.append(ModelConfig(
                name=str(_one(c, "name", "")), base_path=str(_one(c, "base_path", "")),
                model_platform=str(_one(c, "model_platform", "")),
                model_type=int(mt) if mt is not None else None,  # type: ignore[call-overload]
                version_policy=policy, version_labels=labels))
    return ModelServerConfig(models=tuple(models))


def single_model_config(name: str, base_path: str) -> ModelServerConfig:
    """``--model_name``/``--model_base_path`` (``BuildSingleModelConfig`` in ``server.cc``): platform tensorflow,
    default (latest 1) policy."""
    return ModelServerConfig(models=(ModelConfig(name=name, base_path=base_path, model_platform="tensorflow"),))


def validate(config: ModelServerConfig) -> str | None:
    """``ServerCore``'s checks of a new config (``server_core.cc``): the error status text, or None."""
    names: set[str] = set()
    for m in config.models:
        if m.name in names:
            return f"Invalid argument: Illegal to list model {m.name} multiple times in config list"
        names.add(m.name)
    for m in config.models:
        if not m.base_path.startswith("/") and "://" not in m.base_path:
            return (f"Invalid argument: Expected model {m.name} to have an absolute path or URI; got "
                    f"base_path()={m.base_path}")
    for m in config.models:
        if m.model_type is not None and m.model_type != 0:
            if m.model_platform:
                return ("Invalid argument: Illegal setting both ModelServerConfig::model_type (deprecated) and "
                        "ModelServerConfig::model_platform.")
            if m.model_type != 1:
                return f"Invalid argument: ModelServerConfig::model_type choice {m.model_type} not supported."
        elif not m.model_platform:
            return ("Invalid argument: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                    "ModelServerConfig::model_platform.")
        elif m.model_platform != "tensorflow":
            return f"Failed precondition: PlatformConfigMap has no entry for platform {m.model_platform}"
    return None


# ---- version policy ----------------------------------------------------------------------------------------------
def parse_version(child: str) -> int | None:
    """``strings::safe_strto64``: an optional sign, digits, surrounding whitespace allowed; in int64 range."""
    if not re.fullmatch(r"\s*[+-]?\d+\s*", child):
        return None
    v = int(child)
    return v if -(2**63) <= v <= INT64_MAX else None


def select_versions(policy: VersionPolicy, children: list[str]) -> tuple[dict[int, str], list[int]]:
    """(aspired version -> child directory, specific versions requested but missing), as the file system source."""
    by_version: dict[int, str] = {}
    for child in sorted(set(children)):
        v = parse_version(child)
        if v is not None:
            by_version[v] = child  # duplicates (e.g. "1" and "01"): the last in order wins, as upstream's map
    if policy.kind == "all":
        return dict(sorted(by_version.items())), []
    if policy.kind == "specific":
        wanted = set(policy.versions)
        chosen = {v: c for v, c in sorted(by_version.items()) if v in wanted}
        missing = [v for v in policy.versions if v not in chosen]
        return chosen, missing
    n = max(policy.num_versions, 1)
    latest = sorted(by_version.items(), reverse=True)[:n]
    return dict(sorted(latest)), []
