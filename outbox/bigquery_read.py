"""Reading the outbox through the BigQuery Storage Read API.

Why: a query job returns its rows as JSON over REST, which the Python client
parses cell by cell; the Read API streams Arrow. On the emulators here it
reads 20,000 rows about ten times faster than the query path, and on real
BigQuery it bills only the selected columns of the pruned partitions, with no
10 MB minimum per query. Each read opens one session; no query job is run.

A :class:`Snapshot` is what one run of the relay works through: the pending
rows of the window, sorted, paged by cursor. Rows that arrive after it was
taken wait for the next run. It reads the keys of the pending rows at once
and the rows themselves a chunk at a time, so that a relay's memory does not
grow with the backlog (see :class:`Snapshot`).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Sequence
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


def range_restriction(log: TableSpec, lo: dt.datetime, hi: dt.datetime) -> str:
    """Unpublished rows with ``lo <= triggered_at <= hi``: one chunk of a snapshot.

    ``lo`` is the chunk's first key, never before the window's ``since``, so
    this is :func:`log_restriction` from ``lo`` (its lower bound still prunes
    partitions) with an upper bound added.
    """
    return f"{log_restriction(log, lo)} AND {log.partition_column} <= {timestamp_literal(hi)}"


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
class JournalState:
    """What the journal says about the window's rows.

    The id sets are Arrow arrays, not Python sets: a sweep reads 90 days of
    journal, and a Python set costs about 100 bytes an id where Arrow needs
    about 20 (and ``pc.is_in`` filters a chunk of keys in C++).
    """

    journaled: pa.Array
    """Ids journaled as published."""
    set_aside: pa.Array
    attempts: dict[str, int]
    """Failed publishes per id (journal rows that are neither published nor set aside)."""


def journal_state(table: pa.Table) -> JournalState:
    empty = pa.array([], pa.string())
    if not table.num_rows:
        return JournalState(empty, empty, {})
    ids, outcome = table.column("execution_ids"), table.column("outcome")

    def ids_where(mask: Any) -> pa.Array:
        flat = pc.list_flatten(ids.filter(mask))
        return flat.combine_chunks() if flat.num_chunks else empty

    published = pc.fill_null(pc.equal(outcome, "published"), False)
    set_aside = pc.fill_null(pc.equal(outcome, "set_aside"), False)
    attempts: dict[str, int] = {}
    for eid in ids_where(pc.invert(pc.or_(published, set_aside))).to_pylist():
        if eid is not None:
            attempts[eid] = attempts.get(eid, 0) + 1
    return JournalState(ids_where(published), ids_where(set_aside), attempts)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(value: dt.datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _datetime(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


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


Key = tuple[int, str]
"""(triggered_at in microseconds since the epoch, execution_id): the sort order."""


class _Keys:
    """Sorted keys kept as two Arrow arrays (about 27 bytes a row), searched
    by bisection; a Python tuple per row cost about 170 bytes."""

    def __init__(self, table: pa.Table, part: str) -> None:
        """Sort ``table`` (which has ``part`` and ``execution_id``) by key;
        :attr:`order` is the permutation, to sort other columns alike."""
        if table.num_rows:
            self.order = pc.sort_indices(
                table, sort_keys=[(part, "ascending"), ("execution_id", "ascending")])
            at = pc.cast(table.column(part), pa.int64())
            self.at = at.take(self.order).combine_chunks()
            self.ids = table.column("execution_id").take(self.order).combine_chunks()
            identity = pa.array(range(table.num_rows), self.order.type)
            self.in_order = bool(pc.all(pc.equal(self.order, identity)).as_py())
            """The table was sorted already (as a chunk usually is): no copy needed."""
        else:
            self.order = pa.array([], pa.int64())
            self.at, self.ids = pa.array([], pa.int64()), pa.array([], pa.string())
            self.in_order = True

    def __len__(self) -> int:
        return len(self.at)

    def key(self, i: int) -> Key:
        return (self.at[i].as_py(), self.ids[i].as_py())

    def after(self, key: Key) -> int:
        """Index of the first key greater than ``key``."""
        return bisect.bisect_right(range(len(self.at)), key, key=self.key)

    def at_or_after(self, key: Key) -> int:
        """Index of the first key not less than ``key``."""
        return bisect.bisect_left(range(len(self.at)), key, key=self.key)


@dataclass
class _Chunk:
    """Rows of key positions ``[start, stop)`` of a snapshot, sorted, with their keys."""

    start: int
    stop: int
    rows: pa.Table
    keys: _Keys


ChunkReader = Callable[[dt.datetime, dt.datetime], pa.Table]
"""Reads the unpublished log rows with ``lo <= triggered_at <= hi``."""


class Snapshot:
    """The pending rows of one window, sorted by (triggered_at, execution_id).

    Why in chunks: a snapshot that held every pending row made a relay's
    memory grow with the backlog, by about 1.8 KB a row at its peak (the rows
    as read, filtered and sorted copies of them, and a Python key per row):
    some 360 MB for a backlog of 200,000. This one holds the *keys* of the
    pending rows (read with two narrow columns; two Arrow arrays, about 27
    bytes a row) and the rows of one chunk of ``chunk_rows`` keys at a time,
    read when a page first needs them by ``read_chunk`` over the chunk's
    triggered_at range and kept to the chunk's ids. Order, cursor and backlog
    are the snapshot's, as before: rows that arrive later wait for the next
    snapshot, and a row published or flagged meanwhile (by another relay) is
    simply missing from its chunk.

    The cost: one more read session per run (the keys), and one per chunk
    after the first; on BigQuery each chunk's session scans the partitions
    its range touches.
    """

    def __init__(self, log: TableSpec, keys: pa.Table, journal: JournalState,
                 since: dt.datetime, read_chunk: ChunkReader, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        self.since = since
        self.spec = log
        self.part = log.partition_column
        self.unfolded = 0
        if keys.num_rows:
            ids = keys.column("execution_id")
            journaled = pc.is_in(ids, value_set=journal.journaled.cast(ids.type))
            aside = pc.is_in(ids, value_set=journal.set_aside.cast(ids.type))
            self.unfolded = int(pc.sum(journaled).as_py() or 0)
            keys = keys.filter(pc.invert(pc.or_(journaled, aside)))
        self.keys = _Keys(keys, self.part)
        self.attempts = journal.attempts
        self.chunk_rows = chunk_rows
        self._read_chunk = read_chunk
        self._chunk: _Chunk | None = None
        self._kinds = {c.name: c.type for c in log.columns}

    def _chunk_at(self, pos: int) -> _Chunk:
        chunk = self._chunk
        if chunk is not None and chunk.start <= pos < chunk.stop:
            return chunk
        self._chunk = None  # let the previous chunk go before reading the next
        start = pos - pos % self.chunk_rows
        stop = min(start + self.chunk_rows, len(self.keys))
        rows = self._read_chunk(_datetime(self.keys.at[start].as_py()),
                                _datetime(self.keys.at[stop - 1].as_py()))
        if rows.num_rows:
            # Rows at the range's boundary timestamps may belong to the next
            # chunk, and rows that arrived after the snapshot to none.
            # Each copy of a chunk costs as much memory as the chunk, so the
            # filter and the sort copy only when they change something.
            ids = rows.column("execution_id")
            wanted = self.keys.ids.slice(start, stop - start).cast(ids.type)
            mine = pc.is_in(ids, value_set=wanted)
            if not pc.all(mine).as_py():
                rows = rows.filter(mine)
        keys = _Keys(rows, self.part)
        if not keys.in_order:
            rows = rows.take(keys.order)
        chunk = self._chunk = _Chunk(start, stop, rows, keys)
        return chunk

    def page(self, limit: int, after: Cursor | None) -> PollResult:
        total = len(self.keys)
        pos = 0 if after is None else self.keys.after((_micros(after[0]), after[1]))
        wanted = max(limit, 0)
        parts: list[pa.Table] = []
        while wanted > 0 and pos < total:
            chunk = self._chunk_at(pos)
            part = chunk.rows.slice(chunk.keys.at_or_after(self.keys.key(pos)), wanted)
            if part.num_rows:
                parts.append(part)
                wanted -= part.num_rows
            if wanted > 0:
                pos = chunk.stop  # this chunk has no more rows: on to the next
        if pos >= total:
            self._chunk = None  # drained: hold no rows until the next snapshot
        rows = []
        for chunk_rows in parts:
            columns = {name: _column_values(chunk_rows, name, self._kinds.get(name, "STRING"))
                       for name in chunk_rows.column_names}
            for i in range(chunk_rows.num_rows):
                row = {name: values[i] for name, values in columns.items()
                       if values[i] is not None}
                eid = row["execution_id"]
                rows.append(PendingRow(eid, row[self.part], row, self.attempts.get(eid, 0)))
        oldest = _datetime(self.keys.at[0].as_py()) if total else None
        return PollResult(rows, total, oldest, self.unfolded)
