"""What a processor is, and what it is given.

The service (``processors/service.py``) decodes a push delivery into an
:class:`Event`, routes it to a :class:`Processor` by the registry, reads the
file at ``event.gcs_path`` and calls :meth:`Processor.process`. Processors
never touch Pub/Sub: their completion is a row in the processor execution log,
which the relay publishes to ``nba-phase2-complete``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from outbox.errors import PermanentError
from outbox.schema import TableSpec

EventFormat = Literal["v1", "v2", "gcs"]


class InvalidFile(PermanentError):
    """The file is not what the processor expects; retrying cannot help.

    The message says what was wrong and where (field path, row index), for
    the quarantine record an operator reads.
    """


@dataclass(frozen=True)
class Event:
    """One delivery, whatever shape it came in (v1, v2 or object finalize)."""

    execution_id: str
    """The event's identity, the dedupe key with the processor name."""
    format: EventFormat
    gcs_path: str | None
    scraper_name: str | None = None
    status: str | None = None
    correlation_id: str | None = None
    replay: bool = False
    force: bool = False
    """A deliberate re-process that bypasses deduplication (backfill --force)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessResult:
    status: Literal["success", "no_data"]
    output_dataset: str
    output_table: str
    game_date: dt.date | None
    record_count: int
    records_failed: int = 0


class Processor(Protocol):
    """Loads one raw file into one ``nba_raw`` table, idempotently.

    Processing the same file twice leaves the same rows (MERGE on natural
    keys, or replacing the game date's partition in one job). Raises
    :class:`InvalidFile` for a malformed file, before writing anything, and
    :class:`~outbox.errors.TransientError` when a retry may succeed.
    """

    name: str
    table: TableSpec

    def process(self, event: Event, data: bytes) -> ProcessResult: ...
