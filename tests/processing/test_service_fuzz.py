"""Fuzzing POST /process with hypothesis: arbitrary bytes, arbitrary JSON, and
envelopes whose every field may be wrong.

One service per test serves every example, so state carries over (later
examples meet duplicates). With healthy dependencies every answer is a 200
(the input alone can never cause a 5xx), the service never raises, and what is
written matches the outcome: a rejected request writes its quarantine record
and nothing else. More examples with CI=true.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.base import InvalidFile
from processors.testing import check_writable, gcs_payload, push_body, v1_payload, v2_payload

EXAMPLES = 1000 if os.environ.get("CI", "").lower() == "true" else 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
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


def check(rig: Any, body: bytes) -> None:
    before = rig.written()
    resp = rig.post(body)
    assert resp.status_code == 200, (resp.status_code, resp.get_data(as_text=True))
    answer = resp.get_json()
    event(f"{answer['outcome']}: {answer['reason']}")
    logs, ledger, quarantine = (a - b for a, b in zip(rig.written(), before, strict=True))
    expected = {
        "processed": (1, 1, 0), "duplicate": (0, 0, 0), "skipped": (0, 0, 0),
        "ignored": (0, 0, 0),
        "quarantined": (1 if answer["reason"] in FILE_REASONS else 0, 0, 1),
    }[answer["outcome"]]
    assert (logs, ledger, quarantine) == expected, answer
    for row in rig.log_rows:
        check_writable(row)


@FUZZ
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes(rig: Any, body: bytes) -> None:
    check(rig, body)


@FUZZ
@given(value=json_values)
def test_arbitrary_json(rig: Any, value: Any) -> None:
    check(rig, json.dumps(value).encode())


@FUZZ
@given(bodies=st.lists(envelopes(), min_size=1, max_size=3))
def test_envelopes_with_arbitrary_fields(rig: Any, bodies: list[bytes]) -> None:
    for body in bodies:
        check(rig, body)


@FUZZ
@given(bodies=st.lists(near_valid(), min_size=1, max_size=4), invalid_files=st.booleans())
def test_near_valid_events(rig: Any, bodies: list[bytes], invalid_files: bool) -> None:
    rig.games.error = InvalidFile("row 0: no home_team") if invalid_files else None
    for body in bodies:
        check(rig, body)
