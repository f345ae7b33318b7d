"""The service on bqemulator: the BigQuery ledger, quarantine and processor log, end to end."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from outbox.bigquery_store import BigQueryOutboxStore
from outbox.blobs import InMemoryBlobs
from outbox.schema import OUTBOX_JOURNAL, PROCESSOR_EXECUTION_LOG
from processors.base import InvalidFile
from processors.dedupe import PROCESSED_EVENTS, BigQueryLedger
from processors.quarantine import PROCESSOR_QUARANTINE, BigQueryQuarantine
from processors.registry import Registry, Rule
from processors.service import create_app
from processors.testing import FakeProcessor, push_body, v1_payload

pytestmark = pytest.mark.emulator
SINCE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def test_dedupe_quarantine_and_log_rows_on_bigquery(bq_wiring: Any, fresh_tables: Any) -> None:
    wiring = bq_wiring
    ledger_spec, quarantine_spec, log_spec, journal_spec = fresh_tables(
        PROCESSED_EVENTS, PROCESSOR_QUARANTINE, PROCESSOR_EXECUTION_LOG, OUTBOX_JOURNAL)
    blobs = InMemoryBlobs()
    uri = blobs.write("ball-dont-lie/games/2026-11-28/20261128_100000.json", b'{"data": []}')
    log = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log_spec, "processors",
                              journal_spec)
    quarantine = BigQueryQuarantine(wiring.bigquery, wiring.appender, spec=quarantine_spec)
    games = FakeProcessor("games")

    def instance() -> tuple[Any, BigQueryLedger]:
        ledger = BigQueryLedger(wiring.bigquery, wiring.appender, spec=ledger_spec)
        app = create_app({"games": games}, Registry([Rule("ball-dont-lie/games", "games")]),
                         ledger, blobs, log, quarantine)
        return app.test_client(), ledger

    first, first_ledger = instance()
    event = v1_payload("a1b2c3d4", uri, timestamp="2026-11-28T10:00:00+00:00")
    assert first.post("/process", data=push_body(event, message_id="m1")).get_json()[
        "outcome"] == "processed"
    assert first_ledger.queries == 1

    second, second_ledger = instance()  # another instance: a cold cache, the same table
    resp = second.post("/process", data=push_body(event, message_id="m2-republished"))
    assert resp.get_json()["outcome"] == "duplicate" and second_ledger.queries == 1
    assert len(games.calls) == 1

    assert second.post("/process", data=b"{not json").get_json()["outcome"] == "quarantined"
    games.error = InvalidFile("data[0]: no id")
    bad = v1_payload("e5f6a7b8", uri, timestamp="2026-11-28T11:00:00+00:00")
    assert second.post("/process", data=push_body(bad)).get_json()["reason"] == "invalid_file"

    listed = quarantine.list_quarantined(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert [(r.reason, r.execution_id) for r in listed] == [
        ("invalid_file", "e5f6a7b8"), ("envelope_not_json", None)]
    rows = sorted((p.row for p in log.poll(SINCE - dt.timedelta(days=400), 10).rows),
                  key=lambda r: r["source_execution_id"])
    assert [(r["source_execution_id"], r["status"], r.get("error_type")) for r in rows] == [
        ("a1b2c3d4", "success", None), ("e5f6a7b8", "failed", "InvalidFile")]
