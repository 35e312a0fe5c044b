"""The sandbox model server's parsers: command line, model config text proto, version policy, JSON tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.runtime.flags import CommandError, parse_flags, server_argv, usage
from sandbox.runtime.model_config import (
    VersionPolicy,
    parse_model_server_config,
    select_versions,
    single_model_config,
    validate,
)
from sandbox.runtime.pbtxt import TextFormatError
from sandbox.runtime.tensors import ApiError, float32, make_response, parse_body, parse_predict
from tasks.serving import render_model_config

SERVER = "/usr/bin/tensorflow_model_server"


# ---- command line ------------------------------------------------------------------------------------------------
def test_direct_command_and_args_are_parsed_as_given():
    r = parse_flags(server_argv([SERVER, "--port=8500", "--rest_api_port=8501",
                                 "--model_config_file=/tfserving/config/model.config"]))
    assert r.ok and not r.unknown and not r.errors
    assert (r.flags.port, r.flags.rest_api_port, r.flags.model_config_file) == (8500, 8501,
                                                                               "/tfserving/config/model.config")
    assert r.flags.model_name == "default" and r.flags.max_num_load_retries == 5


def test_arena_shell_form_is_split_like_a_shell():
    argv = server_argv(["sh", "-c", "/usr/bin/tensorflow_model_server --port=8500 --rest_api_port=8501 "
                        "--model_name=chnsenticorp --model_base_path='/models/tensorflow' "
                        "--monitoring_config_file=\"/etc/mon config.txt\""])
    r = parse_flags(argv)
    assert r.ok and argv[0] == SERVER
    assert r.flags.model_name == "chnsenticorp" and r.flags.model_base_path == "/models/tensorflow"
    assert r.flags.monitoring_config_file == "/etc/mon config.txt"
    assert server_argv(["/bin/sh", "-c", "exec tensorflow_model_server --port=1"])[0] == "tensorflow_model_server"
    assert server_argv(["sh", "-c", "echo hi && tensorflow_model_server --port=2"]) == \
        ["tensorflow_model_server", "--port=2"]
    with pytest.raises(CommandError):
        server_argv(["sh", "-c"])


def test_a_bad_value_fails_the_parse_and_help_too():
    r = parse_flags([SERVER, "--port=abc", "--rest_api_port=8501"])
    assert not r.ok and r.errors == ["Couldn't interpret value abc for flag port."]
    assert parse_flags([SERVER, "--enable_batching=yes"]).errors == [
        "Couldn't interpret value =yes for flag enable_batching."]
    assert not parse_flags([SERVER, "--help"]).ok
    assert parse_flags([SERVER, "--port=99999999999"]).errors  # out of int32 range


def test_unknown_flags_and_space_separated_values_pass_through_without_failing():
    r = parse_flags([SERVER, "--port", "8500", "--bogus=1", "--rest_api_port=8501"])
    assert r.ok and r.unknown == ["--port", "8500", "--bogus=1"]
    assert r.flags.port == 8500 and r.flags.rest_api_port == 8501  # --port without "=" kept its default
    assert parse_flags([SERVER, "--", "--port=1"]).unknown == ["--", "--port=1"]
    # prefix matching never confuses a longer flag with a shorter one
    r = parse_flags([SERVER, "--model_config_file_poll_wait_seconds=60", "--model_config_file=/c"])
    assert r.flags.model_config_file == "/c" and r.flags.values["model_config_file_poll_wait_seconds"] == 60


def test_bool_flags_and_usage():
    r = parse_flags([SERVER, "--enable_batching", "--flush_filesystem_caches=false", "--version"])
    assert r.ok and r.flags.values["enable_batching"] is True and r.flags.version is True
    assert r.flags.values["flush_filesystem_caches"] is False
    text = usage(SERVER)
    assert text.startswith(f"usage: {SERVER}\nFlags:\n") and "--rest_api_port=0" in text and "\tint32\t" in text


# ---- model config --------------------------------------------------------------------------------------------------
ARENA_CONFIG = """
model_config_list: {
  config: {
    name: "chnsenticorp",
    base_path: "/models/tensorflow",
    model_platform: "tensorflow",
    model_version_policy: { specific: { versions: 1623831335 } }
  }
}
"""


def test_the_arena_style_config_parses():
    (m,) = parse_model_server_config(ARENA_CONFIG).models
    assert (m.name, m.base_path, m.model_platform) == ("chnsenticorp", "/models/tensorflow", "tensorflow")
    assert m.version_policy == VersionPolicy(kind="specific", versions=(1623831335,))
    assert validate(parse_model_server_config(ARENA_CONFIG)) is None


def test_policies_labels_comments_and_repeated_versions():
    cfg = parse_model_server_config("""
        # two models
        model_config_list {
          config { name: 'a' base_path: "/m/a" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 2 } } }
          config { name: "b" base_path: "/m/" "b" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 1 versions: 3 } }
                   version_labels { key: "stable" value: 1 }
                   version_labels { key: "canary" value: 3 } }
          config { name: "c" base_path: "/m/c" model_platform: "tensorflow" model_version_policy { all {} } }
          config { name: "d" base_path: "/m/d" model_platform: "tensorflow" }
        }""")
    a, b, c, d = cfg.models
    assert a.version_policy == VersionPolicy(kind="latest", num_versions=2)
    assert b.base_path == "/m/b" and b.version_policy.versions == (1, 3)
    assert b.version_labels == {"stable": 1, "canary": 3}
    assert c.version_policy.kind == "all" and d.version_policy == VersionPolicy()


@pytest.mark.parametrize(("text", "message"), [
    ('model_config_list { config { name: "x" bse_path: "/m" } }',
     '1:40: Message type "tensorflow.serving.ModelConfig" has no field named "bse_path".'),
    ('model_config_list {\n  config {\n    name: "x"\n    name: "y"\n  }\n}',
     '4:5: Non-repeated field "name" is specified multiple times.'),
    ('model_config_list { config { name: 5 } }', "1:30: Expected string, got: 5"),
    ('model_config_list { config { name: "x" ', '1:40: Expected "}".'),
    ('model_config_list { config { model_version_policy { latest {} specific {} } } }',
     '1:63: Field "specific" is specified along with field "latest", another member of oneof "policy_choice".'),
    ('model_config_list { config { model_version_policy { specific { versions: "1" } } } }',
     "1:64: Expected integer, got: 1"),
    ("model_config_list { config { name \"x\" } }", '1:35: Expected ":", found "\\"x\\"".'),
])
def test_config_errors_name_line_column_and_problem(text, message):
    with pytest.raises(TextFormatError) as e:
        parse_model_server_config(text)
    assert str(e.value) == message.replace('\\"', '"')


def test_server_core_checks():
    assert validate(single_model_config("m", "/models/m")) is None
    assert "absolute path" in validate(single_model_config("m", "models/m"))
    dup = parse_model_server_config('model_config_list { config { name: "m" base_path: "/a" model_platform: '
                                    '"tensorflow" } config { name: "m" base_path: "/b" model_platform: "tensorflow" } }')
    assert validate(dup) == "Invalid argument: Illegal to list model m multiple times in config list"
    torch = parse_model_server_config('model_config_list { config { name: "m" base_path: "/a" '
                                      'model_platform: "pytorch" } }')
    assert validate(torch) == "Failed precondition: PlatformConfigMap has no entry for platform pytorch"
    noplat = parse_model_server_config('model_config_list { config { name: "m" base_path: "/a" } }')
    assert "neither ModelServerConfig::model_type" in validate(noplat)


def test_the_projects_renderer_output_parses():
    from core.spec import DeploySpec

    # The seed's spec for real ACK (the sandbox example needs the generated demo model on disk).
    spec = DeploySpec.from_file(Path(__file__).resolve().parents[2] / "examples" / "ack-seed.yaml")
    (m,) = parse_model_server_config(render_model_config(spec)).models
    assert m.name == spec.model.name and m.base_path == spec.names.model_base_path


# ---- version policy --------------------------------------------------------------------------------------------------
CHILDREN = ["1", "3", "20", "assets", "tmp-4", "0007", "README"]


def test_latest_picks_the_highest_numeric_children():
    assert select_versions(VersionPolicy(), CHILDREN) == ({20: "20"}, [])
    assert list(select_versions(VersionPolicy(num_versions=3), CHILDREN)[0]) == [3, 7, 20]
    assert list(select_versions(VersionPolicy(num_versions=0), CHILDREN)[0]) == [20]  # max(n, 1)


def test_all_and_specific():
    assert list(select_versions(VersionPolicy(kind="all"), CHILDREN)[0]) == [1, 3, 7, 20]
    chosen, missing = select_versions(VersionPolicy(kind="specific", versions=(3, 1623831335)), CHILDREN)
    assert chosen == {3: "3"} and missing == [1623831335]
    assert select_versions(VersionPolicy(kind="specific", versions=(5,)), []) == ({}, [5])


# ---- JSON tensors ----------------------------------------------------------------------------------------------------
INFOS = {n: {"dtype": "DT_INT32", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "3"}]}, "name": f"{n}:0"}
         for n in ("input_ids", "input_mask")}


def test_row_and_column_requests():
    fmt, sig, t = parse_predict({"instances": [{"input_ids": [1, 2, 3], "input_mask": [1, 1, 0]}] * 2},
                                lambda s: INFOS)
    assert (fmt, sig) == ("row", "") and t["input_ids"] == [[1, 2, 3], [1, 2, 3]]
    fmt, sig, t = parse_predict({"signature_name": "serving_default",
                                 "inputs": {"input_ids": [[1, 2, 3]], "input_mask": [[1, 1, 1]], "x": 1}},
                                lambda s: INFOS)
    assert (fmt, sig, sorted(t)) == ("columnar", "serving_default", ["input_ids", "input_mask"])


@pytest.mark.parametrize(("doc", "fragment"), [
    ({"instances": [], "inputs": {}}, "Not formatted correctly expecting only one of 'inputs' or 'instances'"),
    ({"signature_name": "x"}, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": [[1, 2, 3]]}, "instances is a plain list, but expecting list of objects"),
    ({"instances": [{"input_ids": [1, 2.5, 3], "input_mask": [1, 1, 1]}]},
     "JSON Value: 2.5 Type: Number is not of expected type: int32"),
    ({"instances": [{"input_ids": [1, 2, 3]}]}, "keys must be equal to: input_ids,input_mask"),
    ({"inputs": {"input_ids": [[1, 2, 3]]}}, "Missing named input: input_mask in 'inputs' object."),
    ({"inputs": {"input_ids": [[1, 2], [3]], "input_mask": [[1]]}},
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"signature_name": 5, "inputs": {}}, "'signature_name' key must be a string value."),
])
def test_request_errors(doc, fragment):
    with pytest.raises(ApiError) as e:
        parse_predict(doc, lambda s: INFOS)
    assert e.value.code == "INVALID_ARGUMENT" and e.value.http_status == 400 and fragment in e.value.message


def test_body_errors_and_responses():
    with pytest.raises(ApiError, match="The document is empty"):
        parse_body(b"")
    with pytest.raises(ApiError, match="JSON Parse error"):
        parse_body(b"{nope")
    with pytest.raises(ApiError, match="Is not object"):
        parse_body(b"[1]")
    out = {"probabilities": [[0.1, 0.9]]}
    infos = {"probabilities": {"dtype": "DT_FLOAT"}}
    assert make_response("row", out, infos) == {"predictions": [[0.1, 0.9]]}
    assert make_response("columnar", out, infos) == {"outputs": [[0.1, 0.9]]}
    two = make_response("row", {"a": [1, 2], "b": [[1.0], [2.0]]}, {})
    assert two == {"predictions": [{"a": 1, "b": [1.0]}, {"a": 2, "b": [2.0]}]}
    assert float32(0.1) == 0.1 and float32(1 / 3) == 0.333333343


# ---- classify / regress bodies (json_tensor.cc FillClassifyRegressRequestFromJson) ---------------------------------
def test_examples_become_typed_features_as_tf_serving_builds_them():
    from sandbox.runtime.tensors import parse_classify_regress

    sig, context, examples = parse_classify_regress(
        {"signature_name": "s", "context": {"lang": "en"},
         "examples": [{"x": [1.0, 2.5], "n": 3, "flag": True, "raw": {"b64": "AAE="}, "tags": ["a", "b"]}]},
        "classify")
    assert sig == "s" and context == {"lang": ("bytes", [b"en"])}
    assert examples == [{"x": ("float", [1.0, 2.5]), "n": ("int64", [3]), "flag": ("int64", [1]),
                         "raw": ("bytes", [b"\x00\x01"]), "tags": ("bytes", [b"a", b"b"])}]
    for body, message in (
        ({"examples": [{"x": [1.0, "a"]}]}, "Unexpected element type in feature: x expecting type: float"),
        ({"examples": [{"x": [[1.0]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": 2**63}]}, "Feature: x has uint64 element. Only int64 is supported."),
        ({"examples": ["x"]}, "Example must be JSON object but got JSON String"),
        ({"examples": [{"x": {"b64": "%%"}}]}, "Unable to base64 decode"),
    ):
        with pytest.raises(ApiError) as e:
            parse_classify_regress(body, "classify")
        assert (e.value.code, e.value.message) == ("INVALID_ARGUMENT", message)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["examples", "context", "signature_name", "other"]), _JSON, max_size=4))
def test_any_classify_body_parses_or_fails_with_invalid_argument(doc):
    from sandbox.runtime.tensors import parse_classify_regress

    try:
        parse_classify_regress(doc, "regress")
    except ApiError as e:
        assert e.code == "INVALID_ARGUMENT" and e.message
