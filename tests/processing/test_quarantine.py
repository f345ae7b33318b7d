"""The quarantine: records that always fit their columns, listed newest first, on both stores."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from processors.quarantine import (
    MAX_ENVELOPE_CHARS,
    PROCESSOR_QUARANTINE,
    BigQueryQuarantine,
    Quarantine,
    QuarantineRecord,
    list_statement,
)
from processors.testing import InMemoryQuarantine, check_writable

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["memory", pytest.param("bigquery", marks=pytest.mark.emulator)])
def quarantine(request: pytest.FixtureRequest) -> Quarantine:
    if request.param == "memory":
        return InMemoryQuarantine()
    wiring = request.getfixturevalue("bq_wiring")
    (spec,) = request.getfixturevalue("fresh_tables")(PROCESSOR_QUARANTINE)
    return BigQueryQuarantine(wiring.bigquery, wiring.appender, spec=spec)


def record(minutes: int, reason: str = "envelope_not_json", **ids: Any) -> QuarantineRecord:
    return QuarantineRecord.of(reason, f"detail {minutes}", b'{"message": "x"}',
                               T0 + dt.timedelta(minutes=minutes), **ids)


def test_records_are_listed_newest_first_from_since(quarantine: Quarantine) -> None:
    full = record(1, "invalid_file", execution_id="a1", processor="bdl_games",
                  gcs_path="gs://b/p.json", message_id="m1", delivery_attempt=2)
    for r in (record(0), full, record(2)):
        quarantine.put(r)
    listed = quarantine.list_quarantined(T0 + dt.timedelta(minutes=1))
    assert [r.detail for r in listed] == ["detail 2", "detail 1"]
    assert listed[1] == full
    assert len(quarantine.list_quarantined(T0, limit=2)) == 2
    assert quarantine.list_quarantined(T0 + dt.timedelta(hours=1)) == []


def test_a_record_always_fits_and_is_valid_utf8() -> None:
    raw = b"\xff\xfe" + "\ud800".encode("utf-8", "surrogatepass") + b"x" * 100_000
    r = QuarantineRecord.of("data_not_utf8", "bad \ud800 " + "d" * 5000, raw, T0,
                            execution_id="e\ud800", message_id="m" * 500)
    check_writable(r.row(PROCESSOR_QUARANTINE))
    assert r.envelope.startswith("\\xff\\xfe") and len(r.envelope) == MAX_ENVELOPE_CHARS
    assert r.envelope_bytes == len(raw)
    assert len(r.detail) == 1000 and "\\ud800" in r.detail
    assert r.execution_id == "e\\ud800" and r.message_id == "m" * 128


def test_the_listing_filters_the_partition_column() -> None:
    stmt = list_statement("test-project", PROCESSOR_QUARANTINE, T0, 10)
    where = sqlglot.parse_one(stmt.sql, read="bigquery").find(exp.Where)
    assert where is not None and "quarantined_at >= @since" in where.sql(dialect="bigquery")
    assert PROCESSOR_QUARANTINE.partition_field == "quarantined_at"
