"""The record of what was processed, so each event is processed effectively once.

Why it exists: Pub/Sub push has no exactly-once delivery, every re-publish gets
a new ``messageId``, and the relay may publish a row twice after a crash. So
the key is the event's own ``execution_id`` plus the processor, never the
message id. The record lives in BigQuery so that every instance shares it.

Cost, per delivery: at most one query, and usually none.

* A small in-process cache answers repeats of recently processed events
  without BigQuery. Only "processed" is cached: "not processed" can turn true
  at any moment on another instance, so it is always asked again.
* The table is partitioned by the event's own date (``event_date``, from the
  event's body timestamp, which a re-publish keeps). The lookup filters that
  column to :data:`LOOKUP_WINDOW` around it, so it scans at most five daily
  partitions of three narrow columns, clustered by processor and id: the
  10 MB minimum bill, never a table scan.
* Recording is an append through the Storage Write API: not a query job,
  never a DML conflict.

Two instances racing on the same event can both see "not processed" and both
process it; processors are idempotent (MERGE or partition replace), so that
costs work, not correctness.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox.bigquery_errors import translate
from outbox.bigquery_sql import Param, Statement, table_ref
from outbox.bigquery_store import query_params, transient_retry
from outbox.bigquery_write import RowAppender
from outbox.errors import TransientError
from outbox.rows import Row, validate_row
from outbox.schema import Column, TableSpec

LOOKUP_WINDOW = dt.timedelta(days=2)
"""How far from the event's date a record still counts: absorbs an event time
taken from the publish time or the clock when the body has no timestamp."""
QUERY_TIMEOUT_SECONDS = 30.0
MAX_BYTES_BILLED = 1024**3

PROCESSED_EVENTS = TableSpec(
    dataset="nba_orchestration",
    name="processed_events",
    partition_field="event_date",
    clustering=("processor", "execution_id"),
    description="Append-only: one row per event a processor loaded (the dedupe ledger).",
    columns=(
        Column("execution_id", "STRING", required=True, max_length=128,
               description="the event's id (scraper run id, or derived for object finalize)"),
        Column("processor", "STRING", required=True, max_length=128),
        Column("event_date", "DATE", required=True,
               description="the event's own date; the partition a lookup prunes to"),
        Column("processed_at", "TIMESTAMP", required=True),
        Column("run_id", "STRING", max_length=128,
               description="execution_id of the processor_execution_log row"),
        Column("status", "STRING", max_length=32),
        Column("trigger_source", "STRING", max_length=32),
        Column("message_id", "STRING", max_length=128, description="for audit only"),
        Column("gcs_path", "STRING", max_length=1024),
    ),
)


@dataclass(frozen=True)
class LedgerEntry:
    execution_id: str
    processor: str
    event_date: dt.date
    processed_at: dt.datetime
    run_id: str | None = None
    status: str | None = None
    trigger_source: str | None = None
    message_id: str | None = None
    gcs_path: str | None = None

    def row(self, spec: TableSpec) -> Row:
        # A shallow dict, not dataclasses.asdict: asdict deep-copies every field on
        # every delivery, which measurably slowed /process (docs/benchmarks.md).
        fields = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return validate_row(spec, {k: v for k, v in fields.items() if v is not None})


class ProcessedLedger(Protocol):
    """What was processed. Shared by every instance; append-only."""

    def seen(self, execution_id: str, processor: str, event_date: dt.date) -> bool:
        """True if ``processor`` recorded ``execution_id`` with an event date
        within :data:`LOOKUP_WINDOW` of ``event_date``. At most one query.
        Raises :class:`~outbox.errors.TransientError` when the store is down."""
        ...

    def record(self, entry: LedgerEntry) -> None:
        """Append ``entry``; :meth:`seen` answers True for it at once. Recording
        twice is harmless. Raises InvalidRow for a bad entry, TransientError
        when nothing was written."""
        ...


Key = tuple[str, str]


class RecentlyProcessed:
    """A thread-safe LRU of positive answers with a time to live."""

    def __init__(self, size: int = 10_000, ttl: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.size, self.ttl, self.monotonic = size, ttl, monotonic
        self._items: OrderedDict[Key, tuple[float, dt.date]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Key, event_date: dt.date) -> bool:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] < self.monotonic():
                self._items.pop(key, None)
                return False
            self._items.move_to_end(key)
            return abs(hit[1] - event_date) <= LOOKUP_WINDOW

    def put(self, key: Key, event_date: dt.date) -> None:
        with self._lock:
            self._items[key] = (self.monotonic() + self.ttl, event_date)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def seen_statement(project: str, spec: TableSpec, execution_id: str, processor: str,
                   event_date: dt.date) -> Statement:
    """One parameterised lookup, pruned to the partitions around ``event_date``."""
    sql = f"""SELECT event_date
FROM {table_ref(project, spec)}
WHERE {spec.partition_column} BETWEEN @lo AND @hi
  AND processor = @processor AND execution_id = @execution_id
LIMIT 1"""
    days = LOOKUP_WINDOW.days
    return Statement(sql, (
        Param("lo", "DATE", event_date - dt.timedelta(days=days)),
        Param("hi", "DATE", event_date + dt.timedelta(days=days)),
        Param("processor", "STRING", processor),
        Param("execution_id", "STRING", execution_id),
    ))


@transient_retry
def run_query(client: bigquery.Client, stmt: Statement, doing: str,
              max_bytes_billed: int = MAX_BYTES_BILLED) -> list[dict[str, Any]]:
    """Run one statement and return its rows, with the project's error translation.

    Bounded: the client's own retries stop after :data:`QUERY_TIMEOUT_SECONDS`,
    so a request never hangs for the library's default ten minutes.
    """
    config = bigquery.QueryJobConfig(query_parameters=query_params(stmt),
                                     labels={"component": "processors"},
                                     maximum_bytes_billed=max_bytes_billed)
    try:
        job = client.query(stmt.sql, job_config=config, timeout=QUERY_TIMEOUT_SECONDS,
                           retry=bigquery.DEFAULT_RETRY.with_deadline(QUERY_TIMEOUT_SECONDS))
        return [dict(r.items()) for r in job.result(timeout=QUERY_TIMEOUT_SECONDS)]
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, doing) from exc
    except OSError as exc:  # requests' connection errors, socket timeouts
        raise TransientError(f"{doing}: {exc}") from exc


@transient_retry
def append_rows(appender: RowAppender, spec: TableSpec, rows: Sequence[Row]) -> None:
    appender.append(spec, rows)


class BigQueryLedger:
    """:class:`ProcessedLedger` on ``nba_orchestration.processed_events``."""

    def __init__(self, client: bigquery.Client, appender: RowAppender,
                 project: str | None = None, spec: TableSpec = PROCESSED_EVENTS,
                 cache: RecentlyProcessed | None = None) -> None:
        self.client, self.appender, self.spec = client, appender, spec
        self.project = project or client.project
        self.cache = cache or RecentlyProcessed()
        self.queries = 0

    def seen(self, execution_id: str, processor: str, event_date: dt.date) -> bool:
        key = (execution_id, processor)
        if self.cache.get(key, event_date):
            return True
        stmt = seen_statement(self.project, self.spec, execution_id, processor, event_date)
        self.queries += 1
        rows = run_query(self.client, stmt, f"look up {processor} {execution_id}")
        if rows:
            self.cache.put(key, rows[0]["event_date"])
        return bool(rows)

    def record(self, entry: LedgerEntry) -> None:
        append_rows(self.appender, self.spec, [entry.row(self.spec)])
        self.cache.put((entry.execution_id, entry.processor), entry.event_date)

    def describe(self) -> str:
        return f"bigquery:{self.project}.{self.spec.dataset}.{self.spec.name}"
