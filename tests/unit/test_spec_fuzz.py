"""Property-based fuzzing of the spec loader (issue 14): whatever the input, a DeploySpec or a SpecError.

Two properties:
- any bytes as a spec file, and any value in any field of an otherwise valid spec, end in a SpecError that names
  a field (or the file) or in a spec; never another exception, never a hang or unbounded memory;
- a spec that is accepted renders a plan whose every Kubernetes manifest validates against the 1.33 schema (so
  what validation lets through, the API server would take).

Cases hypothesis found are pinned with ``@example``.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from core.spec import DeploySpec, SpecError
from sandbox.kube.schema import validator
from tasks.plan import render_all

SEED_CLUSTER = "c210fbedb96674b9eaf15f2dc47d169a8"
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BASE: dict[str, Any] = {
    "cluster_id": SEED_CLUSTER,
    "serving": {"version": "202107141745"},
    "model": {"source_uri": "oss://models-src/chnsenticorp"},
}
GROUPS = {name: field.annotation for name, field in DeploySpec.model_fields.items()}
FIELDS: list[tuple[str, ...]] = [("cluster_id",)] + [
    (group, key)
    for group, info in DeploySpec.model_fields.items()
    if hasattr(info.annotation, "model_fields")
    for key in info.annotation.model_fields  # type: ignore[union-attr]
]

# Strings that broke the old patterns or that parsers treat specially.
NASTY = [
    "\n", " ", "\t", "\r\n", "\x00", "\u2028", "\u0085", "$", "^", "..", "/", "-", ".inf", "NaN", "1e30",
    "\U0001f600", "a" * 300, "true", "null", "*a", "&a", "{", "[", "%2f", ";rm -rf /", "${HOME}",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(NASTY),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)


def default_of(path: tuple[str, ...]) -> Any:
    spec = DeploySpec.parse(copy.deepcopy(BASE))
    value: Any = spec
    for p in path:
        value = getattr(value, p)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


@st.composite
def mutation(draw: st.DrawFn) -> tuple[tuple[str, ...], Any]:
    path = draw(st.sampled_from(FIELDS))
    near = default_of(path)
    if isinstance(near, str):
        # A valid value with something glued on: where whole-string matching matters.
        value = draw(st.one_of(values, st.builds(lambda a, b: a + near + b, st.sampled_from(["", *NASTY]),
                                                 st.sampled_from(["", *NASTY]))))
    else:
        value = draw(values)
    return path, value


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    if len(path) == 1:
        data[path[0]] = value
    else:
        data.setdefault(path[0], {})[path[1]] = value
    return data


def assert_renders_valid_manifests(spec: DeploySpec) -> None:
    for manifest in render_all(spec, SEED_CLUSTER, "LTAI-fuzz", oss_url="oss-cn-hangzhou-internal.aliyuncs.com",
                               access_key_secret=SecretStr("fuzz")):
        group, _, version = manifest["apiVersion"].rpartition("/")
        check = validator(group, version, manifest["kind"])
        assert check is not None, manifest["kind"]
        errors = list(check.iter_errors(manifest))
        assert not errors, (manifest["kind"], errors[0].message)


def _no_floats_out_of_range(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_no_floats_out_of_range(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_floats_out_of_range(v) for v in value)
    return True


@FUZZ
@given(mutation())
@example((("serving", "name"), "bert-tfserving\n"))
@example((("storage", "bucket"), "elastic-inference-models\n"))
@example((("autoscaling", "behavior"), {"scaleUp": {"policies": []}}))
@example((("autoscaling", "behavior"), {"scaleUp": {"stabilizationWindowSeconds": 1.5}}))
@example((("serving", "tolerations"), [{"key": "", "operator": "Exists", "tolerationSeconds": float("inf")}]))
@example((("serving", "tolerations"), [{}]))
@example((("load_test", "stages"), [{"duration_s": float("inf"), "users": 1}]))
@example((("node_pool", "max_instances"), True))
@example((("model", "local_dir"), "\x00"))
@example((("load_test", "payload_file"), "a\x00b"))
@example((("ingress", "path"), "/\u2028"))
@example((("serving", "image"), "a" * 300))
@example((("load_test", "stages"), [{"\x1e": None}]))
def test_any_value_in_any_field_is_a_spec_or_a_spec_error(change: tuple[tuple[str, ...], Any]) -> None:
    path, value = change
    try:
        spec = DeploySpec.parse(with_value(path, value), source="fuzz")
    except SpecError as exc:
        message = str(exc)
        assert message.startswith("fuzz: invalid deploy spec\n")
        assert all(line.startswith("  ") and ": " in line for line in message.splitlines()[1:]), message
        return
    assert _no_floats_out_of_range(spec.model_dump(mode="python"))
    assert_renders_valid_manifests(spec)


@FUZZ
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(b"a: &a [1]\nb: *a\n")
@example(b"\xff\xfe")
@example(b"[" * 200)
@example(b"{" * 200)
@example(b"!!python/object:os.system {}")
@example(b"--- 1\n--- 2\n")
@example(b"? [a]\n: 1\n")
@example(b"<<: *x\n")
@example(b"a: !!binary zz\n")
@example(b"a: 2021-07-14\n")
def test_any_bytes_as_a_spec_file_is_a_spec_or_a_spec_error(tmp_path_factory: pytest.TempPathFactory,
                                                            content: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(content)
    try:
        DeploySpec.from_file(path)
    except SpecError as exc:
        assert str(path) in str(exc)


def yaml_documents() -> st.SearchStrategy[str]:
    """Structured YAML: spec-shaped mappings whose leaves are hostile values, some with anchors and aliases."""
    tree = st.dictionaries(st.sampled_from([*GROUPS, "x"]), st.dictionaries(st.text(max_size=20), values,
                                                                             max_size=6), max_size=6)
    return tree.map(lambda d: yaml.safe_dump(d, allow_unicode=True))


@FUZZ
@given(yaml_documents(), st.sampled_from([".yaml", ".json"]))
def test_any_spec_shaped_yaml_is_a_spec_or_a_spec_error(tmp_path_factory: pytest.TempPathFactory, text: str,
                                                        suffix: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"spec{suffix}"
    path.write_text(text)
    try:
        DeploySpec.from_file(path)
    except SpecError as exc:
        assert str(path) in str(exc)


def test_the_fuzzed_fields_cover_every_group() -> None:
    assert {p[0] for p in FIELDS} == set(GROUPS)
    assert len(FIELDS) > 70
    assert Path(__file__).exists()
