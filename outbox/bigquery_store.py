"""The BigQuery implementation of :class:`~outbox.ports.OutboxStore`.

One instance serves one route: a log table and the shared journal. With a
:class:`~outbox.bigquery_read.StorageReader` a run's polls are served from a
snapshot (read sessions, no jobs); without one each poll is one query job.
Each mark or fold is one DML job; appends go through a
:class:`~outbox.bigquery_write.RowAppender` and are not jobs at all.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from outbox import bigquery_sql as sqlgen
from outbox.bigquery_errors import translate
from outbox.bigquery_read import (
    Snapshot,
    StorageReader,
    journal_restriction,
    journal_state,
    log_restriction,
    range_restriction,
)
from outbox.bigquery_write import RowAppender
from outbox.clock import Clock, utcnow
from outbox.errors import MarkRefused, TransientError
from outbox.ports import Cursor, JournalEntry, PendingRow, PollResult, SetAsideRow
from outbox.rows import Row, validate_row
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS, PUBLISHED, TableSpec, check_identifier

SNAPSHOT_ROWS = 10_000
"""Rows of a snapshot held in memory at once (see :class:`~outbox.bigquery_read.Snapshot`).

Why 10,000: the largest batch, so a chunk holds whole pages. Peak memory of a
relay draining 200,000 rows in batches of 5,000 on the emulators, by chunk
size: 5,000 rows 219 MB, 10,000 230 MB, 20,000 263 MB, 50,000 339 MB. A chunk
more is one more read session, and its read overlaps publishing.
"""


_NO_JOURNAL = pa.table({"execution_ids": pa.array([], pa.list_(pa.string())),
                        "outcome": pa.array([], pa.string())})


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, MarkRefused)


transient_retry = retry(
    retry=retry_if_exception(_retryable),
    stop=stop_after_attempt(4),
    wait=wait_exponential_jitter(initial=0.2, max=4.0),
    reraise=True,
)


@dataclass
class JobStats:
    """What the store cost: every query and DML statement is one job."""

    jobs: int = 0
    bytes_processed: int = 0
    bytes_billed: int = 0
    appends: int = 0
    """Storage Write appends: not jobs, and billed by the byte, not per call."""

    def snapshot(self) -> JobStats:
        return JobStats(self.jobs, self.bytes_processed, self.bytes_billed, self.appends)

    def since(self, before: JobStats) -> JobStats:
        return JobStats(
            self.jobs - before.jobs,
            self.bytes_processed - before.bytes_processed,
            self.bytes_billed - before.bytes_billed,
            self.appends - before.appends,
        )


def query_params(stmt: sqlgen.Statement) -> list[Any]:
    out: list[Any] = []
    for p in stmt.params:
        if p.array:
            out.append(bigquery.ArrayQueryParameter(p.name, p.type, p.value))
        else:
            out.append(bigquery.ScalarQueryParameter(p.name, p.type, p.value))
    return out


class BigQueryOutboxStore:
    def __init__(
        self,
        client: bigquery.Client,
        appender: RowAppender,
        spec: TableSpec,
        route: str,
        journal: TableSpec = OUTBOX_JOURNAL,
        runs: TableSpec | None = None,
        project: str | None = None,
        max_bytes_billed: int | None = 10 * 1024**3,
        clock: Clock = utcnow,
        columns: Sequence[str] | None = None,
        reader: StorageReader | None = None,
        snapshot_rows: int = SNAPSHOT_ROWS,
    ) -> None:
        self.client = client
        self.appender = appender
        self.spec = spec
        self.route = check_identifier(route, "route")
        self.journal = journal
        self.runs = runs or OUTBOX_RUNS.with_location(journal.dataset)
        self.project = project or client.project
        self.max_bytes_billed = max_bytes_billed
        self.clock = clock
        self.columns = columns
        self.reader = reader
        if snapshot_rows < 1:
            raise ValueError(f"snapshot_rows must be positive, got {snapshot_rows}")
        self.snapshot_rows = snapshot_rows
        self._snapshot: Snapshot | None = None
        self.stats = JobStats()
        self._lock = threading.Lock()
        self._read_or_append = threading.Lock()
        """Held around each read session and each append, so that they never
        overlap: bqemulator shares one DuckDB connection between its read and
        write paths and can hang when an append lands during a read session
        (docs/design.md). A relay run now reads chunks while it journals, so
        the store keeps them apart itself; on BigQuery it costs a little
        overlap, once per chunk."""

    # -- plumbing ---------------------------------------------------------
    @transient_retry
    def _run(self, stmt: sqlgen.Statement, doing: str, dml: bool = False) -> bigquery.QueryJob:
        config = bigquery.QueryJobConfig(
            query_parameters=query_params(stmt),
            labels={"component": "outbox", "route": self.route.lower()},
        )
        if self.max_bytes_billed is not None:
            config.maximum_bytes_billed = self.max_bytes_billed
        try:
            job = self.client.query(stmt.sql, job_config=config)
            job.result()
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, doing, dml=dml) from exc
        except (ConnectionError, TimeoutError) as exc:
            raise translate(exc, doing, dml=dml) from exc
        finally:
            with self._lock:
                self.stats.jobs += 1
        with self._lock:
            self.stats.bytes_processed += job.total_bytes_processed or 0
            self.stats.bytes_billed += job.total_bytes_billed or 0
        return job

    @transient_retry
    def _append(self, spec: TableSpec, rows: list[Row]) -> None:
        with self._lock:
            self.stats.appends += 1
        with self._read_or_append:
            self.appender.append(spec, rows)

    # -- writer -------------------------------------------------------------
    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        clean = [validate_row(self.spec, r) for r in rows]
        now = self.clock()
        for r in clean:
            r.setdefault("created_at", now)
            r[PUBLISHED] = False
        self._append(self.spec, clean)

    # -- relay side -------------------------------------------------------
    def poll(self, since: dt.datetime, limit: int, after: Cursor | None = None) -> PollResult:
        """With a reader, a poll without ``after`` takes a snapshot through the
        Storage Read API and later pages are served from it (no query job;
        a read session each time a page needs the next chunk of rows)."""
        if self.reader is not None:
            with self._lock:
                snap = self._snapshot
                if after is None or snap is None or snap.since != since:
                    self._snapshot = None  # let the previous snapshot go first
                    snap = self._snapshot = self._take_snapshot(self.reader, since, limit)
                return snap.page(limit, after)
        stmt = sqlgen.poll(
            self.project, self.spec, self.journal, self.route, since, limit, after, self.columns
        )
        job = self._run(stmt, f"poll {self.spec.dataset}.{self.spec.name}")
        rows: list[PendingRow] = []
        backlog, oldest, unfolded = 0, None, 0
        for record in job.result():
            backlog, oldest, unfolded = record["_backlog"], record["_oldest"], record["_unfolded"]
            if record["_row"] is None:
                continue
            row = sqlgen.decode_row(self.spec, record["_row"])
            attempts = int(record["_attempts"] or 0)
            rows.append(PendingRow(row["execution_id"], row[self.spec.partition_column], row,
                                   attempts))
        return PollResult(rows, int(backlog or 0), oldest, int(unfolded or 0))

    @transient_retry
    def _take_snapshot(self, reader: StorageReader, since: dt.datetime,
                       limit: int) -> Snapshot:
        """The keys of the window's unpublished rows and the journal about them; the
        rows themselves are read a chunk at a time as pages need them.

        The journal is read only from the oldest pending row on: a journal row's
        ``triggered_at`` is the newest of its ids, so no row about a pending id lies
        before it, and the read no longer grows with the published history of the
        window (a sweep read every id of 90 days). With nothing pending, it is not
        read at all: an idle poll is one read session.
        """
        with self._read_or_append:
            keys = reader.read(self.spec, ["execution_id", self.spec.partition_column],
                               log_restriction(self.spec, since))
            if keys.num_rows:
                oldest = pc.min(keys.column(self.spec.partition_column)).as_py()
                journal = reader.read(
                    self.journal, ["execution_ids", "outcome"],
                    journal_restriction(self.journal, self.route, max(since, oldest)),
                )
            else:
                journal = _NO_JOURNAL
        # Whole pages per chunk, so that a page never needs two chunks' rows.
        page = max(limit, 1)
        chunk_rows = max(page, self.snapshot_rows - self.snapshot_rows % page)
        return Snapshot(self.spec, keys, journal_state(journal), since,
                        lambda lo, hi: self._read_chunk(reader, lo, hi), chunk_rows)

    @transient_retry
    def _read_chunk(self, reader: StorageReader, lo: dt.datetime,
                    hi: dt.datetime) -> pa.Table:
        wanted = set(self.columns or self.spec.column_names)
        wanted |= {"execution_id", self.spec.partition_column}
        columns = [c for c in self.spec.column_names if c in wanted]
        with self._read_or_append:
            return reader.read(self.spec, columns, range_restriction(self.spec, lo, hi))

    def record(self, entries: Sequence[JournalEntry]) -> None:
        if not entries:
            return
        now = self.clock()
        # Published entries of a batch become one row; failures stay one row
        # each, since each carries its own error. Built from typed entries, so
        # per-row validation is skipped; error text is cut to the column limit.
        published = [e for e in entries if e.outcome == "published"]
        rows: list[Row] = []
        if published:
            rows.append({
                "route": self.route,
                "execution_ids": [e.execution_id for e in published],
                "message_ids": [e.message_id or "" for e in published],
                "triggered_at": max(e.triggered_at for e in published),
                "outcome": "published",
                "recorded_at": now,
                "relay_run_id": published[0].relay_run_id,
            })
        for e in entries:
            if e.outcome == "published":
                continue
            rows.append({
                "route": self.route,
                "execution_ids": [e.execution_id],
                "triggered_at": e.triggered_at,
                "outcome": e.outcome,
                "recorded_at": now,
                **({"error": e.error[:1000]} if e.error is not None else {}),
                "relay_run_id": e.relay_run_id,
            })
        self._append(self.journal, rows)

    def mark_published(self, rows: Sequence[PendingRow]) -> int:
        if not rows:
            return 0
        stmt = sqlgen.mark_published(
            self.project,
            self.spec,
            [r.execution_id for r in rows],
            min(r.triggered_at for r in rows),
            max(r.triggered_at for r in rows),
        )
        job = self._run(stmt, f"mark {len(rows)} rows published", dml=True)
        return int(job.num_dml_affected_rows or 0)

    def fold(self, since: dt.datetime) -> int:
        stmt = sqlgen.fold(self.project, self.spec, self.journal, self.route, since)
        job = self._run(stmt, "fold the journal into the published flag", dml=True)
        return int(job.num_dml_affected_rows or 0)

    def set_aside(self, since: dt.datetime) -> list[SetAsideRow]:
        stmt = sqlgen.set_aside(self.project, self.spec, self.journal, self.route, since)
        job = self._run(stmt, "list set-aside rows")
        return [
            SetAsideRow(r["execution_id"], r["triggered_at"], int(r["attempts"]),
                        r["last_error"], r["set_aside_at"])
            for r in job.result()
        ]

    def published_count(self, since: dt.datetime, recorded_after: dt.datetime) -> int:
        stmt = sqlgen.published_count(self.project, self.journal, self.route, since,
                                      recorded_after)
        job = self._run(stmt, "count published rows")
        return int(next(iter(job.result()))["n"] or 0)

    def record_run(self, run_id: str, stopped: str, summary: Mapping[str, Any]) -> None:
        row = validate_row(self.runs, {"route": self.route, "run_id": run_id,
                                       "finished_at": self.clock(), "stopped": stopped,
                                       "summary": dict(summary)})
        self._append(self.runs, [row])

    def last_run(self, since: dt.datetime) -> Mapping[str, Any] | None:
        job = self._run(sqlgen.last_run(self.project, self.runs, self.route, since),
                        "read the last relay run")
        for record in job.result():
            summary = json.loads(record["summary"]) if record["summary"] else {}
            return {"run_id": record["run_id"], "finished_at": record["finished_at"],
                    "stopped": record["stopped"], "summary": summary}
        return None
