"""TF Serving's status JSON against its protos (tests/tfserving_schema.py), the checker itself.

The sandbox's model server answers are held against this schema in ``tests/kube/test_runtime.py`` (every status
answer of a running server, in the states AVAILABLE, END with a load error and END after an unload). The predict,
classify and metadata bodies have no proto JSON mapping (``api_rest.md`` documents them in prose, the metadata's
``signature_def`` is printed field by field by ``http_rest_api_util.cc``), so no schema exists to hold them to.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from tfserving_schema import parse_model_status, render_model_status


def test_a_status_answer_round_trips_exactly():
    doc = {"model_version_status": [
        {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "END", "status": {"error_code": "NOT_FOUND", "error_message": "gone"}}]}
    assert render_model_status(parse_model_status(json.dumps(doc))) == doc


@pytest.mark.parametrize("bad", [
    {"model_version_status": [{"version": "1", "state": "READY"}]},                       # no such state
    {"model_version_status": [{"version": "1", "state": "AVAILABLE", "ready": True}]},    # unknown field
    {"model_version_status": [{"version": "1", "status": {"errorCode": "OK"}}]},          # not the json_name
    {"model_version_status": [{"version": "1", "status": {"error_code": "NotFound"}}]},   # not a Code name
    {"versions": []},
])
def test_anything_else_is_refused(bad):
    with pytest.raises(json_format.ParseError):
        parse_model_status(json.dumps(bad))


def test_defaults_are_printed_as_tf_serving_prints_them():
    """``always_print_fields_with_no_presence``: an OK status (set by get_model_status_impl.cc for every version)
    still shows error_code OK and an empty message."""
    out = render_model_status(parse_model_status(
        '{"model_version_status": [{"version": "7", "state": "START", "status": {}}]}'))
    assert out == {"model_version_status": [{"version": "7", "state": "START",
                                             "status": {"error_code": "OK", "error_message": ""}}]}
