"""Decoding push bodies: the three payload shapes, both spellings, and every rejection."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from processors.envelope import MAX_ID, Decoded, Probe, Rejected, decode_push
from processors.testing import gcs_payload, push_body, v1_payload, v2_payload

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
PATH = "gs://nba-scraped-data/ball-dont-lie/games/2026-11-28/20261128_100000.json"


def decoded(body: bytes) -> Decoded:
    result = decode_push(body, lambda: NOW)
    assert isinstance(result, Decoded), result
    return result


def rejected(body: bytes) -> Rejected:
    result = decode_push(body, lambda: NOW)
    assert isinstance(result, Rejected), result
    return result


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def envelope(message: Any, **extra: Any) -> bytes:
    return json.dumps({"message": message, **extra}).encode()


# -- shapes ---------------------------------------------------------------------------------


def test_v1_camel_case_envelope() -> None:
    d = decoded(push_body(v1_payload("a1b2c3d4", PATH), {"scraper_name": "bdl_games_scraper"},
                          message_id="77", delivery_attempt=3))
    e = d.event
    assert (e.format, e.execution_id, e.gcs_path, e.scraper_name, e.status) == (
        "v1", "a1b2c3d4", PATH, "bdl_games_scraper", "success")
    assert (e.replay, e.force, e.correlation_id) == (False, False, None)
    assert e.attributes == {"scraper_name": "bdl_games_scraper"}
    assert (d.delivery.message_id, d.delivery.delivery_attempt) == ("77", 3)
    assert d.delivery.publish_time == "2026-11-28T10:00:05.123Z"
    assert d.delivery.subscription and d.delivery.subscription.endswith("nba-processors-sub")
    assert d.event_time == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    assert d.skip is None


def test_snake_case_twins_decode_the_same() -> None:
    camel = decoded(push_body(v1_payload("a1", PATH), message_id="9", delivery_attempt=2))
    snake = decoded(push_body(v1_payload("a1", PATH), message_id="9", delivery_attempt=2,
                              snake_case=True))
    assert camel == snake


def test_missing_delivery_attempt_and_absent_attributes() -> None:
    d = decoded(push_body(v1_payload("a1", PATH), None, delivery_attempt=None))
    assert d.delivery.delivery_attempt is None and d.event.attributes == {}


def test_attribute_values_that_are_not_strings_are_dropped() -> None:
    d = decoded(push_body(v1_payload("a1", PATH), {"ok": "1", "n": 5, "l": [1]}))
    assert d.event.attributes == {"ok": "1"}


def test_v1_with_only_the_legacy_name_field() -> None:
    body = v1_payload("a1", PATH)
    del body["scraper_name"]
    assert decoded(push_body(body)).event.scraper_name == "bdl_games_scraper"


def test_v1_from_attributes_alone_has_nothing_to_process() -> None:
    d = decoded(push_body(None, {"execution_id": "a1", "scraper_name": "x", "status": "no_data"}))
    assert (d.event.execution_id, d.event.gcs_path, d.skip) == ("a1", None, "no_gcs_path")


@pytest.mark.parametrize(("status", "path", "skip"), [
    ("success", PATH, None), ("no_data", PATH, None), ("no_data", None, "no_gcs_path"),
    ("failed", None, "scraper_run_failed"), ("failed", PATH, "scraper_run_failed"),
])
def test_nothing_to_process(status: str, path: str | None, skip: str | None) -> None:
    assert decoded(push_body(v1_payload("a1", path, status=status))).skip == skip


def test_v2_reads_metadata_gcs_path_and_correlation_id() -> None:
    d = decoded(push_body(v2_payload("e2", PATH, correlation_id="c9")))
    e = d.event
    assert (e.format, e.execution_id, e.gcs_path, e.correlation_id) == ("v2", "e2", PATH, "c9")
    assert e.scraper_name == "bdl_games_scraper" and d.skip is None


@pytest.mark.parametrize("phase", [2, "2", "phase_2", 3])
def test_v2_phase_two_events_are_not_processed_again(phase: Any) -> None:
    body = {**v2_payload("e2", PATH), "phase": phase}
    assert decoded(push_body(body)).skip == "not_a_phase1_event"


def test_object_finalize_derives_path_and_a_deterministic_id() -> None:
    name = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
    first = decoded(push_body(gcs_payload("nba-scraped-data", name), message_id="1"))
    again = decoded(push_body(gcs_payload("nba-scraped-data", name), message_id="2"))
    e = first.event
    assert (e.format, e.gcs_path) == ("gcs", f"gs://nba-scraped-data/{name}")
    assert e.execution_id == f"gcs:nba-scraped-data/{name}#1764324000123456"
    assert again.event.execution_id == e.execution_id
    assert first.event_time == dt.datetime(2026, 11, 28, 10, 0, 1, tzinfo=dt.UTC)
    other = decoded(push_body(gcs_payload("nba-scraped-data", name, generation="2")))
    assert other.event.execution_id != e.execution_id  # a new generation is a new file
    unversioned = decoded(push_body(gcs_payload("b", "o", generation=None)))
    assert unversioned.event.execution_id == "gcs:b/o"


def test_object_finalize_with_a_long_name_gets_a_hashed_id() -> None:
    name = "x/" * 300 + "f.json"
    e = decoded(push_body(gcs_payload("bucket", name))).event
    assert e.execution_id.startswith("gcs:sha256:") and len(e.execution_id) <= MAX_ID
    assert e.execution_id == decoded(push_body(gcs_payload("bucket", name))).event.execution_id


def test_object_notification_without_payload_uses_attributes() -> None:
    attrs = {"bucketId": "nba-scraped-data", "objectId": "odds-api/player-props/a.json",
             "objectGeneration": "7", "eventType": "OBJECT_FINALIZE",
             "eventTime": "2026-11-28T09:00:00Z"}
    d = decoded(push_body(None, attrs))
    assert d.event.gcs_path == "gs://nba-scraped-data/odds-api/player-props/a.json"
    assert d.event.execution_id == "gcs:nba-scraped-data/odds-api/player-props/a.json#7"
    assert d.event_time == dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC) and d.skip is None
    deleted = decoded(push_body(None, {**attrs, "eventType": "OBJECT_DELETE"}))
    assert deleted.skip == "not_object_finalize"


@pytest.mark.parametrize(("attributes", "replay", "force"), [
    ({}, False, False),
    ({"replay": "true"}, True, False),
    ({"replay": "TRUE", "force": "true"}, True, True),
    ({"replay_id": "backfill-7"}, True, False),
    ({"force": "1"}, False, True),
    ({"force": "false", "replay": "no"}, False, False),
])
def test_replay_and_force_markers(attributes: dict[str, str], replay: bool, force: bool) -> None:
    e = decoded(push_body(v1_payload("a1", PATH), attributes)).event
    assert (e.replay, e.force) == (replay, force)


# -- the event's own time -----------------------------------------------------------------


def test_event_time_falls_back_to_publish_time_then_the_clock() -> None:
    no_ts = {**v1_payload("a1", PATH), "timestamp": None}
    assert decoded(push_body(no_ts)).event_time == dt.datetime(
        2026, 11, 28, 10, 0, 5, 123000, tzinfo=dt.UTC)
    for junk in ("garbage", "1900-01-01T00:00:00Z", 12345):
        body = {**v1_payload("a1", PATH), "timestamp": junk}
        assert decoded(push_body(body, publish_time="nope")).event_time == NOW


# -- probes and rejections ------------------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty_body"), (b"  \n", "empty_body"), (b"{}", "no_message"),
    (b'{"subscription": "s", "deliveryAttempt": 1}', "no_message"),
    (b'{"message": null}', "no_message"),
])
def test_probes_are_nothing_to_do(body: bytes, reason: str) -> None:
    result = decode_push(body)
    assert isinstance(result, Probe) and result.reason == reason


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not json", b"not json", "envelope_not_json"),
    ("not utf-8", b"\xff\xfe\x00{", "envelope_not_utf8"),
    ("deeply nested", b"[" * 100_000, "envelope_not_json"),
    ("array envelope", b"[1, 2]", "envelope_not_object"),
    ("string envelope", b'"hello"', "envelope_not_object"),
    ("message is a string", envelope("hi"), "message_not_object"),
    ("data is a number", envelope({"data": 5}), "data_not_string"),
    ("data is not base64", envelope({"data": "!!not base64!!"}), "data_not_base64"),
    ("data is non-ascii", envelope({"data": "é"}), "data_not_base64"),
    ("data is not utf-8", envelope({"data": b64(b"\xff\xfe")}), "data_not_utf8"),
    ("data is not json", envelope({"data": b64(b"{nope")}), "data_not_json"),
    ("data is an array", envelope({"data": b64(b"[1]")}), "data_not_object"),
    ("unknown shape", push_body({"foo": 1, "bar": [2]}), "unknown_format"),
    ("empty message", envelope({}), "empty_message"),
    ("no execution_id", push_body({"scraper_name": "x", "gcs_path": PATH}),
     "missing_execution_id"),
    ("execution_id a number", push_body({**v1_payload("a", PATH), "execution_id": 12}),
     "wrong_type"),
    ("execution_id too long", push_body(v1_payload("e" * (MAX_ID + 1), PATH)), "field_too_long"),
    ("execution_id not unicode", push_body(v1_payload("a\ud800", PATH)), "invalid_text"),
    ("gcs_path a list", push_body({**v1_payload("a", PATH), "gcs_path": [PATH]}), "wrong_type"),
    ("v2 metadata a string", push_body({**v2_payload("a", PATH), "metadata": "x"}),
     "wrong_type"),
    ("v2 phase a list", push_body({**v2_payload("a", PATH), "phase": [2]}), "wrong_type"),
    ("gcs generation a float", push_body({**gcs_payload("b", "n"), "generation": 1.5}),
     "wrong_type"),
    ("gcs bucket empty", push_body({**gcs_payload("b", "n"), "bucket": ""}), "missing_object"),
    ("payload without envelope", json.dumps(v1_payload("a", PATH)).encode(),
     "unwrapped_payload"),
]


@pytest.mark.parametrize(("body", "reason"), [(b, r) for _, b, r in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_input_is_rejected_with_a_reason(body: bytes, reason: str) -> None:
    result = rejected(body)
    assert result.reason == reason and result.detail


def test_a_rejection_after_the_id_is_known_keeps_the_id() -> None:
    result = rejected(push_body({**v1_payload("a1", PATH), "gcs_path": 5}, message_id="m7"))
    assert (result.execution_id, result.delivery.message_id) == ("a1", "m7")
