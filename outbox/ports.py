"""The two ports of the outbox: a store for log rows and a publisher.

Services depend on these protocols only. Every implementation (BigQuery,
Pub/Sub, and the in-memory doubles in :mod:`outbox.testing`) passes the same
contract suite in ``tests/contracts``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from outbox.rows import Row
from outbox.schema import TableSpec

Outcome = Literal["published", "failed", "set_aside"]
OUTCOMES: frozenset[str] = frozenset({"published", "failed", "set_aside"})

Cursor = tuple[dt.datetime, str]
"""(triggered_at, execution_id) of the last row a poll returned."""


@dataclass(frozen=True)
class PendingRow:
    """An unpublished log row, with how often publishing it failed for good."""

    execution_id: str
    triggered_at: dt.datetime
    row: Row
    attempts: int = 0

    @property
    def cursor(self) -> Cursor:
        return (self.triggered_at, self.execution_id)


@dataclass(frozen=True)
class PollResult:
    rows: list[PendingRow]
    backlog: int
    """Rows in the window still to publish (not flagged, journaled or set aside)."""
    oldest: dt.datetime | None
    """``triggered_at`` of the oldest of those rows."""
    unfolded: int
    """Rows journaled as published whose ``published`` flag is not set yet."""


@dataclass(frozen=True)
class JournalEntry:
    execution_id: str
    triggered_at: dt.datetime
    outcome: Outcome
    relay_run_id: str
    message_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SetAsideRow:
    execution_id: str
    triggered_at: dt.datetime
    attempts: int
    last_error: str | None
    set_aside_at: dt.datetime


class LogWriter(Protocol):
    """Appends log rows. This is all a scraper or processor ever sees."""

    spec: TableSpec

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` with ``published`` unset (FALSE).

        Validates every row first and raises :class:`~outbox.errors.InvalidRow`
        naming the field before anything is written. Not idempotent: each call
        appends, so callers give every run a unique ``execution_id``. Raises
        :class:`~outbox.errors.TransientError` if the write may be retried.
        Safe to call from many threads and processes at once.
        """
        ...


class OutboxStore(LogWriter, Protocol):
    """The relay's view of one log table and its journal.

    Concurrency: several relays may call every method at once. Nothing here
    takes a lock; correctness comes from the journal being append-only and
    from ``mark_published`` and ``fold`` being idempotent.
    """

    route: str

    def poll(self, since: dt.datetime, limit: int, after: Cursor | None = None) -> PollResult:
        """Rows with ``triggered_at >= since`` that still need publishing.

        Excludes rows flagged published, journaled as published, or set
        aside. Ordered by (triggered_at, execution_id), strictly after
        ``after`` when given. One query; always filtered on the partition
        column.
        """
        ...

    def record(self, entries: Sequence[JournalEntry]) -> None:
        """Append outcomes to the journal; visible to the next poll at once.

        Raises :class:`~outbox.errors.TransientError` when the append failed
        and nothing was recorded.
        """
        ...

    def mark_published(self, rows: Sequence[PendingRow]) -> int:
        """Set ``published`` on these rows in one statement. Idempotent.

        Raises :class:`~outbox.errors.MarkRefused` when BigQuery refuses for
        now (streaming buffer, concurrent update, quota); the journal still
        holds the truth and :meth:`fold` sets the flag later.
        """
        ...

    def fold(self, since: dt.datetime) -> int:
        """Flag every row journaled as published since ``since``. Idempotent.

        Raises :class:`~outbox.errors.MarkRefused` like :meth:`mark_published`.
        """
        ...

    def set_aside(self, since: dt.datetime) -> list[SetAsideRow]:
        """Rows the relay gave up on, with their last error."""
        ...

    def published_count(self, since: dt.datetime, recorded_after: dt.datetime) -> int:
        """Rows journaled as published after ``recorded_after``, among rows
        with ``triggered_at >= since`` (the partition filter)."""
        ...

    def record_run(self, run_id: str, stopped: str, summary: Mapping[str, Any]) -> None:
        """Append one relay run's summary. Raises TransientError on failure."""
        ...

    def last_run(self, since: dt.datetime) -> Mapping[str, Any] | None:
        """The newest run summary finished after ``since``, or None."""
        ...


class Lease(Protocol):
    """At most one holder per route until the lease expires.

    Why it exists: Cloud Scheduler can start a relay run while the previous
    one is still going, and two runs would publish the same rows twice. The
    lease makes overlap a skipped run instead. It expires on its own, so a
    holder killed with ``kill -9`` blocks the route for at most ``ttl``.
    """

    def acquire(self, route: str, holder: str, ttl: dt.timedelta) -> bool:
        """Take the lease if it is free, expired or already ours; True if we hold it.

        Never raises for contention: a refused or conflicting statement means
        False. Raises :class:`~outbox.errors.TransientError` when the store
        cannot be reached, so the caller skips the run.
        """
        ...

    def release(self, route: str, holder: str) -> None:
        """Give the lease up if we hold it. Idempotent; failures are harmless
        because the lease expires anyway."""
        ...


@dataclass(frozen=True)
class Message:
    key: str
    """The event's identity (``execution_id``); never Pub/Sub's message id."""
    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishOutcome:
    key: str
    message_id: str | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Publisher(Protocol):
    """Publishes messages to a topic.

    Not idempotent: every call creates new Pub/Sub messages, so consumers
    deduplicate on the event's own id. Thread-safe.
    """

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        """Publish all ``messages`` and wait for each result.

        Returns one outcome per message, in order. A message's failure is an
        outcome whose ``error`` is a :class:`~outbox.errors.TransientError`
        or :class:`~outbox.errors.PermanentError`; it never raises for one
        message. Raises :class:`~outbox.errors.ConfigError` if the topic does
        not exist, since no message could succeed.
        """
        ...

    def close(self) -> None:
        ...
