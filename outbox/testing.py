"""In-memory doubles of the outbox ports, with fault injection.

They ship with the package so that users' own tests can use them, and they
pass the same contract suites as the BigQuery and Pub/Sub adapters. A double
that diverges from the real adapter is a bug.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from outbox.clock import Clock, utcnow
from outbox.errors import ConfigError, InvalidMessage, MarkRefused, PermanentError, TransientError
from outbox.messages import check_message
from outbox.ports import (
    Cursor,
    JournalEntry,
    Message,
    PendingRow,
    PollResult,
    PublishOutcome,
    SetAsideRow,
)
from outbox.replay import ReplayQuery, name_column
from outbox.routes import Route
from outbox.rows import Row, validate_row
from outbox.schema import PUBLISHED, PUBLISHED_AT, SCRAPER_EXECUTION_LOG, TableSpec


class SimulatedCrash(BaseException):
    """Raised by a double to stand for the process dying at that point.

    A ``BaseException`` so that no ``except Exception`` in the code under
    test can swallow it, just as nothing survives a real ``kill -9``.
    """


STREAMING_BUFFER_ERROR = (
    "UPDATE or DELETE statement over table {table} would affect rows in the "
    "streaming buffer, which is not supported"
)
CONCURRENT_UPDATE_ERROR = (
    "Could not serialize access to table {table} due to concurrent update"
)


@dataclass
class StoreFaults:
    """Faults the in-memory store injects. Counters are consumed as they fire."""

    refuse_marks: int = 0
    """The next N ``mark_published``/``fold`` calls fail with a concurrent-update error."""
    streaming_buffer: dt.timedelta | None = None
    """Rows younger than this (by ``created_at``) cannot be marked, as in BigQuery."""
    fail_appends: int = 0
    """The next N ``append`` calls fail transiently, writing nothing."""
    fail_records: int = 0
    """The next N journal ``record`` calls fail transiently, writing nothing."""
    crash_after_flag: int = 0
    """The next N ``mark_published``/``fold`` calls apply, then raise :class:`SimulatedCrash`."""


class InMemoryOutboxStore:
    """An :class:`~outbox.ports.OutboxStore` held in a list, thread-safe."""

    def __init__(
        self,
        spec: TableSpec = SCRAPER_EXECUTION_LOG,
        route: str = "scrapers",
        clock: Clock = utcnow,
        faults: StoreFaults | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.spec = spec
        self.columns = (
            None if columns is None
            else set(columns) | {"execution_id", spec.partition_column}
        )
        self.route = route
        self.clock = clock
        self.faults = faults or StoreFaults()
        self.rows: list[Row] = []
        self.journal: list[tuple[JournalEntry, dt.datetime]] = []
        self.runs: list[dict[str, Any]] = []
        self.jobs = 0
        self._lock = threading.RLock()

    # -- writer ---------------------------------------------------------
    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        clean = [validate_row(self.spec, r) for r in rows]
        with self._lock:
            if self.faults.fail_appends > 0:
                self.faults.fail_appends -= 1
                raise TransientError("injected: append failed")
            now = self.clock()
            for r in clean:
                r.setdefault("created_at", now)
                r.setdefault(PUBLISHED, False)
            self.rows.extend(clean)

    # -- relay side -----------------------------------------------------
    def _journal_state(self, since: dt.datetime) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}
        for entry, recorded_at in self.journal:
            if entry.triggered_at < since:
                continue
            s = state.setdefault(
                entry.execution_id,
                {"published": False, "set_aside": None, "attempts": 0, "error": None, "at": None},
            )
            if entry.outcome == "published":
                s["published"] = True
            elif entry.outcome == "set_aside":
                s["set_aside"] = recorded_at
            else:
                s["attempts"] += 1
            if entry.error is not None and (s["at"] is None or recorded_at >= s["at"]):
                s["error"], s["at"] = entry.error, recorded_at
        return state

    def poll(self, since: dt.datetime, limit: int, after: Cursor | None = None) -> PollResult:
        with self._lock:
            self.jobs += 1
            journal = self._journal_state(since)
            pending: list[PendingRow] = []
            unfolded = 0
            for r in self.rows:
                if r["triggered_at"] < since or r.get(PUBLISHED):
                    continue
                j = journal.get(r["execution_id"])
                if j and j["published"]:
                    unfolded += 1
                    continue
                if j and j["set_aside"] is not None:
                    continue
                row = {k: v for k, v in r.items() if self.columns is None or k in self.columns}
                pending.append(
                    PendingRow(r["execution_id"], r["triggered_at"], row, j["attempts"] if j else 0)
                )
            pending.sort(key=lambda p: p.cursor)
            oldest = pending[0].triggered_at if pending else None
            page = [p for p in pending if after is None or p.cursor > after][: max(limit, 0)]
            return PollResult(page, len(pending), oldest, unfolded)

    def record(self, entries: Sequence[JournalEntry]) -> None:
        with self._lock:
            if self.faults.fail_records > 0:
                self.faults.fail_records -= 1
                raise TransientError("injected: journal append failed")
            now = self.clock()
            self.journal.extend((e, now) for e in entries)

    def _check_markable(self, ids: Iterable[str]) -> None:
        if self.faults.refuse_marks > 0:
            self.faults.refuse_marks -= 1
            detail = CONCURRENT_UPDATE_ERROR.format(table=self.spec.name)
            raise MarkRefused("concurrent_update", detail)
        if self.faults.streaming_buffer is not None:
            young = self.clock() - self.faults.streaming_buffer
            wanted = set(ids)
            if any(r["execution_id"] in wanted and r["created_at"] > young for r in self.rows):
                raise MarkRefused(
                    "streaming_buffer", STREAMING_BUFFER_ERROR.format(table=self.spec.name)
                )

    def _flag(self, ids: set[str], since: dt.datetime) -> int:
        now, changed = self.clock(), 0
        for r in self.rows:
            if r["execution_id"] in ids and r["triggered_at"] >= since and not r.get(PUBLISHED):
                r[PUBLISHED], r[PUBLISHED_AT] = True, now
                changed += 1
        return changed

    def mark_published(self, rows: Sequence[PendingRow]) -> int:
        if not rows:
            return 0
        with self._lock:
            self.jobs += 1
            ids = {r.execution_id for r in rows}
            self._check_markable(ids)
            changed = self._flag(ids, min(r.triggered_at for r in rows))
            self._maybe_crash()
            return changed

    def _maybe_crash(self) -> None:
        if self.faults.crash_after_flag > 0:
            self.faults.crash_after_flag -= 1
            raise SimulatedCrash("after flagging")

    def fold(self, since: dt.datetime) -> int:
        with self._lock:
            self.jobs += 1
            ids = {k for k, v in self._journal_state(since).items() if v["published"]}
            self._check_markable(
                r["execution_id"] for r in self.rows
                if r["execution_id"] in ids and not r.get(PUBLISHED)
            )
            changed = self._flag(ids, since)
            self._maybe_crash()
            return changed

    def set_aside(self, since: dt.datetime) -> list[SetAsideRow]:
        with self._lock:
            self.jobs += 1
            journal = self._journal_state(since)
            out = []
            for r in self.rows:
                j = journal.get(r["execution_id"])
                if r["triggered_at"] < since or not j or j["set_aside"] is None or j["published"]:
                    continue
                out.append(
                    SetAsideRow(r["execution_id"], r["triggered_at"], j["attempts"], j["error"],
                                j["set_aside"])
                )
            return sorted(out, key=lambda s: (s.triggered_at, s.execution_id))

    def published_count(self, since: dt.datetime, recorded_after: dt.datetime) -> int:
        with self._lock:
            self.jobs += 1
            return len({e.execution_id for e, at in self.journal
                        if e.outcome == "published" and e.triggered_at >= since
                        and at >= recorded_after})

    def record_run(self, run_id: str, stopped: str, summary: Mapping[str, Any]) -> None:
        with self._lock:
            if self.faults.fail_records > 0:
                self.faults.fail_records -= 1
                raise TransientError("injected: run record failed")
            self.runs.append({"run_id": run_id, "finished_at": self.clock(),
                              "stopped": stopped, "summary": json.loads(json.dumps(
                                  dict(summary), default=str))})

    def last_run(self, since: dt.datetime) -> Mapping[str, Any] | None:
        with self._lock:
            self.jobs += 1
            recent = [r for r in self.runs if r["finished_at"] >= since]
            return max(recent, key=lambda r: r["finished_at"]) if recent else None

    # -- helpers for tests ------------------------------------------------
    def published_ids(self) -> set[str]:
        with self._lock:
            return {r["execution_id"] for r in self.rows if r.get(PUBLISHED)}


@dataclass
class PublisherFaults:
    fail_publishes: set[int] = field(default_factory=set)
    """1-based indices of individual messages (across calls) that fail transiently."""
    reject_keys: set[str] = field(default_factory=set)
    """Message keys Pub/Sub rejects for good (an InvalidArgument, say)."""
    crash_after_publish: int = 0
    """The next N ``publish`` calls send everything, then raise :class:`SimulatedCrash`."""
    unavailable: int = 0
    """The next N ``publish`` calls fail every message transiently."""


@dataclass(frozen=True)
class SentMessage:
    topic: str
    message_id: str
    message: Message


class InMemoryPublisher:
    """A :class:`~outbox.ports.Publisher` that keeps what it sent."""

    def __init__(
        self,
        topics: Iterable[str] = ("nba-scraper-complete",),
        faults: PublisherFaults | None = None,
    ) -> None:
        self.topics = set(topics)
        self.faults = faults or PublisherFaults()
        self.sent: list[SentMessage] = []
        self._counter = itertools.count(1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        with self._lock:
            if topic not in self.topics:
                raise ConfigError(f"Pub/Sub topic {topic!r} does not exist")
            unavailable = self.faults.unavailable > 0
            if unavailable:
                self.faults.unavailable -= 1
            out: list[PublishOutcome] = []
            for m in messages:
                n = next(self._counter)
                try:
                    check_message(m)
                except InvalidMessage as exc:
                    out.append(PublishOutcome(m.key, error=exc))
                    continue
                if unavailable or n in self.faults.fail_publishes:
                    out.append(PublishOutcome(m.key, error=TransientError("injected: unavailable")))
                elif m.key in self.faults.reject_keys:
                    out.append(PublishOutcome(m.key, error=PermanentError("injected: rejected")))
                else:
                    mid = str(next(self._ids))
                    self.sent.append(SentMessage(topic, mid, m))
                    out.append(PublishOutcome(m.key, message_id=mid))
            if self.faults.crash_after_publish > 0:
                self.faults.crash_after_publish -= 1
                raise SimulatedCrash("after publish")
            return out

    def close(self) -> None:
        return None

    def counts(self) -> dict[str, int]:
        """How many times each key was sent: 1 is ideal, more is a duplicate."""
        with self._lock:
            out: dict[str, int] = {}
            for s in self.sent:
                out[s.message.key] = out.get(s.message.key, 0) + 1
            return out


class InMemoryLease:
    """A :class:`~outbox.ports.Lease` on a dict, with the clock injectable."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self.clock = clock
        self.holders: dict[str, tuple[str, dt.datetime]] = {}
        self.refuse_next = 0
        """The next N acquires meet a concurrent-update refusal (returns False)."""
        self._lock = threading.Lock()

    def acquire(self, route: str, holder: str, ttl: dt.timedelta) -> bool:
        if ttl < dt.timedelta(0):
            raise ValueError(f"lease ttl must not be negative, got {ttl}")
        with self._lock:
            if self.refuse_next > 0:
                self.refuse_next -= 1
                return False
            now = self.clock()
            current = self.holders.get(route)
            if current is None or current[0] == holder or current[1] < now:
                self.holders[route] = (holder, now + ttl)
                return True
            return False

    def release(self, route: str, holder: str) -> None:
        with self._lock:
            if self.holders.get(route, ("", None))[0] == holder:
                del self.holders[route]


class InMemoryReplaySource:
    """A :class:`~outbox.replay.ReplaySource` over :attr:`InMemoryOutboxStore.rows`."""

    def __init__(self, rows: Sequence[dict[str, Any]], route: Route) -> None:
        self._rows, self._names = rows, name_column(route)

    def _matching(self, query: ReplayQuery, after: Cursor | None) -> list[PendingRow]:
        start, end = query.window()
        out = [PendingRow(r["execution_id"], r["triggered_at"], dict(r)) for r in self._rows
               if start <= r["triggered_at"] < end
               and (not query.names or r.get(self._names) in query.names)
               and (not query.statuses or r.get("status") in query.statuses)]
        out.sort(key=lambda p: p.cursor)
        return [p for p in out if after is None or p.cursor > after]

    def count(self, query: ReplayQuery, after: Cursor | None = None) -> int:
        return len(self._matching(query, after))

    def estimate_bytes(self, query: ReplayQuery) -> int | None:
        return None

    def rows(self, query: ReplayQuery, after: Cursor | None = None) -> Iterator[PendingRow]:
        yield from self._matching(query, after)
