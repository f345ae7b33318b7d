"""The reader and store a poll-cost run is measured through
(:mod:`benchmarks.poll_cost`): the production classes, recording what each
read session returned, which window each poll read, and how long polls and
folds took."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.cloud.bigquery_storage_v1 import BigQueryReadClient

from outbox.bigquery_read import StorageReader
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.ports import Cursor, PollResult
from outbox.schema import TableSpec


@dataclass(frozen=True)
class ReadRecord:
    table: str
    restriction: str
    rows: int
    ids: int
    """Execution ids in the rows: one per log row, an array per journal row."""


class CountingReader(StorageReader):
    """A :class:`StorageReader` that remembers what each session returned:
    the rows a run reads are a cost the session count alone does not show."""

    def __init__(self, client: BigQueryReadClient, project: str) -> None:
        super().__init__(client, project)
        self.reads: list[ReadRecord] = []

    def read(self, spec: TableSpec, columns: Sequence[str], restriction: str) -> pa.Table:
        table = super().read(spec, columns, restriction)
        ids = table.num_rows
        if "execution_ids" in table.column_names and table.num_rows:
            ids = int(pc.sum(pc.list_value_length(table.column("execution_ids"))).as_py() or 0)
        self.reads.append(ReadRecord(spec.name, restriction, table.num_rows, ids))
        return table


class RecordingStore(BigQueryOutboxStore):
    """Records the ``since`` of every poll, so the benchmark can prove which
    window (sweep or normal) a run really read, and times polls and folds,
    so that a run's wall time splits into the snapshot (the first poll of a
    run), the other polls, the fold and the pipeline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.polled_since: list[dt.datetime] = []
        self.first_poll_seconds = 0.0
        self.poll_seconds = 0.0
        self.fold_seconds = 0.0

    def poll(self, since: dt.datetime, limit: int, after: Cursor | None = None) -> PollResult:
        self.polled_since.append(since)
        t0 = time.perf_counter()
        try:
            return super().poll(since, limit, after)
        finally:
            seconds = time.perf_counter() - t0
            self.poll_seconds += seconds
            if after is None:
                self.first_poll_seconds += seconds

    def fold(self, since: dt.datetime) -> int:
        t0 = time.perf_counter()
        try:
            return super().fold(since)
        finally:
            self.fold_seconds += time.perf_counter() - t0


# -- measuring -------------------------------------------------------------------------
