"""An in-memory :class:`~processors.raw.sink.RawTableSink`, with fault injection.

It applies the MERGE's semantics row by row and passes the same contract
suite as :class:`~processors.raw.bigquery_sink.BigQueryRawSink`; a difference
between the two is a bug. Ships with the package so the processor service's
tests can use it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outbox.rows import Row
from outbox.testing import CONCURRENT_UPDATE_ERROR
from processors.raw.sink import (
    MAX_ROWS_PER_STATEMENT,
    LoadRefused,
    chunks,
    newest_scraped_at,
    prepare,
)
from processors.raw.tables import GAME_DATE, SCRAPED_AT, RawTable


@dataclass
class SinkFaults:
    refuse: int = 0
    """The next N statements are refused as a concurrent update, writing nothing."""


class InMemoryRawSink:
    """Tables as dicts from (game_date, *key) to row, thread-safe."""

    def __init__(self, faults: SinkFaults | None = None,
                 max_rows: int = MAX_ROWS_PER_STATEMENT) -> None:
        self.faults = faults or SinkFaults()
        self.max_rows = max_rows
        self.statements = 0
        """Statements run, as the BigQuery sink's jobs: one per file, more for huge snapshots."""
        self._tables: dict[str, dict[tuple[Any, ...], Row]] = {}
        self._lock = threading.Lock()

    def upsert(self, table: RawTable, rows: Sequence[Mapping[str, Any]], *,
               replace: bool = False) -> int:
        clean = prepare(table, rows, replace, self.max_rows)
        for part in chunks(clean, self.max_rows):
            self._merge(table, part, replace)
        return len(clean)

    def _merge(self, table: RawTable, rows: list[Row], replace: bool) -> None:
        with self._lock:
            self.statements += 1
            if self.faults.refuse > 0:
                self.faults.refuse -= 1
                name = f"{table.spec.dataset}.{table.spec.name}"
                raise LoadRefused("concurrent_update", CONCURRENT_UPDATE_ERROR.format(table=name))
            stored = self._tables.setdefault(self._name(table), {})
            incoming = {table.key(r): r for r in rows}
            for key, row in incoming.items():
                old = stored.get(key)
                if old is None or old[SCRAPED_AT] <= row[SCRAPED_AT]:
                    stored[key] = dict(row)
            if replace:
                dates = {r[GAME_DATE] for r in rows}
                newest = newest_scraped_at(rows)
                for key in [k for k, r in stored.items()
                            if r[GAME_DATE] in dates and k not in incoming
                            and r[SCRAPED_AT] <= newest]:
                    del stored[key]

    def rows(self, table: RawTable) -> list[Row]:
        """The table's rows, in key order, as copies."""
        with self._lock:
            stored = self._tables.get(self._name(table), {})
            return [dict(stored[k]) for k in sorted(stored)]

    @staticmethod
    def _name(table: RawTable) -> str:
        return f"{table.spec.dataset}.{table.spec.name}"
