"""One relay run: poll, publish, journal, mark, until drained or out of time.

Why nothing is lost: a row leaves the poll only once it is flagged, journaled
as published, or set aside after repeated permanent failures. Every step that
can fail leaves the row where the next poll finds it.

Why marking cannot storm: published rows are journaled (an append, which
never conflicts and is visible at once), and the journal hides them from the
next poll. The ``published`` flag is set by one ``fold`` statement per run;
if BigQuery refuses it, nothing is published again and the next run folds.
See docs/design.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
import uuid
from array import array
from collections.abc import Callable, MutableSequence, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

from outbox.clock import Clock, utcnow
from outbox.errors import ConfigError, InvalidMessage, MarkRefused, OutboxError, TransientError
from outbox.ports import (
    JournalEntry,
    Lease,
    Message,
    OutboxStore,
    PendingRow,
    Publisher,
    PublishOutcome,
)
from outbox.routes import Route

log = logging.getLogger("relay")
_LEASE_MARGIN = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class RelayConfig:
    batch_size: int = 1000
    lookback: dt.timedelta = dt.timedelta(days=3)
    """How far back a normal poll reads. Every poll filters on the partition column."""
    sweep_lookback: dt.timedelta = dt.timedelta(days=90)
    """A periodic full sweep reads this far back (the partition expiry), so that
    a row older than ``lookback`` is still published."""
    sweep_every: dt.timedelta = dt.timedelta(hours=6)
    deadline: dt.timedelta = dt.timedelta(seconds=50)
    max_attempts: int = 5
    """Permanent publish failures before a row is set aside."""
    publish_attempts: int = 3
    """Tries per batch for messages that failed transiently."""
    retry_wait: float = 0.5
    lease_ttl: dt.timedelta | None = None
    """How long a run holds the route's lease; default: the run's deadline plus
    60 s, so a run that dies blocks the route for about two scheduler ticks. When
    set, a run drains for at most the TTL less a quarter (at most 60 s), whatever
    deadline it is given."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError(f"batch_size must be 1..10000, got {self.batch_size}")
        if self.lookback <= dt.timedelta(0) or self.sweep_lookback < self.lookback:
            raise ConfigError("lookback must be positive and no longer than sweep_lookback")
        if self.deadline <= dt.timedelta(0):
            raise ConfigError("deadline must be positive")
        if self.lease_ttl is not None and self.lease_ttl < dt.timedelta(seconds=1):
            raise ConfigError(f"lease_ttl must be at least 1 s, got {self.lease_ttl}")
        if self.max_attempts < 1 or self.publish_attempts < 1:
            raise ConfigError("max_attempts and publish_attempts must be at least 1")


def _floats() -> MutableSequence[float]:
    return array("d")


@dataclass
class RunSummary:
    route: str
    run_id: str
    polled: int = 0
    published: int = 0
    failed: int = 0
    """Messages that failed to publish this run (they stay pending)."""
    set_aside: int = 0
    marked: int = 0
    """Rows whose ``published`` flag this run set."""
    folded: int = 0
    fold_refused: int = 0
    """Fold statements BigQuery refused (streaming buffer, conflict, quota)."""
    journal_failed: int = 0
    unsettled: int = 0
    """Published rows neither journaled nor flagged: the next run repeats them."""
    batches: int = 0
    backlog: int = 0
    oldest_pending_age_seconds: float | None = None
    stopped: str = "drained"
    seconds: float = 0.0
    publish_latencies: MutableSequence[float] = field(default_factory=_floats, repr=False)
    publish_ages: MutableSequence[float] = field(default_factory=_floats, repr=False)
    """One value per published row, for the metrics' histograms: the only
    state a run keeps per row. Packed doubles, 8 bytes a row each, where
    lists of floats took up to 32 (a 200,000-row drain: 3 MB instead of 8).
    :meth:`as_dict` leaves both out."""

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it would deep-copy a value per row only to drop it.
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("publish_latencies", "publish_ages")}


@dataclass
class _Batch:
    entries: list[JournalEntry] = field(default_factory=list)
    published: list[PendingRow] = field(default_factory=list)


@dataclass
class _InFlight:
    size: int
    batch: _Batch
    todo: list[tuple[PendingRow, Message]]
    sending: Future[tuple[list[PublishOutcome], float]] | None
    unavailable: bool = False


def _compact(message: Message) -> Message:
    """``message`` with a body that holds only its own bytes.

    Why: orjson (3.13) hands back its output in the buffer it wrote it into,
    without shrinking it: a ~450-byte v1 body kept about 4 KB resident
    (20,000 bodies: 79 MB, against 10 MB copied), so 20 MB per batch of
    5,000, and a run holds two or three batches of messages at once. The copy
    costs well under a microsecond a message.
    """
    return Message(message.key, bytes(memoryview(message.data)), message.attributes)


class Relay:
    """Relays one route. Safe to run next to another relay on the same route:
    overlap can duplicate a batch, never lose one."""

    def __init__(
        self,
        route: Route,
        store: OutboxStore,
        publisher: Publisher,
        config: RelayConfig | None = None,
        lease: Lease | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.route = route
        self.store = store
        self.publisher = publisher
        self.config = config or RelayConfig()
        self.lease = lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self._last_sweep: dt.datetime | None = None

    def _since(self, now: dt.datetime) -> dt.datetime:
        cfg = self.config
        if self._last_sweep is None or now - self._last_sweep >= cfg.sweep_every:
            self._last_sweep = now
            return now - cfg.sweep_lookback
        return now - cfg.lookback

    def run_once(self, deadline: dt.timedelta | None = None) -> RunSummary:
        """Drain the route under its lease; skip the run if another relay holds it."""
        summary = RunSummary(route=self.route.name, run_id=uuid.uuid4().hex[:12])
        if self.lease is None:
            return self._drain(summary, deadline)
        wanted = deadline or self.config.deadline
        ttl = self.config.lease_ttl or wanted + _LEASE_MARGIN
        # A drain that outlived its lease could overlap the next holder's run: it stops
        # a quarter of the TTL (at most the usual margin) before the lease expires.
        deadline = min(wanted, ttl - min(ttl / 4, _LEASE_MARGIN))
        try:
            held = self.lease.acquire(self.route.name, self.holder, ttl)
        except OutboxError as exc:
            summary.stopped = f"error: lease unavailable: {exc}"
            return summary
        if not held:
            summary.stopped = "lease_held"
            log.info("another relay holds the lease; run skipped",
                     extra={"json_fields": {"route": self.route.name, "run_id": summary.run_id}})
            return summary
        # Released on return or on an ordinary exception. A process that dies
        # (kill -9, or a BaseException such as SimulatedCrash) leaves it to expire.
        try:
            self._drain(summary, deadline)
        except Exception:
            self.lease.release(self.route.name, self.holder)
            raise
        self.lease.release(self.route.name, self.holder)
        return summary

    def _drain(self, summary: RunSummary, deadline: dt.timedelta | None) -> RunSummary:
        """Drain until nothing is pending or the deadline passes.

        A three-stage pipeline: while batch n is being published, batch n+1
        is polled and encoded, and batch n-1 is journaled. At most three
        batches are in flight, which bounds the duplicates a crash can cause.
        The ``published`` flag is folded once, at the end.
        """
        started = self.monotonic()
        limit = (deadline or self.config.deadline).total_seconds()
        now = self.clock()
        since = self._since(now)
        fold_due = False
        pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="relay")
        settling: Future[None] | None = None
        inflight: _InFlight | None = None
        try:
            next_poll = pool.submit(self.store.poll, since, self.config.batch_size, None)
            while True:
                poll = next_poll.result()
                if summary.batches == 0:
                    summary.backlog = poll.backlog
                    if poll.oldest is not None:
                        summary.oldest_pending_age_seconds = (now - poll.oldest).total_seconds()
                fold_due = fold_due or poll.unfolded > 0
                if not poll.rows:
                    break
                if self.monotonic() - started >= limit:
                    summary.stopped = "deadline"
                    break
                summary.batches += 1
                summary.polled += len(poll.rows)
                next_poll = pool.submit(
                    self.store.poll, since, self.config.batch_size, poll.rows[-1].cursor
                )
                staged = self._stage(poll.rows, summary, pool)
                if inflight is not None:
                    settling = self._complete(inflight, summary, pool, settling)
                    fold_due = fold_due or bool(inflight.batch.published)
                    if inflight.unavailable:
                        summary.stopped = "publisher_unavailable"
                        inflight = staged
                        break
                inflight = staged
            if inflight is not None:
                settling = self._complete(inflight, summary, pool, settling)
                fold_due = fold_due or bool(inflight.batch.published)
                if inflight.unavailable:
                    summary.stopped = "publisher_unavailable"
            if settling is not None:
                settling.result()
            if fold_due:
                self._fold(since, summary)
        except OutboxError as exc:
            summary.stopped = f"error: {exc}"
            log.error(
                "relay run stopped early",
                extra={"json_fields": {"route": self.route.name, "run_id": summary.run_id,
                                       "error": str(exc), "error_class": type(exc).__name__}},
            )
            if isinstance(exc, ConfigError):
                raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds = round(self.monotonic() - started, 4)
        try:
            self.store.record_run(summary.run_id, summary.stopped, summary.as_dict())
        except OutboxError as exc:
            log.warning("run summary not recorded", extra={"json_fields": {
                "route": self.route.name, "run_id": summary.run_id, "error": str(exc)}})
        return summary

    def _timed_publish(self, messages: list[Message]) -> tuple[list[PublishOutcome], float]:
        t0 = self.monotonic()
        outcomes = self.publisher.publish(self.route.topic, messages)
        return outcomes, self.monotonic() - t0

    def _stage(self, rows: Sequence[PendingRow], summary: RunSummary,
               pool: ThreadPoolExecutor) -> _InFlight:
        """Encode a page and start publishing it in the background."""
        batch = _Batch()
        todo = self._encode(rows, batch, summary)
        sending = pool.submit(self._timed_publish, [m for _, m in todo]) if todo else None
        return _InFlight(len(rows), batch, todo, sending)

    def _complete(self, inflight: _InFlight, summary: RunSummary, pool: ThreadPoolExecutor,
                  settling: Future[None] | None) -> Future[None]:
        """Collect a batch's outcomes, retry transient failures, then journal it."""
        self._collect(inflight, summary)
        if settling is not None:
            settling.result()
        return pool.submit(self._journal, inflight.batch, summary)

    def _encode(
        self, rows: Sequence[PendingRow], batch: _Batch, summary: RunSummary
    ) -> list[tuple[PendingRow, Message]]:
        good: list[tuple[PendingRow, Message]] = []
        for row in rows:
            try:
                good.append((row, _compact(self.route.encoder(row.row))))
            except (InvalidMessage, KeyError, TypeError, ValueError) as exc:
                self._set_aside(row, f"cannot encode: {type(exc).__name__}: {exc}", batch,
                                summary)
        return good

    def _set_aside(self, row: PendingRow, error: str, batch: _Batch,
                   summary: RunSummary) -> None:
        """Deterministic failures: no retry can help, so no attempts are spent."""
        summary.set_aside += 1
        batch.entries.append(JournalEntry(row.execution_id, row.triggered_at, "set_aside",
                                          summary.run_id, error=error[:1000]))
        log.error("row set aside", extra={"json_fields": {
            "route": self.route.name, "execution_id": row.execution_id, "error": error}})

    def _collect(self, inflight: _InFlight, summary: RunSummary) -> None:
        batch, todo = inflight.batch, inflight.todo
        if inflight.sending is None:
            return
        outcomes, elapsed = inflight.sending.result()
        for attempt in range(1, self.config.publish_attempts + 1):
            now = self.clock()
            retry: list[tuple[PendingRow, Message]] = []
            for (row, msg), outcome in zip(todo, outcomes, strict=True):
                if outcome.ok:
                    batch.published.append(row)
                    batch.entries.append(JournalEntry(
                        row.execution_id, row.triggered_at, "published", summary.run_id,
                        message_id=outcome.message_id))
                    summary.published += 1
                    summary.publish_latencies.append(elapsed)
                    summary.publish_ages.append((now - row.triggered_at).total_seconds())
                elif isinstance(outcome.error, TransientError):
                    retry.append((row, msg))
                elif isinstance(outcome.error, InvalidMessage):
                    self._set_aside(row, f"invalid message: {outcome.error}", batch, summary)
                else:
                    self._permanent_failure(row, str(outcome.error), batch, summary)
            todo = retry
            if not todo or attempt == self.config.publish_attempts:
                break
            self.sleep(self.config.retry_wait * 2 ** (attempt - 1))
            outcomes, elapsed = self._timed_publish([m for _, m in todo])
        summary.failed += len(todo)
        inflight.unavailable = bool(todo) and len(todo) == inflight.size
        if todo:
            log.warning("publish failed transiently; rows stay pending", extra={"json_fields": {
                "route": self.route.name, "count": len(todo),
                "execution_ids": [r.execution_id for r, _ in todo[:20]]}})

    def _permanent_failure(self, row: PendingRow, error: str, batch: _Batch,
                           summary: RunSummary) -> None:
        summary.failed += 1
        batch.entries.append(JournalEntry(row.execution_id, row.triggered_at, "failed",
                                          summary.run_id, error=error[:1000]))
        if row.attempts + 1 >= self.config.max_attempts:
            summary.set_aside += 1
            batch.entries.append(JournalEntry(row.execution_id, row.triggered_at, "set_aside",
                                              summary.run_id, error=error[:1000]))
            log.error("row set aside after repeated failures", extra={"json_fields": {
                "route": self.route.name, "execution_id": row.execution_id,
                "attempts": row.attempts + 1, "error": error}})

    def _journal(self, batch: _Batch, summary: RunSummary) -> None:
        """Record the batch's outcomes; if the journal is down, flag directly."""
        try:
            self.store.record(batch.entries)
            return
        except TransientError as exc:
            summary.journal_failed += len(batch.entries)
            log.error("journal append failed; flagging the batch directly",
                      extra={"json_fields": {"route": self.route.name, "error": str(exc),
                                             "rows": len(batch.entries)}})
        try:
            summary.marked += self.store.mark_published(batch.published)
        except TransientError as exc:
            # Neither journaled nor flagged: the next run publishes this batch
            # again. A duplicate bounded by this batch; never a loss.
            summary.unsettled += len(batch.published)
            log.error("batch neither journaled nor flagged; it will be published again",
                      extra={"json_fields": {"route": self.route.name, "error": str(exc),
                                             "execution_ids": [r.execution_id
                                                               for r in batch.published[:20]]}})

    def _fold(self, since: dt.datetime, summary: RunSummary) -> None:
        try:
            summary.folded = self.store.fold(since)
            summary.marked += summary.folded
        except MarkRefused as exc:
            summary.fold_refused += 1
            log.warning("fold refused; will try again next run", extra={"json_fields": {
                "route": self.route.name, "reason": exc.reason}})
