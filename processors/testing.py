"""In-memory doubles of the processors service's ports, with fault injection.

They ship with the package so that other modules' tests (the real processors,
the end-to-end test, the benchmark) can build the service without BigQuery.
The ledger double passes the same contract suite as :class:`BigQueryLedger`
(``tests/processors/test_ledger_contract.py``); a double that diverges from
the real adapter is a bug. The log writer double is
``outbox.testing.InMemoryOutboxStore(PROCESSOR_EXECUTION_LOG, "processors")``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outbox.errors import PermanentError, TransientError
from outbox.rows import Row
from outbox.schema import Column, TableSpec
from processors.base import Event, ProcessResult
from processors.dedupe import LOOKUP_WINDOW, PROCESSED_EVENTS, LedgerEntry
from processors.quarantine import PROCESSOR_QUARANTINE, QuarantineRecord


def check_writable(row: Row) -> Row:
    """Refuse what the Storage Write API would refuse: text that is not UTF-8."""
    try:
        json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PermanentError(f"row is not valid UTF-8: {exc.reason}") from None
    return row


@dataclass
class Faults:
    """Counters consumed as they fire: the next N calls fail transiently."""

    fail_reads: int = 0
    fail_writes: int = 0

    def read(self, what: str) -> None:
        if self.fail_reads > 0:
            self.fail_reads -= 1
            raise TransientError(f"injected: {what} failed")

    def write(self, what: str) -> None:
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise TransientError(f"injected: {what} failed")


class InMemoryLedger:
    """A :class:`~processors.dedupe.ProcessedLedger` in a list; thread-safe."""

    def __init__(self, spec: TableSpec = PROCESSED_EVENTS, faults: Faults | None = None) -> None:
        self.spec = spec
        self.faults = faults or Faults()
        self.rows: list[Row] = []
        self._dates: dict[tuple[str, str], list[dt.date]] = {}
        self.queries = 0
        self._lock = threading.Lock()

    def seen(self, execution_id: str, processor: str, event_date: dt.date) -> bool:
        with self._lock:
            self.faults.read("ledger lookup")
            self.queries += 1
            return any(abs(d - event_date) <= LOOKUP_WINDOW
                       for d in self._dates.get((execution_id, processor), ()))

    def record(self, entry: LedgerEntry) -> None:
        row = check_writable(entry.row(self.spec))
        with self._lock:
            self.faults.write("ledger append")
            self.rows.append(row)
            key = (row["execution_id"], row["processor"])
            self._dates.setdefault(key, []).append(row["event_date"])

    def keys(self) -> list[tuple[str, str]]:
        """(execution_id, processor) of every record, in order, duplicates kept."""
        with self._lock:
            return [(r["execution_id"], r["processor"]) for r in self.rows]

    def describe(self) -> str:
        return "memory"


class InMemoryQuarantine:
    """A :class:`~processors.quarantine.Quarantine` in a list; thread-safe."""

    def __init__(self, spec: TableSpec = PROCESSOR_QUARANTINE,
                 faults: Faults | None = None) -> None:
        self.spec = spec
        self.faults = faults or Faults()
        self.records: list[QuarantineRecord] = []
        self._lock = threading.Lock()

    def put(self, record: QuarantineRecord) -> None:
        check_writable(record.row(self.spec))
        with self._lock:
            self.faults.write("quarantine append")
            self.records.append(record)

    def list_quarantined(self, since: dt.datetime, limit: int = 1000) -> list[QuarantineRecord]:
        with self._lock:
            found = [r for r in self.records if r.quarantined_at >= since]
        return sorted(found, key=lambda r: r.quarantined_at, reverse=True)[:limit]

    def reasons(self) -> list[str]:
        with self._lock:
            return [r.reason for r in self.records]

    def describe(self) -> str:
        return "memory"


FAKE_TABLE = TableSpec(
    dataset="nba_raw", name="fake", partition_field="game_date",
    columns=(Column("game_date", "DATE", required=True),),
)


@dataclass
class FakeProcessor:
    """A processor that loads nothing: returns ``result`` or raises ``error``.

    Records every call, so tests can count how often an event was processed.
    With neither set it is the no-op processor of the benchmark.
    """

    name: str = "fake"
    table: TableSpec = FAKE_TABLE
    result: ProcessResult | None = None
    error: Exception | None = None
    calls: list[tuple[Event, bytes]] = field(default_factory=list)

    def process(self, event: Event, data: bytes) -> ProcessResult:
        self.calls.append((event, data))
        if self.error is not None:
            raise self.error
        return self.result or ProcessResult(
            "success", self.table.dataset, self.table.name, dt.date(2026, 11, 28), 1)


# -- push bodies, as Pub/Sub sends them ---------------------------------------------------

SUBSCRIPTION = "projects/test-project/subscriptions/nba-processors-sub"


def push_body(payload: Mapping[str, Any] | bytes | None, attributes: Mapping[str, Any] | None
              = None, *, message_id: str = "1001", snake_case: bool = False,
              delivery_attempt: int | None = 1,
              publish_time: str = "2026-11-28T10:00:05.123Z") -> bytes:
    """A push envelope around ``payload`` (a dict is JSON-encoded; None: no data).

    ``snake_case`` spells the envelope's fields as some real traffic does.
    ``attributes`` are sent as given (Pub/Sub's are strings; fuzzers send others).
    """
    data = payload if isinstance(payload, bytes | None) else json.dumps(payload).encode()
    message: dict[str, Any] = {
        "messageId" if not snake_case else "message_id": message_id,
        "publishTime" if not snake_case else "publish_time": publish_time,
    }
    if data is not None:
        message["data"] = base64.b64encode(data).decode()
    if attributes is not None:
        message["attributes"] = dict(attributes)
    envelope: dict[str, Any] = {"message": message, "subscription": SUBSCRIPTION}
    if delivery_attempt is not None:
        envelope["deliveryAttempt" if not snake_case else "delivery_attempt"] = delivery_attempt
    return json.dumps(envelope).encode()


def v1_payload(execution_id: str, gcs_path: str | None, scraper_name: str = "bdl_games_scraper",
               status: str = "success", timestamp: str = "2026-11-28T10:00:00+00:00"
               ) -> dict[str, Any]:
    """The platform's v1 scraper-complete body (what the relay publishes)."""
    return {"name": scraper_name, "scraper_name": scraper_name, "execution_id": execution_id,
            "status": status, "gcs_path": gcs_path, "record_count": 12,
            "duration_seconds": 1.5, "timestamp": timestamp, "workflow": "MANUAL",
            "error_message": None}


def v2_payload(execution_id: str, gcs_path: str | None, processor_name: str = "bdl_games_scraper",
               phase: int = 1, correlation_id: str = "corr-1",
               timestamp: str = "2026-11-28T10:00:00+00:00") -> dict[str, Any]:
    return {"processor_name": processor_name, "phase": phase, "execution_id": execution_id,
            "correlation_id": correlation_id, "game_date": "2026-11-28", "status": "success",
            "record_count": 12, "records_failed": 0, "timestamp": timestamp,
            "duration_seconds": 1.5, "trigger_source": "scheduler",
            "metadata": {"gcs_path": gcs_path}}


def gcs_payload(bucket: str, name: str, generation: str | None = "1764324000123456",
                ) -> dict[str, Any]:
    """A Cloud Storage object resource, as an object-finalize notification carries it."""
    body: dict[str, Any] = {"kind": "storage#object", "bucket": bucket, "name": name,
                            "contentType": "application/json",
                            "timeCreated": "2026-11-28T10:00:01.000Z", "size": "1234"}
    if generation is not None:
        body["generation"] = generation
    return body
