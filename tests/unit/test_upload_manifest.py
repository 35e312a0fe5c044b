"""The upload manifest (tasks/model_manifest.py): its decision, its file, and a loader that never trusts the file."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.model_manifest import (
    ListedObject,
    ManifestEntry,
    UploadManifest,
    manifest_path,
    unchanged_by_manifest,
)

ENTRY = ManifestEntry(path="/m/1/model.json", size=10, mtime_ns=123, crc64=42, etag="ABC")


def test_a_file_is_unchanged_only_when_its_stat_and_the_objects_etag_are_as_recorded() -> None:
    p = Path("/m/1/model.json")
    assert unchanged_by_manifest(ENTRY, p, 10, 123, ListedObject(size=10, etag='"abc"'))
    assert not unchanged_by_manifest(None, p, 10, 123, ListedObject(size=10, etag="ABC"))
    assert not unchanged_by_manifest(ENTRY, p, 10, 124, ListedObject(size=10, etag="ABC"))  # rewritten
    assert not unchanged_by_manifest(ENTRY, p, 11, 123, ListedObject(size=11, etag="ABC"))  # another size
    assert not unchanged_by_manifest(ENTRY, p, 10, 123, ListedObject(size=10, etag="DEF"))  # object replaced
    assert not unchanged_by_manifest(ENTRY, p, 10, 123, None)  # object gone
    assert not unchanged_by_manifest(ENTRY, Path("/other/1/model.json"), 10, 123, ListedObject(size=10, etag="ABC"))


def test_the_manifest_round_trips_per_bucket_and_prefix_with_private_permissions(tmp_path: Path) -> None:
    m = UploadManifest.load(tmp_path, "b", "models/x/")
    m.record("models/x/1/model.json", ENTRY)
    m.save()
    assert m.path == manifest_path(tmp_path, "b", "models/x/") and m.path.stat().st_mode & 0o777 == 0o600
    assert UploadManifest.load(tmp_path, "b", "models/x/").entries == {"models/x/1/model.json": ENTRY}
    assert UploadManifest.load(tmp_path, "b", "models/y/").entries == {}
    assert UploadManifest.load(tmp_path, "c", "models/x/").entries == {}


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=4), max_leaves=20))
def test_a_damaged_or_foreign_manifest_file_only_costs_full_checks(tmp_path_factory, doc) -> None:
    state = tmp_path_factory.mktemp("state")
    path = manifest_path(state, "b", "p/")
    path.parent.mkdir(parents=True)
    for variant in (doc, {"format": "elastic-inference-upload-manifest/v1", "bucket": "b", "prefix": "p/",
                          "objects": doc if isinstance(doc, dict) else {"k": doc}}):
        path.write_text(json.dumps(variant))
        m = UploadManifest.load(state, "b", "p/")
        assert all(isinstance(e, ManifestEntry) for e in m.entries.values())
    path.write_bytes(b"\xff\xfe not json")
    assert UploadManifest.load(state, "b", "p/").entries == {}
