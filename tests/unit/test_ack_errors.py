"""ACK error bodies as the flow reads them: either spelling of each key, as the current SDK's ROA path does."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from clients.ack import parse_error_body


def test_lower_case_body_keeps_the_real_code():
    body = '{"code":"Throttling.User","message":"Request was denied due to user flow control.","requestId":"R-1"}'
    assert parse_error_body(body) == ("Throttling.User", "Request was denied due to user flow control.", "R-1")
    assert parse_error_body('{"Code":"A","code":"b","Message":"m","requestid":"r"}') == ("A", "m", "r")


def test_bodies_without_a_code_are_not_errors_we_can_read():
    for text in ("", "not json", "[1, 2]", "null", '{"message": "no code"}', '{"code": ""}', '{"code": true}'):
        assert parse_error_body(text) is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=10)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused(text):
    out = parse_error_body(text)
    assert out is None or (isinstance(out[0], str) and out[0])


@given(st.dictionaries(st.sampled_from(["code", "Code", "message", "Message", "requestId", "RequestId", "requestid",
                                        "x"]), json_values, max_size=6))
def test_any_object_gives_strings_or_none(doc):
    out = parse_error_body(json.dumps(doc))
    if out is not None:
        code, message, rid = out
        assert isinstance(code, str) and code
        assert message is None or isinstance(message, str)
        assert rid is None or isinstance(rid, str)
