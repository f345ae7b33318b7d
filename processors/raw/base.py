"""What every raw processor does, so that each one only says how to read its format.

The rule for bad input (one rule for all raw processors):

- The FILE is malformed (not JSON, wrong top-level shape, no record list):
  :class:`~processors.base.InvalidFile`, nothing written. Retrying cannot help.
- A RECORD is malformed (a wrong-typed or missing required field): it is
  skipped, counted in ``records_failed`` and logged with its path; the good
  records are written. One odd player line must not block a whole day.
- Every record is malformed: ``InvalidFile`` (a format change upstream looks
  like this), nothing written.
- No records at all (no games that day, no lines posted yet): status
  ``no_data``, nothing written. An empty file never deletes a day's rows: an
  upstream hiccup answering ``[]`` must not wipe good data.
- A full-day table deletes rows the new file no longer lists only when the
  file is complete: no record failed and the source said there was no more
  (:meth:`RawProcessor.complete`). Otherwise the rows are upserted only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from outbox.clock import Clock, utcnow
from outbox.errors import InvalidRow
from outbox.rows import Row, validate_row
from outbox.schema import TableSpec
from processors.base import Event, InvalidFile, ProcessResult
from processors.raw.records import BadRecord, Node, file_time
from processors.raw.sink import RawTableSink
from processors.raw.tables import GAME_DATE, PROCESSED_AT, SCRAPED_AT, RawTable

log = logging.getLogger("processors.raw")

_SHOWN_FAILURES = 3


class Collector:
    """Rows built so far and the records that failed, each failure kept apart.

    :meth:`each` isolates failures per node: a nested format (events ->
    bookmakers -> outcomes) calls it at every level, so a broken outcome costs
    one outcome and a broken event costs that event.
    """

    def __init__(self, spec: TableSpec, lineage: Row) -> None:
        self.spec = spec
        self.lineage = lineage
        self.rows: list[Row] = []
        self.failures: list[BadRecord] = []

    def each(self, nodes: Iterable[Node], build: Callable[[Node], Row | None]) -> None:
        """``build`` each node into a row (or None when it added rows itself)."""
        for node in nodes:
            try:
                row = build(node)
                if row is not None:
                    row = self._typed(node, row)
            except BadRecord as exc:
                self.failures.append(exc)
                continue
            if row is not None:
                self.rows.append(row)

    def _typed(self, node: Node, row: Row) -> Row:
        try:
            return validate_row(self.spec, {**row, **self.lineage})
        except InvalidRow as exc:
            raise BadRecord(node.path, f"column {exc.field}: {exc.problem}") from None


class RawProcessor:
    """Base of the raw processors: parse, validate, load, report.

    A subclass names itself and its table and implements :meth:`records` (the
    file's top level) and :meth:`build` (one record).
    """

    name: str
    raw: RawTable
    """The table as defined; ``target`` is where this instance writes it."""

    def __init__(self, sink: RawTableSink, *, dataset: str | None = None,
                 clock: Clock = utcnow) -> None:
        self.sink = sink
        self.clock = clock
        self.target = self.raw.in_dataset(dataset) if dataset else self.raw
        self.table: TableSpec = self.target.spec

    # -- what a format says -------------------------------------------------
    def records(self, doc: Node) -> list[Node]:
        """The file's records; a :class:`BadRecord` here means a malformed file."""
        raise NotImplementedError

    def build(self, record: Node, out: Collector) -> Row | None:
        """One record's row, or None after adding nested rows through ``out.each``."""
        raise NotImplementedError

    def complete(self, doc: Node) -> bool:
        """Whether the source said the file holds everything (no further page)."""
        return True

    # -- the common part ----------------------------------------------------
    def process(self, event: Event, data: bytes) -> ProcessResult:
        doc = self._parse(data)
        try:
            records = self.records(doc)
        except BadRecord as exc:
            raise InvalidFile(f"{self.name}: {exc}") from None
        out = Collector(self.table, self._lineage(event))
        out.each(records, lambda record: self.build(record, out))
        if out.failures:
            self._report(event, out.failures, len(out.rows))
            if not out.rows:
                raise InvalidFile(f"{self.name}: no valid record; " + _summary(out.failures))
        if not out.rows:
            return self._result("no_data", [], 0)
        replace = self.target.full_day and not out.failures and self.complete(doc)
        written = self.sink.upsert(self.target, out.rows, replace=replace)
        return self._result("success", out.rows, written, len(out.failures))

    def _parse(self, data: bytes) -> Node:
        try:
            return Node(json.loads(data))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
            raise InvalidFile(f"{self.name}: not a JSON document: {exc}"[:500]) from None

    def _lineage(self, event: Event) -> Row:
        now = self.clock()
        return {
            "source_execution_id": event.execution_id,
            "source_file": event.gcs_path,
            SCRAPED_AT: file_time(event.gcs_path) or now,
            PROCESSED_AT: now,
        }

    def _result(self, status: Literal["success", "no_data"], rows: list[Row], written: int,
                failed: int = 0) -> ProcessResult:
        """``game_date`` is the file's game day, or None if it spans several (or none)."""
        dates = {r[GAME_DATE] for r in rows}
        game_date: dt.date | None = next(iter(dates)) if len(dates) == 1 else None
        return ProcessResult(status, self.table.dataset, self.table.name, game_date,
                             written, failed)

    def _report(self, event: Event, failures: list[BadRecord], good: int) -> None:
        log.warning(
            "%s: skipped %d invalid records of %s (%d good): %s",
            self.name, len(failures), event.gcs_path, good, _summary(failures),
            extra={"json_fields": {"processor": self.name, "execution_id": event.execution_id,
                                   "records_failed": len(failures)}},
        )


def _summary(failures: list[BadRecord]) -> str:
    shown = "; ".join(str(f) for f in failures[:_SHOWN_FAILURES])
    more = len(failures) - _SHOWN_FAILURES
    return shown + (f" (+{more} more)" if more > 0 else "")


class BallDontLieProcessor(RawProcessor):
    """BallDontLie files: ``{"data": [...], "meta": {"next_cursor": ...}}``.

    The scraper follows every cursor and writes ``next_cursor: null``; a file
    with a cursor left is a truncated day, loaded without deleting anything.
    """

    def records(self, doc: Node) -> list[Node]:
        return doc.array("data")

    def complete(self, doc: Node) -> bool:
        meta = doc.at("meta").value
        return not isinstance(meta, dict) or meta.get("next_cursor") is None
