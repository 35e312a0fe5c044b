"""What a release's pods read (tasks/model_readers.py): the model config's base paths, followed through the pod
template's mounts to the OSS volume's bucket and path, as the pods see them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.spec import DeploySpec
from tasks.model_readers import ModelPrefix, UnknownReader, config_base_paths, pod_model_prefixes, unread
from tasks.serving import render_config_map, render_deployment, render_model_config
from tasks.storage import render_pv, render_pvc


def _spec(version: str = "v1", **serving: Any) -> DeploySpec:
    return DeploySpec.parse({"serving": {"version": version, **serving},
                             "storage": {"path": "/team", "oss_url": "http://oss.example"}})


def _cluster(*specs: DeploySpec, bound: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
    objs: dict[tuple[str, str], dict[str, Any]] = {}
    for s in specs:
        pvc = render_pvc(s)
        if not bound:
            pvc["spec"].pop("volumeName", None)
        for m in (render_config_map(s), pvc, render_pv(s)):
            objs[m["kind"], m["metadata"]["name"]] = m
    return objs


def _get(objs: dict[tuple[str, str], dict[str, Any]]):
    return lambda kind, name, ns: objs.get((kind, name))


def _pod(s: DeploySpec) -> dict[str, Any]:
    return render_deployment(s)["spec"]["template"]["spec"]


def test_a_release_reads_its_own_directory_under_the_model_path():
    s = _spec()
    got = pod_model_prefixes(_pod(s), "default", _get(_cluster(s)))
    assert got == {ModelPrefix(bucket=s.storage.bucket, prefix=f"team/tensorflow/{s.names.release}/")}
    assert got == {ModelPrefix(bucket=s.storage.bucket, prefix=s.names.model_oss_prefix)}


def test_a_release_of_the_old_layout_is_read_as_it_is_from_its_config_map():
    s = _spec()
    objs = _cluster(s)
    cm = objs["ConfigMap", s.names.model_config_map]
    cm["data"]["model.config"] = cm["data"]["model.config"].replace(s.names.model_base_path, "/models/tensorflow")
    assert pod_model_prefixes(_pod(s), "default", _get(objs)) == {
        ModelPrefix(bucket=s.storage.bucket, prefix="team/tensorflow/")}


def test_arenas_shell_form_with_model_base_path_is_followed():
    s = _spec()
    pod = _pod(s)
    c = pod["containers"][0]
    c["command"] = ["sh", "-c", "/usr/bin/tensorflow_model_server --port=8500 --model_name=m "
                                "--model_base_path=/models/other"]
    c.pop("args", None)
    assert pod_model_prefixes(pod, "default", _get(_cluster(s))) == {
        ModelPrefix(bucket=s.storage.bucket, prefix="team/other/")}


def test_what_cannot_be_followed_is_unknown_and_a_missing_claim_reads_nothing():
    s = _spec()
    objs = _cluster(s)
    del objs["ConfigMap", s.names.model_config_map]
    with pytest.raises(UnknownReader, match="gone"):
        pod_model_prefixes(_pod(s), "default", _get(objs))
    with pytest.raises(UnknownReader, match="cannot be read"):
        pod_model_prefixes(_pod(s), "default", _get(_cluster(s, bound=False)))
    objs = _cluster(s)
    del objs["PersistentVolumeClaim", s.names.pvc]
    assert pod_model_prefixes(_pod(s), "default", _get(objs)) == set()


def test_a_release_directory_below_a_shared_base_path_is_not_read_from_it_but_a_version_directory_is():
    shared = ModelPrefix(bucket="b", prefix="tensorflow/")
    release = ModelPrefix(bucket="b", prefix="tensorflow/bert-tfserving-v2/")
    readers = {("ns", "legacy"): {shared}}
    assert unread([release], readers) == ([release], {})
    version = ModelPrefix(bucket="b", prefix="tensorflow/1623831335/")
    assert unread([version], readers) == ([], {version: "ns/legacy"})
    assert unread([ModelPrefix(bucket="b", prefix="")], readers)[0] == []  # holds what it reads
    assert unread([shared], {("ns", "new"): {release}})[0] == []  # deleting the shared one deletes the release's
    assert unread([release], {("ns", "x"): {ModelPrefix(bucket="other", prefix="tensorflow/")}})[0] == [release]


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_base_paths_parse_back_from_the_rendered_model_config(tail: str):
    spec = _spec()
    path = "/models/" + tail
    text = render_model_config(spec).replace(
        f'"{spec.names.model_base_path}"',
        '"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"')
    assert config_base_paths(text) == [path]


def test_adjacent_string_pieces_and_single_quotes_are_one_base_path():
    text = "model_config_list { config { name: 'a' base_path: '/m/' \"a\" } config { base_path: \"/x\\101\" } }"
    assert config_base_paths(text) == ["/m/a", "/xA"]
    with pytest.raises(UnknownReader):
        config_base_paths("model_config_list { config { base_path: /unquoted } }")
