"""POST /process on the in-memory doubles: every outcome pins its status code and its records."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
from typing import Any

import pytest

from outbox import logs
from outbox.blobs import LocalBlobs
from outbox.errors import ConfigError, TransientError
from processors.base import InvalidFile, ProcessResult
from processors.testing import (
    FakeProcessor,
    InMemoryLedger,
    gcs_payload,
    push_body,
    v1_payload,
    v2_payload,
)

BOX_SCRAPER = "bdl_player_box_scores_scraper"


def v1(rig: Any, execution_id: str = "a1b2c3d4", which: str = "games", **kw: Any) -> bytes:
    scraper = BOX_SCRAPER if which == "boxes" else "bdl_games_scraper"
    attributes = kw.pop("attributes", None)
    return push_body(v1_payload(execution_id, rig.uris[which], scraper), attributes, **kw)


def outcome(resp: Any) -> tuple[int, str, str | None]:
    body = resp.get_json()
    return resp.status_code, body["outcome"], body["reason"]


# -- success ---------------------------------------------------------------------------------


def test_a_v1_event_is_processed_logged_and_recorded(rig: Any) -> None:
    resp = rig.post(v1(rig, message_id="m1", delivery_attempt=2))
    assert outcome(resp) == (200, "processed", None)
    body = resp.get_json()
    assert (body["execution_id"], body["processor"]) == ("a1b2c3d4", "games")
    (event, data), = rig.games.calls
    assert data == b'{"data": []}' and event.execution_id == "a1b2c3d4"
    (row,) = rig.log_rows
    assert row["execution_id"] == body["run_id"] != "a1b2c3d4"
    assert {k: row.get(k) for k in (
        "processor_name", "source_execution_id", "correlation_id", "status", "trigger_source",
        "gcs_path", "output_dataset", "output_table", "game_date", "record_count",
        "records_failed", "error_type", "published")} == {
        "processor_name": "games", "source_execution_id": "a1b2c3d4",
        "correlation_id": "a1b2c3d4", "status": "success", "trigger_source": "pubsub",
        "gcs_path": rig.uris["games"], "output_dataset": "nba_raw", "output_table": "games",
        "game_date": dt.date(2026, 11, 28), "record_count": 1, "records_failed": 0,
        "error_type": None, "published": False}
    assert row["completed_at"] >= row["triggered_at"] and row["duration_seconds"] >= 0
    (ledger,) = rig.ledger.rows
    assert {k: ledger.get(k) for k in ("execution_id", "processor", "event_date", "run_id",
                                       "status", "message_id")} == {
        "execution_id": "a1b2c3d4", "processor": "games", "event_date": dt.date(2026, 11, 28),
        "run_id": row["execution_id"], "status": "success", "message_id": "m1"}
    assert rig.quarantine.records == []


def test_a_no_data_result_is_logged_as_no_data(rig: Any) -> None:
    rig.games.result = ProcessResult("no_data", "nba_raw", "games", None, 0)
    assert outcome(rig.post(v1(rig))) == (200, "processed", None)
    assert rig.log_rows[0]["status"] == "no_data" and rig.log_rows[0]["record_count"] == 0


def test_the_three_payload_shapes_reach_their_processor(rig: Any) -> None:
    v2 = push_body(v2_payload("e2", rig.uris["boxes"], correlation_id="corr-9"))
    gcs = push_body(gcs_payload("b", "ball-dont-lie/games/x.json"))
    rig.blobs.objects["gs://b/ball-dont-lie/games/x.json"] = b"{}"
    assert outcome(rig.post(v1(rig))) == (200, "processed", None)
    assert outcome(rig.post(v2)) == (200, "processed", None)
    assert outcome(rig.post(gcs)) == (200, "processed", None)
    assert [(r["processor_name"], r["source_execution_id"], r["correlation_id"])
            for r in rig.log_rows] == [
        ("games", "a1b2c3d4", "a1b2c3d4"), ("boxes", "e2", "corr-9"),
        ("games", "gcs:b/ball-dont-lie/games/x.json#1764324000123456",
         "gcs:b/ball-dont-lie/games/x.json#1764324000123456")]


def test_camel_and_snake_case_envelopes_are_one_event(rig: Any) -> None:
    assert outcome(rig.post(v1(rig))) == (200, "processed", None)
    assert outcome(rig.post(v1(rig, snake_case=True, delivery_attempt=None))) == (
        200, "duplicate", None)
    assert rig.calls() == 1


# -- dedupe ------------------------------------------------------------------------------------


def test_a_redelivery_and_a_republish_are_duplicates(rig: Any) -> None:
    assert outcome(rig.post(v1(rig, message_id="m1"))) == (200, "processed", None)
    assert outcome(rig.post(v1(rig, message_id="m1", delivery_attempt=2))) == (
        200, "duplicate", None)
    assert outcome(rig.post(v1(rig, message_id="m2-new-publish"))) == (200, "duplicate", None)
    assert rig.calls() == 1 and rig.written() == (1, 1, 0)


def test_dedupe_is_per_processor_and_per_execution_id(rig: Any) -> None:
    assert outcome(rig.post(v1(rig, "same-id", "games")))[1] == "processed"
    assert outcome(rig.post(v1(rig, "same-id", "boxes")))[1] == "processed"
    assert outcome(rig.post(v1(rig, "other-id", "games")))[1] == "processed"
    assert rig.ledger.keys() == [("same-id", "games"), ("same-id", "boxes"),
                                 ("other-id", "games")]


def test_instances_share_the_ledger(make_rig: Any) -> None:
    ledger = InMemoryLedger()
    first, second = make_rig(ledger=ledger), make_rig(ledger=ledger)
    assert outcome(first.post(v1(first)))[1] == "processed"
    assert outcome(second.post(v1(second, message_id="m9")))[1] == "duplicate"
    assert second.calls() == 0


def test_force_bypasses_dedupe_and_is_logged(rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert outcome(rig.post(v1(rig)))[1] == "processed"
    with caplog.at_level(logging.WARNING, "processors.service"):
        forced = rig.post(v1(rig, attributes={"force": "true", "replay": "true"}))
    assert outcome(forced) == (200, "processed", None)
    assert rig.calls() == 2 and "dedupe bypassed" in caplog.text
    assert [r["trigger_source"] for r in rig.log_rows] == ["pubsub", "replay"]
    assert len(rig.ledger.rows) == 2


def test_a_replay_without_force_is_still_deduplicated(rig: Any) -> None:
    assert outcome(rig.post(v1(rig)))[1] == "processed"
    assert outcome(rig.post(v1(rig, attributes={"replay": "true"})))[1] == "duplicate"


# -- acked without processing ----------------------------------------------------------------


@pytest.mark.parametrize(("payload", "reason"), [
    (v1_payload("a1", None, status="no_data"), "no_gcs_path"),
    (v1_payload("a1", None, status="failed"), "scraper_run_failed"),
    (v2_payload("a1", "mem://ball-dont-lie/games/x.json", phase=2), "not_a_phase1_event"),
    (v1_payload("a1", "gs://b/espn/scoreboard/x.json", "espn_scoreboard"), "no_processor"),
])
def test_nothing_to_process_is_acked_skipped_and_writes_nothing(
        rig: Any, payload: dict[str, Any], reason: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "processors.service"):
        assert outcome(rig.post(push_body(payload))) == (200, "skipped", reason)
    assert rig.written() == (0, 0, 0) and rig.calls() == 0
    (record,) = [r for r in caplog.records if r.getMessage() == "process: skipped"]
    assert record.levelno == logging.INFO and record.json_fields["reason"] == reason  # type: ignore[attr-defined]
    assert rig.handler.counts["skipped"] == 1


@pytest.mark.parametrize("body", [b"", b"{}", b'{"subscription": "s"}'])
def test_probes_are_acked_and_write_nothing(rig: Any, body: bytes) -> None:
    assert outcome(rig.post(body))[:2] == (200, "ignored")
    assert rig.written() == (0, 0, 0)


# -- permanently bad input: quarantined, acked -------------------------------------------------


BAD_ENVELOPES = [
    (b"not json at all", "envelope_not_json"),
    (b"\xff\xfe garbage", "envelope_not_utf8"),
    (b"[1, 2, 3]", "envelope_not_object"),
    (b'{"message": 7}', "message_not_object"),
    (b'{"message": {"data": "***"}}', "data_not_base64"),
    (json.dumps({"message": {"data": base64.b64encode(b"\xc3\x28").decode()}}).encode(),
     "data_not_utf8"),
    (json.dumps({"message": {"data": base64.b64encode(b"{").decode()}}).encode(),
     "data_not_json"),
    (push_body({"hello": "world"}), "unknown_format"),
    (push_body({"scraper_name": "bdl_games_scraper", "gcs_path": "x"}), "missing_execution_id"),
    (push_body({**v1_payload("a1", "x"), "execution_id": ["a1"]}), "wrong_type"),
    (push_body({**v1_payload("a1", "x"), "status": 3}), "wrong_type"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_ENVELOPES)
def test_malformed_input_is_quarantined_and_acked(rig: Any, body: bytes, reason: str) -> None:
    assert outcome(rig.post(body)) == (200, "quarantined", reason)
    (record,) = rig.quarantine.records
    assert record.reason == reason and record.detail
    assert record.envelope_bytes == len(body) and record.envelope
    assert rig.written() == (0, 0, 1) and rig.calls() == 0


def test_the_quarantine_record_keeps_ids_and_the_envelope(rig: Any) -> None:
    body = push_body({**v1_payload("a1", "x"), "gcs_path": {"not": "a path"}},
                     message_id="m5", delivery_attempt=4)
    assert outcome(rig.post(body))[1] == "quarantined"
    (record,) = rig.quarantine.list_quarantined(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert (record.execution_id, record.message_id, record.delivery_attempt) == ("a1", "m5", 4)
    assert record.envelope == body.decode()


def test_a_missing_file_is_quarantined_with_a_failed_log_row(rig: Any) -> None:
    body = push_body(v1_payload("a1", "mem://ball-dont-lie/games/gone.json"))
    assert outcome(rig.post(body)) == (200, "quarantined", "blob_not_found")
    (record,) = rig.quarantine.records
    assert (record.processor, record.gcs_path) == ("games", "mem://ball-dont-lie/games/gone.json")
    (row,) = rig.log_rows
    assert (row["status"], row["error_type"], row["record_count"]) == ("failed", "BlobNotFound", 0)
    assert (row["output_dataset"], row["output_table"]) == ("nba_raw", "games")
    assert rig.ledger.rows == [] and rig.calls() == 0


def test_a_path_the_store_cannot_read_is_quarantined(make_rig: Any, tmp_path: Any) -> None:
    rig = make_rig(blobs=LocalBlobs(tmp_path))
    body = push_body(v1_payload("a1", "gs://elsewhere/ball-dont-lie/games/x.json"))
    assert outcome(rig.post(body)) == (200, "quarantined", "unreadable_path")
    assert rig.written() == (1, 0, 1)


def test_an_invalid_file_is_quarantined_logged_as_failed_and_not_deduplicated(rig: Any) -> None:
    rig.games.error = InvalidFile("data[3].home_team.id: expected an integer, got 'x'")
    assert outcome(rig.post(v1(rig))) == (200, "quarantined", "invalid_file")
    (row,) = rig.log_rows
    assert (row["status"], row["error_type"]) == ("failed", "InvalidFile")
    assert "data[3].home_team.id" in row["error_message"]
    assert rig.quarantine.records[0].detail.startswith("data[3]")
    assert rig.ledger.rows == []
    rig.games.error = None  # fixed and redeployed: the same event now loads
    assert outcome(rig.post(v1(rig)))[1] == "processed"


def test_an_error_message_is_cut_and_made_writable(rig: Any) -> None:
    rig.games.error = InvalidFile("bad \ud800 " + "x" * 5000)
    assert outcome(rig.post(v1(rig)))[1] == "quarantined"
    assert len(rig.log_rows[0]["error_message"]) == 1000
    assert "\\ud800" in rig.quarantine.records[0].detail


# -- transient failures: 503, Pub/Sub retries -----------------------------------------------


@pytest.mark.parametrize("where", ["blobs", "ledger lookup", "processor", "log append",
                                   "quarantine"])
def test_transient_failures_are_503_and_a_retry_completes_once(rig: Any, where: str) -> None:
    body = v1(rig) if where != "quarantine" else b"garbage"
    real_read = rig.blobs.read
    if where == "blobs":
        rig.blobs.read = lambda uri: (_ for _ in ()).throw(TransientError("gcs 503"))
    elif where == "ledger lookup":
        rig.ledger.faults.fail_reads = 1
    elif where == "processor":
        rig.games.error = TransientError("bigquery load: backendError")
    elif where == "log append":
        rig.log.faults.fail_appends = 1
    else:
        rig.quarantine.faults.fail_writes = 1
    resp = rig.post(body)
    assert resp.status_code == 503 and resp.get_json()["outcome"] == "retry"
    assert rig.written() == (0, 0, 0)
    rig.blobs.read, rig.games.error = real_read, None
    assert rig.post(body).status_code == 200
    assert rig.written() == ((0, 0, 1) if where == "quarantine" else (1, 1, 0))


def test_health_flags_a_failing_dependency_until_it_recovers(rig: Any) -> None:
    rig.ledger.faults.fail_reads = 1
    assert rig.post(v1(rig)).status_code == 503
    health = rig.client.get("/health").get_json()
    assert health["status"] == "degraded" and "injected" in health["dependencies"]["ledger"][
        "failing"]
    assert rig.post(v1(rig)).status_code == 200
    health = rig.client.get("/health").get_json()
    assert health["status"] == "ok" and health["dependencies"]["ledger"]["failing"] is None
    assert health["processors"] == {"boxes": "nba_raw.boxes", "games": "nba_raw.games"}
    assert [r["processor"] for r in health["registry"]] == ["boxes", "games"]
    assert health["auth"] == "off" and health["counts"] == {"retry": 1, "processed": 1}
    assert health["dependencies"]["log_writer"]["backend"] == (
        "InMemoryOutboxStore:nba_orchestration.processor_execution_log")


def test_a_failed_ledger_append_after_the_log_row_is_still_acked(
        rig: Any, caplog: pytest.LogCaptureFixture) -> None:
    rig.ledger.faults.fail_writes = 1
    with caplog.at_level(logging.ERROR, "processors.service"):
        assert outcome(rig.post(v1(rig))) == (200, "processed", None)
    assert rig.written() == (1, 0, 0) and "ledger append failed" in caplog.text


# -- not the input's fault: 500 ----------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("bug"), ConfigError("table missing")])
def test_a_processor_bug_or_misconfiguration_is_500(rig: Any, error: Exception) -> None:
    rig.games.error = error
    resp = rig.post(v1(rig))
    assert resp.status_code == 500 and resp.get_json()["outcome"] == "error"
    assert rig.written() == (0, 0, 0)


def test_configuration_mistakes_fail_at_startup(make_rig: Any) -> None:
    with pytest.raises(ConfigError, match=r"\['boxes'\], which are not configured"):
        make_rig(processors={"games": FakeProcessor("games")})
    with pytest.raises(ConfigError, match="calls itself"):
        make_rig(processors={"games": FakeProcessor("games"), "boxes": FakeProcessor("x")})


def test_other_methods_and_huge_bodies_get_json_errors(rig: Any) -> None:
    assert rig.client.get("/process").status_code == 405
    resp = rig.post(b"x" * (17 * 1024 * 1024))
    assert resp.status_code == 413 and "error" in resp.get_json()


# -- logs --------------------------------------------------------------------------------------


def test_each_delivery_logs_one_json_line_with_severity_and_ids(rig: Any) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("processors.service")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        rig.post(v1(rig))
        rig.post(b"nope")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    processed, quarantined = (json.loads(line) for line in stream.getvalue().splitlines())
    assert {k: processed[k] for k in ("severity", "outcome", "execution_id", "processor")} == {
        "severity": "INFO", "outcome": "processed", "execution_id": "a1b2c3d4",
        "processor": "games"}
    assert (quarantined["severity"], quarantined["reason"]) == ("WARNING", "envelope_not_json")
