"""DeploySpec: the seed's defaults, the names derived from it, loading from files, and bad input rejected."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.spec import (
    SANDBOX_VALUE,
    DeploySpec,
    DerivedNames,
    LoadStage,
    ModelSpec,
    SpecError,
    check_model_layout,
    field_title,
    truncate_name,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED_CLUSTER = "c210fbedb96674b9eaf15f2dc47d169a8"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def make_model(base: Path, *versions: int, files: tuple[str, ...] = ("saved_model.pb",)) -> Path:
    """A model base directory in TF Serving's layout <base>/<version>/..."""
    for v in versions:
        d = base / str(v)
        (d / "variables").mkdir(parents=True)
        for f in files:
            (d / f).write_bytes(b"\x08\x01")
    return base


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model(tmp_path / "models" / "chnsenticorp", 1623831335)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails the test: validation must be pure."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("DeploySpec validation tried to use the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---- seed defaults -----------------------------------------------------------------------------------------------
def test_defaults_are_the_seed_procedure() -> None:
    spec = DeploySpec()
    pool = spec.node_pool
    assert pool.labels == {"inference": "tensorflow"}
    assert pool.billing == "spot"
    assert pool.multi_az_policy == "COST_OPTIMIZED"
    assert pool.on_demand_percentage_above_base == 30
    assert pool.on_demand_base_capacity == 0
    st = spec.storage
    assert (st.pv_name, st.pvc_name, st.capacity) == ("model-csi-pv", "model-pvc", "5Gi")
    assert st.access_modes == ["ReadWriteMany"]
    assert st.reclaim_policy == "Retain"
    assert st.other_opts == "-o max_stat_cache_size=0 -o allow_other"
    sv = spec.serving
    assert sv.name == "bert-tfserving"
    assert spec.model.name == "chnsenticorp"
    assert sv.image == "tensorflow/serving:1.15.0-gpu"
    assert (sv.mount_path, sv.model_path) == ("/models", "/models/tensorflow")
    assert spec.model.version_policy == "specific:1623831335"
    assert sv.gpus == 1
    assert sv.selector is None and spec.names.node_selector == {"inference": "tensorflow"}
    hpa = spec.autoscaling
    assert (hpa.min_replicas, hpa.max_replicas, hpa.target_qps) == (1, 10, 10)
    assert hpa.metric_name == "sls_ingress_qps"
    assert hpa.logstore == "nginx-ingress"
    ing = spec.ingress
    assert (ing.host, ing.path, ing.service_port) == ("test.example.com", "/", 8501)
    assert ing.path_type == "ImplementationSpecific"
    assert spec.load_test.stages and all(isinstance(s, LoadStage) for s in spec.load_test.stages)


def test_default_serving_version_is_arena_timestamp() -> None:
    version = DeploySpec().serving.version
    assert version is not None and re.fullmatch(r"20[0-9]{10}", version)


def test_pinned_version_is_kept_and_repeatable() -> None:
    data = {"serving": {"version": "202107141745"}}
    a, b = DeploySpec.parse(data), DeploySpec.parse(data)
    assert a.names == b.names
    assert a.serving.version == "202107141745"


def test_round_trip_through_json_keeps_everything() -> None:
    spec = DeploySpec.parse({"cluster_id": SEED_CLUSTER, "serving": {"version": "202107141745"}})
    again = DeploySpec.parse(json.loads(spec.model_dump_json()))
    assert again == spec and again.names == spec.names


# ---- derived names -----------------------------------------------------------------------------------------------
def seed_spec(**groups: dict[str, Any]) -> DeploySpec:
    data: dict[str, Any] = {"cluster_id": SEED_CLUSTER, "serving": {"version": "202107141745"}}
    for k, v in groups.items():
        data[k] = {**data.get(k, {}), **v}
    return DeploySpec.parse(data)


def test_names_match_the_seed_manifests() -> None:
    n = seed_spec().names
    # The seed's HPA: scaleTargetRef and matchLabels.
    assert n.deployment == "bert-tfserving-202107141745-tensorflow-serving"
    assert n.service == n.deployment
    assert n.hpa == "bert-tfserving-202107141745-hpa"  # one per version (the seed's: bert-tfserving-hpa)
    assert n.sls_project == "k8s-log-c210fbedb96674b9eaf15f2dc47d169a8"
    assert n.sls_logstore == "nginx-ingress"
    assert n.sls_route == "default-bert-tfserving-202107141745-tensorflow-serving-8501"
    # The seed's PV/PVC and Ingress.
    assert (n.pv, n.pvc, n.volume_handle) == ("model-csi-pv", "model-pvc", "model-csi-pv")
    assert n.ingress == "bert-tfserving"
    # arena's labels.
    assert n.release == "bert-tfserving-202107141745"
    assert n.pod_labels == {
        "app": "tensorflow-serving",
        "release": "bert-tfserving-202107141745",
        "servingName": "bert-tfserving",
        "servingType": "tf-serving",
        "servingVersion": "202107141745",
        "modelName": "chnsenticorp",
    }
    assert n.model_base_path == "/models/tensorflow/bert-tfserving-202107141745"  # the release's own directory
    assert n.model_oss_prefix == "tensorflow/bert-tfserving-202107141745/"
    assert n.node_selector == {"inference": "tensorflow"}


def test_names_follow_namespace_port_and_cluster() -> None:
    n = seed_spec(serving={"namespace": "ml", "rest_api_port": 9001}, ingress={"service_port": 9001}).names
    assert n.namespace == "ml"
    assert n.sls_route == "ml-bert-tfserving-202107141745-tensorflow-serving-9001"
    assert DeploySpec.parse({}).names.sls_project is None
    assert seed_spec().with_cluster("cabcdef0123456789").names.sls_project == "k8s-log-cabcdef0123456789"


def test_volume_handle_is_the_pv_name() -> None:
    n = seed_spec(storage={"pv_name": "bert-models"}).names
    assert n.pv == n.volume_handle == "bert-models"
    assert n.oss_secret.startswith("bert-models")


def test_truncate_name_is_helm_trunc_63_trim_suffix() -> None:
    assert truncate_name("a" * 70) == "a" * 63
    assert truncate_name("a" * 62 + "-b") == "a" * 62
    assert truncate_name("short-name") == "short-name"


@pytest.mark.parametrize(
    ("name_len", "expected_suffix"),
    [
        (49, ""),  # release 62 chars: the cut lands on the '-' after it, which is trimmed
        (38, "-tensorflow"),  # release 51 chars: cut after "-tensorflow-", the trailing '-' trimmed
        (40, "-tensorflo"),  # release 53 chars: cut inside the chart name
    ],
)
def test_deployment_name_is_cut_to_63_valid_characters(name_len: int, expected_suffix: str) -> None:
    # Such names pass every per-field rule but make an SLS route longer than a label value may be, so the spec
    # rejects them (see the table below); the truncation itself is arena's and is checked on the derived names.
    spec = seed_spec()
    long_serving = spec.serving.model_copy(update={"name": "b" * name_len})
    n = DerivedNames.of(spec.model_copy(update={"serving": long_serving}))
    release = "b" * name_len + "-202107141745"
    assert n.release == release
    assert len(n.deployment) <= 63 and DNS1123_LABEL.match(n.deployment)
    assert n.deployment == n.service
    assert n.deployment == release + expected_suffix
    assert n.sls_route == f"default-{n.service}-8501"
    with pytest.raises(SpecError, match=r"serving\.name: the SLS route"):
        DeploySpec.parse({"serving": {"name": "b" * name_len, "version": "202107141745"}})


def test_release_containing_the_chart_name_is_the_full_name() -> None:
    # arena's helper: if the release name contains the chart name, it is used as the full name.
    n = seed_spec(serving={"name": "tensorflow-serving"}).names
    assert n.deployment == n.service == "tensorflow-serving-202107141745"
    assert n.sls_route == "default-tensorflow-serving-202107141745-8501"


@pytest.mark.parametrize(
    ("storage_path", "mount", "model_path", "prefix"),
    [
        ("/", "/models", "/models/tensorflow", "tensorflow/"),
        ("/team/models", "/models", "/models/tensorflow", "team/models/tensorflow/"),
        ("/team/models/", "/models", "/models/tensorflow/bert", "team/models/tensorflow/bert/"),
        ("/", "/models", "/models", ""),
        ("/bert", "/data", "/data", "bert/"),
        ("/.hidden", "/models", "/models/tensorflow", ".hidden/tensorflow/"),
    ],
)
def test_model_oss_prefix_is_the_releases_directory_under_model_path_relative_to_the_mount(
    storage_path: str, mount: str, model_path: str, prefix: str
) -> None:
    spec = seed_spec(storage={"path": storage_path}, serving={"mount_path": mount, "model_path": model_path})
    release = spec.names.release
    assert spec.names.model_oss_prefix == f"{prefix}{release}/"  # never the whole bucket, even for model_path /
    assert spec.names.model_base_path == f"{model_path}/{release}"


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        ("latest", "latest { num_versions: 1 }"),
        ("latest:3", "latest { num_versions: 3 }"),
        ("all", "all {}"),
        ("specific:1623831335", "specific { versions: 1623831335 }"),
        ("specific:1,2,42", "specific { versions: 1 versions: 2 versions: 42 }"),
    ],
)
def test_model_config_policy_text(policy: str, text: str) -> None:
    assert ModelSpec(version_policy=policy).model_config_policy() == text


def test_specific_versions_must_exist_only_when_named(model_dir: Path) -> None:
    for policy in ("latest", "latest:5", "all", "specific:1623831335"):
        assert DeploySpec.parse({"model": {"local_dir": str(model_dir), "version_policy": policy}})
    assert check_model_layout(make_model(model_dir, 1623831336)) == [1623831335, 1623831336]


def test_demo_model_format_is_a_version_too(tmp_path: Path) -> None:
    base = make_model(tmp_path / "m", 7, files=("model.json",))
    assert check_model_layout(base, [7]) == [7]


# ---- loading -----------------------------------------------------------------------------------------------------
def test_from_yaml_resolves_local_dir_against_the_file(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    spec_file = conf / "spec.yaml"
    spec_file.write_text(
        "cluster_id: c210fbedb96674b9eaf15f2dc47d169a8\n"
        "model:\n  local_dir: ../models/chnsenticorp\n"
        "serving:\n  version: '202107141745'\n"
        "node_pool:\n  max_instances: 4\nautoscaling:\n  max_replicas: 4\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = DeploySpec.from_file(spec_file)
    assert spec.model.local_dir == model_dir.resolve()
    assert spec.node_pool.max_instances == 4 and spec.autoscaling.max_replicas == 4
    assert spec.names.sls_project == f"k8s-log-{SEED_CLUSTER}"


def test_from_json(tmp_path: Path, model_dir: Path) -> None:
    spec_file = tmp_path / "spec.json"
    (tmp_path / "payload.json").write_text('{"instances": [{"text": "good"}]}')
    spec_file.write_text(
        json.dumps(
            {
                "model": {"local_dir": "models/chnsenticorp", "version_policy": "latest:2"},
                "serving": {"name": "sentiment", "version": "v7"},
                "load_test": {"payload_file": "payload.json"},
            }
        )
    )
    spec = DeploySpec.from_file(str(spec_file))
    assert spec.model.local_dir == model_dir.resolve()
    assert spec.load_test.payload_file == (tmp_path / "payload.json").resolve()
    assert spec.names.deployment == "sentiment-v7-tensorflow-serving"


def test_from_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("storage:\n  bucket: My_Bucket\n")
    with pytest.raises(SpecError) as exc:
        DeploySpec.from_file(f)
    assert str(f) in str(exc.value) and "storage.bucket" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("list.yaml", "- a\n- b\n", "mapping"),
        ("broken.yaml", "serving: [unclosed\n", "YAML"),
        ("broken.json", "{not json", "JSON"),
    ],
)
def test_unreadable_files_are_spec_errors(tmp_path: Path, name: str, text: str, needle: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(SpecError, match=needle):
        DeploySpec.from_file(f)
    with pytest.raises(SpecError, match="cannot read"):
        DeploySpec.from_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}", "---\n...\n"])
def test_an_empty_spec_file_is_refused(tmp_path: Path, text: str) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text(text)
    with pytest.raises(SpecError, match="the spec is empty"):
        DeploySpec.from_file(f)


# ---- examples ----------------------------------------------------------------------------------------------------
def test_example_ack_seed_loads_with_the_seed_parameters() -> None:
    spec = DeploySpec.from_file(EXAMPLES / "ack-seed.yaml")
    assert spec.model.local_dir is None
    n = spec.names
    assert n.deployment == "bert-tfserving-202107141745-tensorflow-serving"
    assert n.sls_route == "default-bert-tfserving-202107141745-tensorflow-serving-8501"
    assert n.sls_project == "k8s-log-c210fbedb96674b9eaf15f2dc47d169a8"
    assert spec.node_pool.on_demand_percentage_above_base == 30 and spec.node_pool.billing == "spot"
    assert spec.node_pool.labels == {"inference": "tensorflow"}
    assert spec.model.version_policy == "specific:1623831335"
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas, spec.autoscaling.target_qps) == (1, 10, 10)
    assert spec.ingress.host == "test.example.com" and spec.ingress.service_port == 8501


def test_example_sandbox_loads_with_its_model(tmp_path: Path) -> None:
    # The demo writes the model under .sandbox/ before the flow runs; reproduce that layout next to a copy.
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "sandbox.yaml", tmp_path / "examples" / "sandbox.yaml")
    raw = yaml.safe_load((EXAMPLES / "sandbox.yaml").read_text())
    model = make_model((tmp_path / "examples" / raw["model"]["local_dir"]).resolve(), 1623831335,
                       files=("model.json",))
    spec = DeploySpec.from_file(tmp_path / "examples" / "sandbox.yaml")
    assert spec.model.local_dir == model
    assert spec.storage.bucket == "elastic-inference-models"
    assert spec.serving.version == "202107141745"
    assert set(spec.node_pool.instance_types) == {
        "ecs.gn6i-c4g1.xlarge", "ecs.gn6i-c8g1.2xlarge", "ecs.gn7i-c8g1.2xlarge"
    }
    assert all(v.startswith("vsw-") for v in spec.node_pool.vswitch_ids)
    assert sum(s.duration_s for s in spec.load_test.stages) <= 600


# ---- bad input ---------------------------------------------------------------------------------------------------
# Each case: an id, the spec (a callable gets tmp_path), the field path the message must name, and a piece of the
# rule it must state. Each is checked on a line "  <field>: <rule...>" of the SpecError message.
_MODEL = "{model}"  # replaced by a real model directory made in tmp_path


def _bad_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    return [
        ("serving name not DNS", {"serving": {"name": "Bert_TF"}}, "serving.name", "DNS-1123"),
        ("serving name 64 chars", {"serving": {"name": "a" * 64}}, "serving.name", "at most 63"),
        ("serving name starts with digit", {"serving": {"name": "1bert"}}, "serving.name", "start with a lowercase"),
        ("uppercase namespace", {"serving": {"namespace": "Default"}}, "serving.namespace", "DNS-1123"),
        ("serving version not DNS", {"serving": {"version": "v1.0"}}, "serving.version", "DNS-1123"),
        ("release label too long", {"serving": {"name": "a" * 40, "version": "b" * 30}}, "serving.version",
         "at most 63"),
        ("SLS route too long", {"serving": {"namespace": "inference-production", "version": "202107141745"}},
         "serving.name", "SLS route"),
        ("bucket underscore", {"storage": {"bucket": "my_models"}}, "storage.bucket", "naming rules"),
        ("bucket uppercase", {"storage": {"bucket": "MyModels"}}, "storage.bucket", "naming rules"),
        ("bucket too short", {"storage": {"bucket": "ab"}}, "storage.bucket", "3-63"),
        ("bucket too long", {"storage": {"bucket": "b" * 64}}, "storage.bucket", "3-63"),
        ("bucket leading dash", {"storage": {"bucket": "-models"}}, "storage.bucket", "starting and ending"),
        ("policy specific:", {"model": {"version_policy": "specific:"}}, "model.version_policy", "specific:N"),
        ("policy latest:0", {"model": {"version_policy": "latest:0"}}, "model.version_policy", "latest[:N]"),
        ("policy newest", {"model": {"version_policy": "newest"}}, "model.version_policy", "latest[:N]"),
        ("percentage 101", {"node_pool": {"on_demand_percentage_above_base": 101}},
         "node_pool.on_demand_percentage_above_base", "less than or equal to 100"),
        ("percentage -1", {"node_pool": {"on_demand_percentage_above_base": -1}},
         "node_pool.on_demand_percentage_above_base", "greater than or equal to 0"),
        ("min > max instances", {"node_pool": {"min_instances": 5, "max_instances": 3}},
         "node_pool.max_instances", "min_instances (5) must be <= max_instances (3)"),
        ("min > max replicas", {"autoscaling": {"min_replicas": 5, "max_replicas": 2}},
         "autoscaling.max_replicas", "min_replicas (5) must be <= max_replicas (2)"),
        ("max replicas beyond pool", {"node_pool": {"max_instances": 1}, "autoscaling": {"max_replicas": 20}},
         "autoscaling.max_replicas", "can never fit"),
        ("no instance types", {"node_pool": {"instance_types": []}}, "node_pool.instance_types", "1 to 10"),
        ("11 instance types", {"node_pool": {"instance_types": [f"ecs.gn6i-c{i}g1.xlarge" for i in range(11)]}},
         "node_pool.instance_types", "1 to 10"),
        ("bad instance type", {"node_pool": {"instance_types": ["gn6i.large"]}}, "node_pool.instance_types",
         "not an ECS instance type"),
        ("no vswitches", {"node_pool": {"vswitch_ids": []}}, "node_pool.vswitch_ids", "1 to 8"),
        ("bad vswitch id", {"node_pool": {"vswitch_ids": ["subnet-12345678"]}}, "node_pool.vswitch_ids",
         "not a vSwitch id"),
        ("gpus -1", {"serving": {"gpus": -1}}, "serving.gpus", "greater than or equal to 0"),
        ("model dir missing", {"model": {"local_dir": "/nonexistent/elastic-inference/model"}}, "model.local_dir",
         "does not exist"),
        ("model dir without numeric version", {"model": {"local_dir": "{flat}"}}, "model.local_dir",
         "no version sub-directory"),
        ("policy version not in dir", {"model": {"local_dir": _MODEL, "version_policy": "specific:1623831335,7"}},
         "model.local_dir", "[7] that are not in"),
        ("model_path outside mount", {"serving": {"model_path": "/data/tensorflow"}}, "serving.model_path",
         "must lie under"),
        ("relative model_path", {"serving": {"model_path": "models/tensorflow"}}, "serving.model_path",
         "absolute"),
        ("ingress port not rest port", {"ingress": {"service_port": 8500}}, "ingress.service_port",
         "rest_api_port"),
        ("grpc port == rest port", {"serving": {"port": 8501}}, "serving.rest_api_port", "must differ"),
        ("selector misses pool", {"serving": {"selector": {"inference": "pytorch"}}}, "serving.selector",
         "does not match node_pool.labels"),
        ("key pair and password", {"node_pool": {"key_pair": "ops", "login_password": "Hunter2-Secret!"}},
         "node_pool.login_password", "not both"),
        ("price limit without limits", {"node_pool": {"spot_strategy": "SpotWithPriceLimit"}},
         "node_pool.spot_price_limits", "needs spot_price_limits"),
        ("price limit for unknown type",
         {"node_pool": {"spot_strategy": "SpotWithPriceLimit",
                        "spot_price_limits": [{"instance_type": "ecs.g7.large", "price_limit": 1.0}]}},
         "node_pool.spot_price_limits", "not in instance_types"),
        ("compensation without cost optimization", {"node_pool": {"multi_az_policy": "PRIORITY"}},
         "node_pool.compensate_with_on_demand", "COST_OPTIMIZED"),
        ("bad label key", {"node_pool": {"labels": {"bad key!": "x"}}}, "node_pool.labels", "label key"),
        ("bad label value", {"node_pool": {"labels": {"inference": "tensor flow"}}}, "node_pool.labels",
         "label value"),
        ("bad taint effect", {"node_pool": {"taints": [{"key": "gpu", "effect": "Sometimes"}]}},
         "node_pool.taints.0.effect", "NoSchedule"),
        ("unknown field", {"serving": {"replica": 2}}, "serving.replica", "Extra inputs are not permitted"),
        ("unknown top-level field", {"clusterid": SEED_CLUSTER}, "clusterid", "Extra inputs are not permitted"),
        ("bad capacity", {"storage": {"capacity": "5 GB"}}, "storage.capacity", "quantity"),
        ("rrsa without role", {"storage": {"auth": "rrsa"}}, "storage.rrsa_role_name", "rrsa needs"),
        ("bad pv name", {"storage": {"pv_name": "Model_PV"}}, "storage.pv_name", "DNS-1123"),
        ("relative bucket path", {"storage": {"path": "models"}}, "storage.path", "absolute bucket path"),
        ("empty load stages", {"load_test": {"stages": []}}, "load_test.stages", "1 to 100"),
        ("zero-length stage", {"load_test": {"stages": [{"duration_s": 0, "users": 5}]}},
         "load_test.stages.0.duration_s", "greater than 0"),
        ("cluster id malformed", {"cluster_id": "C-210FBEDB"}, "cluster_id", "not an ACK cluster id"),
        ("logstore uppercase", {"autoscaling": {"logstore": "Nginx-Ingress"}}, "autoscaling.logstore",
         "naming rules"),
        ("model name trailing dot", {"model": {"name": "chnsenticorp."}}, "model.name", "ending with"),
        ("source uri not oss", {"model": {"source_uri": "s3://bucket/model"}}, "model.source_uri",
         "oss://bucket/prefix"),
        ("ingress host", {"ingress": {"host": "Test_Example.com"}}, "ingress.host", "DNS-1123 subdomain"),
        ("ingress path", {"ingress": {"path": "api"}}, "ingress.path", "must be '/' then"),
        ("error rate over 1", {"verification": {"max_error_rate": 1.5}}, "verification.max_error_rate",
         "less than or equal to 1"),
        ("quantity cpu", {"serving": {"cpu": "four"}}, "serving.cpu", "quantity"),
        *HOSTILE_CASES,
    ]


_LONG = "k" * 5000
# Issue 14: classes of malformed input that the patterns (re.match with "$", which matches before a final
# newline), lax number parsing and unchecked free-form fields let through.
HOSTILE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # a trailing newline, in every kind of name
    *[(f"trailing newline in {field}", {group: {key: value + "\n"}}, field, rule) for field, group, key, value, rule in [
        ("serving.name", "serving", "name", "bert-tfserving", "DNS-1123"),
        ("serving.version", "serving", "version", "202107141745", "DNS-1123"),
        ("serving.namespace", "serving", "namespace", "default", "DNS-1123"),
        ("storage.bucket", "storage", "bucket", "elastic-inference-models", "bucket naming"),
        ("storage.capacity", "storage", "capacity", "5Gi", "quantity"),
        ("storage.pv_name", "storage", "pv_name", "model-csi-pv", "DNS-1123"),
        ("model.version_policy", "model", "version_policy", "specific:1623831335", "latest[:N]"),
        ("model.name", "model", "name", "chnsenticorp", "model name"),
        ("model.source_uri", "model", "source_uri", "oss://bucket-a/models", "oss://bucket/prefix"),
        ("autoscaling.logstore", "autoscaling", "logstore", "nginx-ingress", "naming rules"),
        ("ingress.host", "ingress", "host", "test.example.com", "DNS-1123"),
        ("ingress.path", "ingress", "path", "/", "without whitespace"),
        ("node_pool.name", "node_pool", "name", "elastic-inference", "node pool name"),
    ]],
    ("trailing newline in cluster_id", {"cluster_id": SEED_CLUSTER + "\n"}, "cluster_id", "ACK cluster id"),
    ("trailing newline in a label value", {"node_pool": {"labels": {"inference": "tensorflow\n"}}},
     "node_pool.labels", "label value"),
    ("trailing newline in an instance type", {"node_pool": {"instance_types": ["ecs.gn6i-c4g1.xlarge\n"]}},
     "node_pool.instance_types", "not an ECS instance type"),
    ("trailing newline in a vswitch", {"node_pool": {"vswitch_ids": ["vsw-sandbox0zone0h\n"]}},
     "node_pool.vswitch_ids", "not a vSwitch id"),
    ("newline in serving.cpu", {"serving": {"cpu": "4\n"}}, "serving.cpu", "quantity"),
    # non-finite numbers
    ("infinite stage duration", {"load_test": {"stages": [{"duration_s": float("inf"), "users": 5}]}},
     "load_test.stages.0.duration_s", "finite number"),
    ("infinite spawn rate", {"load_test": {"stages": [{"duration_s": 5, "users": 5, "spawn_rate": float("inf")}]}},
     "load_test.stages.0.spawn_rate", "finite number"),
    ("nan wait time", {"load_test": {"wait_time_s": float("nan")}}, "load_test.wait_time_s", "finite number"),
    ("nan p95", {"verification": {"p95_ms": float("nan")}}, "verification.p95_ms", "finite number"),
    ("infinite price limit", {"node_pool": {"spot_strategy": "SpotWithPriceLimit", "spot_price_limits": [
        {"instance_type": "ecs.gn6i-c4g1.xlarge", "price_limit": float("inf")}]}},
     "node_pool.spot_price_limits.0.price_limit", "finite number"),
    ("stage of a year", {"load_test": {"stages": [{"duration_s": 31536000, "users": 5}]}},
     "load_test.stages.0.duration_s", "less than or equal to 86400"),
    # booleans and strings are not counts
    ("boolean max_instances", {"node_pool": {"max_instances": True}}, "node_pool.max_instances", "valid integer"),
    ("boolean users", {"load_test": {"stages": [{"duration_s": 5, "users": True}]}},
     "load_test.stages.0.users", "valid integer"),
    ("boolean gpus", {"serving": {"gpus": False}}, "serving.gpus", "valid integer"),
    ("string replicas", {"serving": {"replicas": "3"}}, "serving.replicas", "valid integer"),
    ("float replicas", {"autoscaling": {"max_replicas": 2.0}}, "autoscaling.max_replicas", "valid integer"),
    ("count as boolean", {"node_pool": {"spot_instance_remedy": 1}}, "node_pool.spot_instance_remedy",
     "valid boolean"),
    # absurd sizes
    ("5000-character key pair", {"node_pool": {"key_pair": _LONG}}, "node_pool.key_pair", "2-128 characters"),
    ("key pair starting with a digit", {"node_pool": {"key_pair": "1ops"}}, "node_pool.key_pair",
     "starting with a letter"),
    ("1e30 target QPS", {"autoscaling": {"target_qps": 1e30}}, "autoscaling.target_qps", "valid integer"),
    ("10**30 target QPS", {"autoscaling": {"target_qps": 10**30}}, "autoscaling.target_qps", "less than or equal"),
    ("2001 instances", {"node_pool": {"max_instances": 2001}}, "node_pool.max_instances", "less than or equal to 2000"),
    ("multipart threshold over 5 GiB", {"model": {"multipart_threshold": 6 * 1024**3}}, "model.multipart_threshold",
     "less than or equal"),
    ("weak login password", {"node_pool": {"login_password": "password"}}, "node_pool.login_password",
     "8-30 characters"),
    ("bad security group", {"node_pool": {"security_group_ids": ["sg-1\n"]}}, "node_pool.security_group_ids",
     "not a security group id"),
    ("unknown runtime", {"node_pool": {"runtime": "podman"}}, "node_pool.runtime", "containerd"),
    ("image with a newline", {"serving": {"image": "tensorflow/serving:1.15.0-gpu\n"}}, "serving.image",
     "image reference"),
    # free-form Kubernetes fragments, checked against the 1.33 schemas and the API server's rules
    ("behavior unknown field", {"autoscaling": {"behavior": {"scaleUp": {"stabilisationWindow": 5}}}},
     "autoscaling.behavior.scaleUp", "Additional properties"),
    ("behavior window too long", {"autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 99999}}}},
     "autoscaling.behavior.scaleDown.stabilizationWindowSeconds", "0 to 3600"),
    ("behavior policy type", {"autoscaling": {"behavior": {"scaleUp": {"policies": [
        {"type": "Nodes", "value": 1, "periodSeconds": 15}]}}}},
     "autoscaling.behavior.scaleUp.policies.0.type", "Pods or Percent"),
    ("behavior policy value a string", {"autoscaling": {"behavior": {"scaleUp": {"policies": [
        {"type": "Pods", "value": "4", "periodSeconds": 15}]}}}},
     "autoscaling.behavior.scaleUp.policies.0.value", "not of type"),
    ("behavior period too long", {"autoscaling": {"behavior": {"scaleUp": {"policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 3600}]}}}},
     "autoscaling.behavior.scaleUp.policies.0.periodSeconds", "1 to 1800"),
    ("behavior select policy", {"autoscaling": {"behavior": {"scaleUp": {"selectPolicy": "Maximum"}}}},
     "autoscaling.behavior.scaleUp.selectPolicy", "Max, Min or Disabled"),
    ("toleration unknown field", {"serving": {"tolerations": [{"key": "gpu", "operater": "Exists"}]}},
     "serving.tolerations.0", "Additional properties"),
    ("toleration bad operator", {"serving": {"tolerations": [{"key": "gpu", "operator": "In"}]}},
     "serving.tolerations.0.operator", "Equal or Exists"),
    ("toleration seconds without NoExecute", {"serving": {"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]}},
     "serving.tolerations.0.effect", "NoExecute"),
    ("toleration not an object", {"serving": {"tolerations": ["gpu"]}}, "serving.tolerations.0",
     "valid dictionary"),
    ("toleration value with a newline", {"serving": {"tolerations": [{"key": "gpu", "value": "a\n"}]}},
     "serving.tolerations.0.value", "label value"),
    # cross-field rules
    ("both model sources", {"model": {"local_dir": _MODEL, "source_uri": "oss://models-src/m"}},
     "model.source_uri", "not both"),
    # whitespace where a path or an option list goes
    ("space in ingress path", {"ingress": {"path": "/a b"}}, "ingress.path", "without whitespace"),
    ("newline in a Prefix path", {"ingress": {"path": "/api\n", "path_type": "Prefix"}}, "ingress.path",
     "ingress-nginx"),
    ("regex in a Prefix path", {"ingress": {"path": "/api(/|$)(.*)", "path_type": "Prefix"}}, "ingress.path",
     "ingress-nginx"),
    ("newline in other_opts", {"storage": {"other_opts": "-o allow_other\n-o ro"}}, "storage.other_opts",
     "ossfs options"),
    ("shell in other_opts", {"storage": {"other_opts": "-o allow_other; rm -rf /"}}, "storage.other_opts",
     "ossfs options"),
    ("space in mount path", {"serving": {"mount_path": "/mo dels", "model_path": "/mo dels/tf"}},
     "serving.mount_path", "absolute container path"),
    ("newline in bucket path", {"storage": {"path": "/models\n"}}, "storage.path", "absolute bucket path"),
    ("oss url with a path", {"storage": {"oss_url": "oss-cn-hangzhou.aliyuncs.com/x y"}}, "storage.oss_url",
     "OSS endpoint"),
    ("ingress class with newline", {"ingress": {"class_name": "nginx\n"}}, "ingress.class_name", "DNS-1123"),
    # files that must exist and parse
    ("payload file missing", {"load_test": {"payload_file": "/nonexistent/payload.json"}},
     "load_test.payload_file", "does not exist"),
    ("payload file not a predict body", {"load_test": {"payload_file": "{payload}"}}, "load_test.payload_file",
     "not a TF Serving predict body"),
    ("payload file not JSON", {"load_test": {"payload_file": "{not_json}"}}, "load_test.payload_file",
     "is not JSON"),
]


BAD_CASES = _bad_cases()


def _fill(value: Any, repl: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, repl) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, repl) for v in value]
    return repl.get(value, value) if isinstance(value, str) else value


def test_the_table_is_big_enough() -> None:
    assert len(BAD_CASES) >= 25
    assert len({c[0] for c in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize(("data", "field", "rule"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_spec_is_rejected_naming_the_field(
    data: dict[str, Any], field: str, rule: str, tmp_path: Path, no_network: None
) -> None:
    flat = tmp_path / "flat"
    (flat / "variables").mkdir(parents=True)
    (flat / "saved_model.pb").write_bytes(b"x")
    model = make_model(tmp_path / "model", 1623831335)
    (tmp_path / "payload.json").write_text('{"text": "not under instances or inputs"}')
    (tmp_path / "notjson.json").write_text("instances: [1]")
    data = _fill(data, {_MODEL: str(model), "{flat}": str(flat), "{payload}": str(tmp_path / "payload.json"),
                        "{not_json}": str(tmp_path / "notjson.json")})
    with pytest.raises(SpecError) as exc:
        DeploySpec.parse(data, source="case")
    message = str(exc.value)
    lines = [ln.strip() for ln in message.splitlines()]
    assert any(ln.startswith(f"{field}: ") and rule in ln for ln in lines), message
    assert message.startswith("case: invalid deploy spec")


def test_secrets_never_appear_in_errors() -> None:
    password = "pw-" + secrets.token_hex(12)  # made at run time, so the traceback's source lines cannot hold it
    with pytest.raises(SpecError) as exc:
        DeploySpec.parse({"node_pool": {"key_pair": "ops", "login_password": password}})
    # What a log handler or a Prefect flow-run failure would print: the traceback as Python formats it.
    printed = "".join(traceback.format_exception(exc.value))
    assert "login_password" in printed
    assert password not in printed and password not in repr(exc.value)


def test_login_password_is_masked_in_a_valid_spec() -> None:
    spec = DeploySpec.parse({"node_pool": {"login_password": "Hunter2-Secret!"}})
    assert "Hunter2-Secret!" not in repr(spec) and "Hunter2-Secret!" not in spec.model_dump_json()


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(SpecError) as exc:
        DeploySpec.parse({"storage": {"bucket": "A"}, "serving": {"gpus": -2}, "node_pool": {"vswitch_ids": []}})
    msg = str(exc.value)
    for field in ("storage.bucket", "serving.gpus", "node_pool.vswitch_ids"):
        assert f"  {field}: " in msg


def test_valid_spec_parses_without_network(model_dir: Path, no_network: None) -> None:
    spec = DeploySpec.parse({"cluster_id": SEED_CLUSTER, "model": {"local_dir": str(model_dir)}})
    assert spec.model.local_dir == model_dir


# ---- hostile files (issue 14) ------------------------------------------------------------------------------------
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("bomb.yaml", "serving:\n  tolerations:\n" + "".join(
            f"    - &t{i} [" + ", ".join([f"*t{i - 1}"] * 10 if i else ["{}"]) + "]\n" for i in range(9)),
         "alias bomb"),
        ("bomb2.yaml", ALIAS_BOMB, "alias bomb"),
        ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 32"),
        ("deep.json", '{"a": ' + "[" * 100000 + "]" * 100000 + "}", "nested deeper than 32"),
        ("deep2.json", '{"a": ' + "[" * 40 + "]" * 40 + "}", "nested deeper than 32"),
        ("self.yaml", "serving: &s\n  tolerations: [*s]\n", "recursive structure"),
        ("binary.yaml", "\udcff", "not UTF-8"),
        ("list.yaml", "- 1\n- 2\n", "mapping at the top level"),
        ("tab.yaml", "serving:\n\tname: x\n", "not valid YAML"),
        ("dup.json", '{"serving": ', "not valid JSON"),
        ("huge.yaml", "# " + "x" * (2 * 1024 * 1024), "larger than 1048576 bytes"),
        ("unhashable.yaml", "? [a]\n: b\n", "not valid YAML"),
    ],
)
def test_hostile_spec_files_are_refused_cleanly(tmp_path: Path, name: str, content: str, rule: str) -> None:
    f = tmp_path / name
    f.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(SpecError) as exc:
        DeploySpec.from_file(f)
    assert rule in str(exc.value)
    assert str(f) in str(exc.value)


def test_an_endless_device_is_refused_after_a_bounded_read() -> None:
    with pytest.raises(SpecError, match="larger than 1048576 bytes"):
        DeploySpec.from_file("/dev/zero")


def test_anchors_and_aliases_that_stay_small_still_load(tmp_path: Path) -> None:
    f = tmp_path / "anchors.yaml"
    f.write_text(
        "load_test:\n  stages:\n    - &stage {duration_s: 60, users: 5, spawn_rate: 5}\n    - *stage\n"
        "serving:\n  version: '202107141745'\n"
    )
    spec = DeploySpec.from_file(f)
    assert spec.load_test.stages[0] == spec.load_test.stages[1]


def test_a_deploy_needs_exactly_one_model_source(tmp_path: Path, model_dir: Path) -> None:
    DeploySpec.parse({"model": {"local_dir": str(model_dir)}}).require_model_source()
    DeploySpec.parse({"model": {"source_uri": "oss://models-src/m"}}).require_model_source()
    with pytest.raises(SpecError, match="model.local_dir: set model.local_dir"):
        DeploySpec.parse({"serving": {"version": "v1"}}).require_model_source()


# --- the spec as a form (the Prefect UI renders its JSON schema) ---------------------------------------------------
@pytest.mark.parametrize(("name", "title"), [
    ("duration_s", "Duration (s)"), ("wait_time_s", "Wait time (s)"), ("p95_ms", "p95 (ms)"),
    ("vswitch_ids", "vSwitch IDs"), ("multi_az_policy", "Multi-AZ policy"), ("oss_url", "OSS URL"),
    ("rrsa_role_name", "RRSA role name"), ("rest_api_port", "REST API port"), ("pv_name", "PV name"),
    ("gpus", "GPUs"), ("private_ip", "Private IP"), ("cluster_id", "Cluster ID"), ("source_uri", "Source URI"),
    ("local_dir", "Local directory"), ("system_disk_size", "System disk size (GiB)"),
])
def test_field_titles_spell_out_acronyms_and_units(name: str, title: str) -> None:
    assert field_title(name) == title


def _schema_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defs = schema["$defs"]
    out: dict[str, dict[str, Any]] = {}

    def walk(prefix: str, model: dict[str, Any]) -> None:
        for name, prop in model["properties"].items():
            out[prefix + name] = prop
            if "$ref" in prop:
                walk(f"{prefix}{name}.", defs[prop["$ref"].rsplit("/", 1)[1]])

    walk("", schema)
    return out


def test_schema_titles_descriptions_and_no_null_type_toggle() -> None:
    schema = DeploySpec.model_json_schema()
    fields = _schema_fields(schema)
    defs = schema["$defs"]
    for path, prop in fields.items():
        shown = {**defs[prop["$ref"].rsplit("/", 1)[1]], **prop} if "$ref" in prop else prop
        assert shown.get("title") and shown.get("description"), path
        # `X | None` renders as X alone (a plain input, no "str | None" toggle) and without a default, so that
        # Prefect's parameter check still lets null through.
        assert {"type": "null"} not in prop.get("anyOf", []), path
    assert fields["model.source_uri"] == {
        "type": "string", "title": "Source URI",
        "description": "Where the model comes from when not local: oss://bucket/prefix (copied inside OSS)"}
    assert fields["node_pool.login_password"]["format"] == "password"
    assert schema["$defs"]["NodePoolSpec"]["title"] == "Node pool" and schema["title"] == "Deploy spec"
    # Still optional: None validates and is the default.
    spec = DeploySpec.parse({"model": {"source_uri": None}, "storage": {"oss_url": None}})
    assert spec.model.source_uri is None and spec.storage.oss_url is None


def _seed_sandbox_fields() -> set[str]:
    """The fields examples/ack-seed.yaml marks SANDBOX VALUE: the comment sits right above the field's key."""
    lines = (EXAMPLES / "ack-seed.yaml").read_text().splitlines()
    marked, section = set(), ""
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            section = line.split(":", 1)[0]
        if line.strip().startswith("# SANDBOX VALUE"):
            key = next(row for row in lines[i + 1:] if not row.strip().startswith("#")).strip().split(":", 1)[0]
            marked.add(f"{section}.{key}")
    return marked


def test_fields_holding_sandbox_values_say_so_and_the_seed_marks_the_same() -> None:
    said = {path for path, prop in _schema_fields(DeploySpec.model_json_schema()).items()
            if SANDBOX_VALUE in prop.get("description", "")}
    assert said == {"node_pool.vswitch_ids", "node_pool.key_pair", "model.local_dir", "storage.bucket"}
    assert _seed_sandbox_fields() == said
    # ... and those are the fields where the sandbox example and the real-cluster example differ for that reason.
    sandbox = yaml.safe_load((EXAMPLES / "sandbox.yaml").read_text())
    seed = yaml.safe_load((EXAMPLES / "ack-seed.yaml").read_text())
    for path in said:
        group, key = path.split(".")
        assert sandbox[group][key] != seed[group][key], path
