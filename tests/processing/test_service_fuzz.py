"""Fuzzing POST /process with hypothesis: arbitrary bytes, arbitrary JSON, and
envelopes whose every field may be wrong.

One service per test serves every example, so state carries over (later
examples meet duplicates). With healthy dependencies every answer is a 200
(the input alone can never cause a 5xx), the service never raises, and what is
written matches the outcome: a rejected request writes its quarantine record
and nothing else. Content types and query strings change nothing; other
methods and paths are 404 or 405 and write nothing.

More examples with CI=true; the module then checks that at least 10,000
requests reached ``POST /process``.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from processors.base import InvalidFile
from processors.testing import check_writable, gcs_payload, push_body, v1_payload, v2_payload

CI = os.environ.get("CI", "").strip().lower() == "true"
ENDPOINT = "/process"


def fuzz(ci: int, local: int = 300) -> settings:
    return settings(max_examples=ci if CI else local, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("enough_requests")  # tests/conftest.py
REQUESTS: Counter[str] = Counter()
"""Requests sent to ``POST /process``, by test."""
COUNTED_TESTS = {"test_arbitrary_bytes", "test_arbitrary_json",
                 "test_envelopes_with_arbitrary_fields", "test_near_valid_events",
                 "test_content_types_and_query_strings"}


FILE_REASONS = {"blob_not_found", "unreadable_path", "invalid_file", "processor_refused"}
PATHS = ["mem://ball-dont-lie/games/2026-11-28/20261128_100000.json",
         "mem://ball-dont-lie/player-box-scores/2026-11-28/20261128_100000.json",
         "mem://ball-dont-lie/games/missing.json", "gs://b/odds-api/player-props/x.json",
         "file:///etc/passwd", "", "ball-dont-lie/games"]

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(PATHS))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
PAYLOAD_KEYS = ["execution_id", "scraper_name", "name", "gcs_path", "status", "processor_name",
                "phase", "metadata", "correlation_id", "bucket", "generation", "timestamp",
                "timeCreated"]
payloads = st.dictionaries(
    st.sampled_from(PAYLOAD_KEYS) | st.text(max_size=6),
    json_values | st.sampled_from(PATHS) | st.sampled_from(["success", "failed", "no_data"])
    | st.fixed_dictionaries({"gcs_path": st.sampled_from(PATHS)}),
    max_size=8)
attributes = st.dictionaries(
    st.sampled_from(["replay", "force", "replay_id", "execution_id", "bucketId", "objectId",
                     "objectGeneration", "eventType", "scraper_name"]) | st.text(max_size=6),
    st.text(max_size=12) | st.sampled_from(["true", "OBJECT_FINALIZE"]) | json_values,
    max_size=5)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    data = draw(st.one_of(
        payloads.map(lambda p: base64.b64encode(json.dumps(p).encode()).decode()),
        json_values.map(lambda v: base64.b64encode(json.dumps(v).encode()).decode()),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
        json_values))
    message = draw(st.fixed_dictionaries({}, optional={
        "data": st.just(data), "attributes": attributes | json_values,
        "messageId": json_values, "message_id": json_values, "publishTime": json_values}))
    envelope = draw(st.fixed_dictionaries({"message": st.just(message) | json_values}, optional={
        "deliveryAttempt": json_values, "delivery_attempt": json_values,
        "subscription": json_values}))
    return json.dumps(envelope).encode()


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A real v1, v2 or object-finalize event with a few fields replaced or dropped."""
    path = draw(st.sampled_from(PATHS))
    execution_id = draw(st.sampled_from(["a1", "a2"]) | st.text(min_size=1, max_size=10))
    payload = draw(st.sampled_from([
        v1_payload(execution_id, path),
        {**v2_payload(execution_id, path), "phase": draw(json_values)},
        gcs_payload("b", path.split("://")[-1])]))
    payload.update(draw(st.dictionaries(st.sampled_from(sorted(payload)), json_values,
                                        max_size=2)))
    for key in draw(st.lists(st.sampled_from(sorted(payload)), max_size=2)):
        payload.pop(key, None)
    return push_body(payload, draw(attributes), message_id=draw(st.text(max_size=8)),
                     snake_case=draw(st.booleans()),
                     delivery_attempt=draw(st.none() | st.integers(0, 10)))


def check(rig: Any, body: bytes, test: str, *, query: str = "",
          content_type: str | None = "application/json") -> None:
    """POST ``body`` to /process; a 200 whose writes match its outcome."""
    before = rig.written()
    # A stream, not data=: the test client would replace an empty multipart body with a form.
    resp = rig.client.post(ENDPOINT, query_string=query, input_stream=io.BytesIO(body),
                           content_length=len(body), content_type=content_type)
    REQUESTS[test] += 1
    assert resp.status_code == 200, (resp.status_code, resp.get_data(as_text=True))
    answer = resp.get_json()
    if currently_in_test_context():
        event(f"{answer['outcome']}: {answer['reason']}")
    logs, ledger, quarantine = (a - b for a, b in zip(rig.written(), before, strict=True))
    expected = {
        "processed": (1, 1, 0), "duplicate": (0, 0, 0), "skipped": (0, 0, 0),
        "ignored": (0, 0, 0),
        "quarantined": (1 if answer["reason"] in FILE_REASONS else 0, 0, 1),
    }[answer["outcome"]]
    assert (logs, ledger, quarantine) == expected, answer
    for row in rig.log_rows[before[0]:]:  # the rows before were checked when written
        check_writable(row)


@fuzz(ci=1200, local=100)
@given(bodies=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_arbitrary_bytes(rig: Any, bodies: list[bytes]) -> None:
    for body in bodies:
        check(rig, body, "test_arbitrary_bytes")


@fuzz(ci=1200, local=100)
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_arbitrary_json(rig: Any, values: list[Any]) -> None:
    for value in values:
        check(rig, json.dumps(value).encode(), "test_arbitrary_json")


@fuzz(ci=1000, local=300)
@given(bodies=st.lists(envelopes(), min_size=1, max_size=3))
def test_envelopes_with_arbitrary_fields(rig: Any, bodies: list[bytes]) -> None:
    for body in bodies:
        check(rig, body, "test_envelopes_with_arbitrary_fields")


@fuzz(ci=1000, local=300)
@given(bodies=st.lists(near_valid(), min_size=1, max_size=4), invalid_files=st.booleans())
def test_near_valid_events(rig: Any, bodies: list[bytes], invalid_files: bool) -> None:
    rig.games.error = InvalidFile("row 0: no home_team") if invalid_files else None
    for body in bodies:
        check(rig, body, "test_near_valid_events")


CONTENT_TYPES = [None, "application/json", "application/octet-stream", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16", "*/*", ""]
content_types = st.sampled_from(CONTENT_TYPES) | st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
queries = (st.dictionaries(st.sampled_from(["replay", "force", "execution_id", "token"])
                           | st.text(max_size=6), st.text(max_size=8), max_size=3).map(urlencode)
           | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=16))
METHODS = ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]
ODD_PATHS = ["/process/", "/process/x", "/processes", "//process", "/Process", "/process%00",
             "/process;x", "/", "/health"]
paths = st.sampled_from(ODD_PATHS) | st.text(max_size=10).map(
    lambda s: "/process/" + quote(s, safe="/%;"))
SAMPLE_BODIES = [
    push_body(v1_payload("sample-1", PATHS[0])), push_body(v2_payload("sample-2", PATHS[1])),
    push_body(v1_payload("sample-3", PATHS[2])), push_body(v1_payload("sample-4", None)),
    push_body(gcs_payload("b", "ball-dont-lie/games/x.json")), push_body({"unknown": 1}),
    push_body(b"\xff"), b"", b"{}", b"not json", b'{"message": 5}', b"\xef\xbb\xbf{}"]
"""Bodies of every outcome, cheap to draw: these tests vary what surrounds the body."""
bodies = st.sampled_from(SAMPLE_BODIES) | st.binary(max_size=60)


@fuzz(ci=600, local=60)
@given(requests=st.lists(st.tuples(bodies, queries, content_types), min_size=1, max_size=5))
def test_content_types_and_query_strings(
        rig: Any, requests: list[tuple[bytes, str, str | None]]) -> None:
    """Neither changes anything: Pub/Sub sends JSON, replay tools and curl may not."""
    for body, query, content_type in requests:
        check(rig, body, "test_content_types_and_query_strings", query=query,
              content_type=content_type)


@fuzz(ci=300, local=40)
@given(requests=st.lists(st.tuples(st.sampled_from(["POST", *METHODS]), paths, bodies, queries,
                                   content_types), min_size=1, max_size=5))
def test_other_methods_and_paths(
        rig: Any, requests: list[tuple[str, str, bytes, str, str | None]]) -> None:
    """Anything but ``POST /process`` is a 404 or 405 (308 where Werkzeug merges slashes)
    that processes and writes nothing."""
    for method, path, body, query, content_type in requests:
        before, calls = rig.written(), rig.calls()
        resp = rig.client.open(path, method=method, query_string=query,
                               input_stream=io.BytesIO(body), content_length=len(body),
                               content_type=content_type)
        if path == "/health":
            expected = {200} if method in ("GET", "HEAD", "OPTIONS") else {405}
        else:
            expected = {404, 308}
        assert resp.status_code in expected, (method, path, resp.status_code)
        assert (rig.written(), rig.calls()) == (before, calls)
        event(f"{method} {resp.status_code}")
