"""Reading the outbox through the BigQuery Storage Read API.

Why: a query job returns its rows as JSON over REST, which the Python client
parses cell by cell; the Read API streams Arrow. On the emulators here it
reads 20,000 rows about ten times faster than the query path, and on real
BigQuery it bills only the selected columns of the pruned partitions, with no
10 MB minimum per query. Each read opens one session; no query job is run.

A :class:`Snapshot` is what one run of the relay works through: the pending
rows of the window, sorted, paged by cursor. Rows that arrive after it was
taken wait for the next run.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import BigQueryReadClient, types

from outbox.bigquery_errors import translate
from outbox.ports import Cursor, PendingRow, PollResult
from outbox.schema import PUBLISHED, TableSpec, check_identifier, check_project


def timestamp_literal(value: dt.datetime) -> str:
    """A TIMESTAMP literal from a datetime the program made, never from input."""
    if value.tzinfo is None:
        raise ValueError("timestamp literal needs an aware datetime")
    return f"TIMESTAMP '{value.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"


def log_restriction(log: TableSpec, since: dt.datetime) -> str:
    """Unpublished rows of the window; the partition column prunes partitions."""
    return f"{log.partition_column} >= {timestamp_literal(since)} AND {PUBLISHED} IS NOT TRUE"


def journal_restriction(journal: TableSpec, route: str, since: dt.datetime) -> str:
    # The Read API takes no parameters; the route is a validated identifier,
    # so it cannot close the quote.
    route = check_identifier(route, "route")
    return f"{journal.partition_column} >= {timestamp_literal(since)} AND route = '{route}'"


class StorageReader:
    def __init__(self, client: BigQueryReadClient, project: str, max_streams: int = 16) -> None:
        self.client = client
        self.project = check_project(project)
        # Several streams keep each response message small (bqemulator sends up
        # to 65,536 rows per message); they are read one after another.
        self.max_streams = max_streams
        self.sessions = 0

    def read(self, spec: TableSpec, columns: Sequence[str], restriction: str) -> pa.Table:
        table = f"projects/{self.project}/datasets/{spec.dataset}/tables/{spec.name}"
        session_spec = types.ReadSession(
            table=table,
            data_format=types.DataFormat.ARROW,
            read_options=types.ReadSession.TableReadOptions(
                selected_fields=list(columns), row_restriction=restriction
            ),
        )
        try:
            session = self.client.create_read_session(
                parent=f"projects/{self.project}",
                read_session=session_spec,
                max_stream_count=self.max_streams,
            )
            self.sessions += 1
            schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
            batches: list[pa.RecordBatch] = []
            for stream in session.streams:
                for response in self.client.read_rows(stream.name):
                    payload = response.arrow_record_batch.serialized_record_batch
                    if payload:
                        batches.append(pa.ipc.read_record_batch(pa.py_buffer(payload), schema))
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"read {spec.dataset}.{spec.name}") from exc
        if not batches:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        return pa.Table.from_batches(batches)


@dataclass
class _JournalState:
    journaled: set[str]
    set_aside: set[str]
    attempts: dict[str, int]


def journal_state(table: pa.Table) -> _JournalState:
    state = _JournalState(set(), set(), {})
    id_lists = table.column("execution_ids").to_pylist()
    outcomes = table.column("outcome").to_pylist()
    for ids, outcome in zip(id_lists, outcomes, strict=True):
        if outcome == "published":
            state.journaled.update(ids or ())
        elif outcome == "set_aside":
            state.set_aside.update(ids or ())
        else:
            for eid in ids or ():
                state.attempts[eid] = state.attempts.get(eid, 0) + 1
    return state


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _column_values(table: pa.Table, name: str, kind: str) -> list[Any]:
    """One column as Python values, converted column-wise (much faster than per cell)."""
    col = table.column(name)
    if kind == "TIMESTAMP":
        return [None if v is None else _EPOCH + dt.timedelta(microseconds=v)
                for v in pc.cast(col, pa.int64()).to_pylist()]
    if kind == "JSON":
        return [v if v is None or not isinstance(v, str | bytes) else orjson.loads(v)
                for v in col.to_pylist()]
    return list(col.to_pylist())


class Snapshot:
    """The pending rows of one window, sorted by (triggered_at, execution_id)."""

    def __init__(self, log: TableSpec, rows: pa.Table, journal: _JournalState,
                 since: dt.datetime) -> None:
        self.since = since
        self.spec = log
        part = log.partition_column
        ids = rows.column("execution_id").to_pylist() if rows.num_rows else []
        keep = [i for i, eid in enumerate(ids)
                if eid not in journal.journaled and eid not in journal.set_aside]
        self.unfolded = sum(1 for eid in ids if eid in journal.journaled)
        pending = rows.take(pa.array(keep, pa.int64())) if rows.num_rows else rows
        if pending.num_rows:
            pending = pending.sort_by([(part, "ascending"), ("execution_id", "ascending")])
        self.table = pending
        self.attempts = journal.attempts
        self._kinds = {c.name: c.type for c in log.columns}
        if pending.num_rows:
            at = pc.cast(pending.column(part), pa.int64()).to_pylist()
            eids = pending.column("execution_id").to_pylist()
        else:
            at, eids = [], []
        self.keys: list[tuple[int, str]] = list(zip(at, eids, strict=True))

    def page(self, limit: int, after: Cursor | None) -> PollResult:
        start = 0 if after is None else bisect.bisect_right(self.keys, (_micros(after[0]),
                                                                         after[1]))
        chunk = self.table.slice(start, max(limit, 0))
        columns = {name: _column_values(chunk, name, self._kinds.get(name, "STRING"))
                   for name in chunk.column_names}
        part = self.spec.partition_column
        rows = []
        for i in range(chunk.num_rows):
            row = {name: values[i] for name, values in columns.items() if values[i] is not None}
            eid = row["execution_id"]
            rows.append(PendingRow(eid, row[part], row, self.attempts.get(eid, 0)))
        oldest = _EPOCH + dt.timedelta(microseconds=self.keys[0][0]) if self.keys else None
        return PollResult(rows, len(self.keys), oldest, self.unfolded)
