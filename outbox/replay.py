"""Backfill replay: re-publish the log rows of a window on purpose.

Why it exists: after a processor bug is fixed or a table is rebuilt, history
has to flow through the pipeline again. Replay reads the log table directly
(flagged or not) and publishes each row with the route's encoder, so the body
and ``execution_id`` are the original ones and consumers' dedupe still
applies. Attributes ``replay=true`` and ``replay_id`` mark the copies;
``force=true`` asks processors to bypass their dedupe on purpose.

Why it never touches the live outbox: it only SELECTs from the log table. The
``published`` flag, the journal and the lease belong to the relay; a replay
that changed them could hide a row from the relay or race it for the lease.

Resuming: after every batch whose messages are all resolved (acknowledged by
Pub/Sub, or failed for good) a :class:`Checkpoint` with the batch's last
keyset cursor is written atomically. A crash re-sends at most the batch that
was in flight, so a resumed replay is at-least-once at batch granularity.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from outbox.errors import ConfigError, OutboxError, TransientError
from outbox.ports import Cursor, Message, PendingRow, Publisher
from outbox.routes import Route
from outbox.schema import SCRAPER_STATUSES

DAY = dt.timedelta(days=1)
STATUSES: dict[str, frozenset[str]] = {
    "scrapers": SCRAPER_STATUSES,
    "processors": frozenset({"success", "no_data", "failed"}),  # processors/service.py writes
}
MAX_FAILED_IDS = 1000
"""Failed execution ids kept in the checkpoint; the count is always exact."""
_SNAKE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")


class ReplayInputError(ConfigError):
    """A replay request that must be refused before anything is sent."""


@dataclass(frozen=True)
class ReplayQuery:
    """What to replay. Part of the checkpoint: a resume must ask for the same."""

    route: str
    since: dt.date
    until: dt.date
    """Inclusive, like ``since``: whole UTC days."""
    names: tuple[str, ...] = ()
    """Scraper (or processor) names; empty for all."""
    statuses: tuple[str, ...] = ()
    force: bool = False

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in UTC: midnight of ``since`` to midnight after ``until``."""
        start = dt.datetime.combine(self.since, dt.time(), dt.UTC)
        return start, dt.datetime.combine(self.until, dt.time(), dt.UTC) + DAY

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "since": self.since.isoformat(),
                "until": self.until.isoformat(), "names": sorted(self.names),
                "statuses": sorted(self.statuses), "force": self.force}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayQuery:
        return cls(str(data["route"]), dt.date.fromisoformat(data["since"]),
                   dt.date.fromisoformat(data["until"]), tuple(sorted(data["names"])),
                   tuple(sorted(data["statuses"])), bool(data["force"]))


def name_column(route: Route) -> str:
    """The column ``--scraper`` filters on: the log's producer name."""
    for col in ("scraper_name", "processor_name"):
        if route.table.column(col) is not None:
            return col
    raise ConfigError(f"route {route.name}: no scraper_name or processor_name column")


def known_names(route: Route) -> list[str] | None:
    """Registered scraper names for the scrapers route; None when there is no list."""
    if name_column(route) != "scraper_name":
        return None
    try:
        from scrapers.registry import REGISTRY
    except ImportError:  # pragma: no cover - the registry ships with the package
        return None
    return REGISTRY.names


def check_query(query: ReplayQuery, route: Route, today: dt.date) -> list[str]:
    """Refuse a bad request (:class:`ReplayInputError`); return warnings to show."""
    warnings: list[str] = []
    if query.since > query.until:
        raise ReplayInputError(f"--since {query.since} is after --until {query.until}")
    if query.since > today:
        raise ReplayInputError(f"the window is empty: --since {query.since} is after today "
                               f"({today}, UTC)")
    days = (query.until - query.since).days + 1
    retention = route.table.expiration_days
    if retention is not None:
        horizon = today - dt.timedelta(days=retention - 1)
        if days > retention:
            raise ReplayInputError(f"the window is {days} days; {route.table.name} keeps "
                                   f"{retention} days of partitions")
        if query.until < horizon:
            raise ReplayInputError(f"the window is empty: partitions before {horizon} have "
                                   f"expired ({retention}-day retention)")
        if query.since < horizon:
            warnings.append(f"partitions before {horizon} have expired; rows from "
                            f"{query.since} to {horizon - DAY} are gone")
    known = known_names(route)
    for name in query.names:
        if known is not None and name not in known:
            raise ReplayInputError(f"unknown scraper {name!r}; known: {', '.join(known)}")
        if known is None and not _SNAKE.match(name):
            raise ReplayInputError(f"{name!r} is not a snake_case {name_column(route)}")
    if query.names and known is None:
        warnings.append(f"no registry of {name_column(route)} values: "
                        f"{', '.join(query.names)} not checked")
    allowed = STATUSES.get(route.name)
    for status in query.statuses:
        if allowed is not None and status not in allowed:
            raise ReplayInputError(f"unknown status {status!r} for route {route.name}; "
                                   f"known: {', '.join(sorted(allowed))}")
    if query.force:
        warnings.append("--force: messages carry force=true, so processors bypass their "
                        "dedupe and re-process every replayed event")
    return warnings


class ReplaySource(Protocol):
    """Read-only access to a log table's rows, published or not."""

    def count(self, query: ReplayQuery, after: Cursor | None = None) -> int:
        """Rows of the query strictly after ``after``."""
        ...

    def estimate_bytes(self, query: ReplayQuery) -> int | None:
        """Bytes one pass over the window reads (a dry run); None if not applicable."""
        ...

    def rows(self, query: ReplayQuery, after: Cursor | None = None) -> Iterator[PendingRow]:
        """Rows of the query strictly after ``after``, in (triggered_at, execution_id) order."""
        ...


@dataclass
class Checkpoint:
    """Where a replay stands; see the module docstring for the guarantee."""

    replay_id: str
    query: ReplayQuery
    cursor: Cursor | None = None
    """The last row of the last batch whose messages were all resolved."""
    sent: int = 0
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)
    done: bool = False

    @classmethod
    def new(cls, query: ReplayQuery) -> Checkpoint:
        return cls(str(uuid.uuid4()), query)

    def as_json(self) -> dict[str, Any]:
        cursor = None if self.cursor is None else {
            "triggered_at": self.cursor[0].isoformat(), "execution_id": self.cursor[1]}
        return {"version": 1, "replay_id": self.replay_id, "params": self.query.as_json(),
                "cursor": cursor, "sent": self.sent, "failed": self.failed,
                "failed_ids": self.failed_ids, "done": self.done,
                "updated_at": dt.datetime.now(dt.UTC).isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        raw = data["cursor"]
        cursor = None if raw is None else (
            dt.datetime.fromisoformat(raw["triggered_at"]), str(raw["execution_id"]))
        return cls(str(data["replay_id"]), ReplayQuery.from_json(data["params"]), cursor,
                   int(data["sent"]), int(data["failed"]), list(data["failed_ids"]),
                   bool(data["done"]))


class CheckpointFile:
    """A checkpoint on local disk, replaced atomically so a crash never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Checkpoint:
        try:
            return Checkpoint.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReplayInputError(f"{self.path} is not a replay checkpoint: {exc}") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(checkpoint.as_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def mismatch(saved: ReplayQuery, asked: ReplayQuery) -> list[str]:
    """The parameters in which a resume differs from the checkpoint, as 'name: a != b'."""
    a, b = saved.as_json(), asked.as_json()
    return [f"{k}: checkpoint {a[k]} != command {b[k]}" for k in a if a[k] != b[k]]


class TokenBucket:
    """Paces sends to ``rate`` messages/s; a burst is at most ``capacity``.

    Time comes from ``clock`` and waiting goes through ``sleep``, so tests
    check the pacing without sleeping.
    """

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate, self.capacity, self.clock, self.sleep = rate, capacity, clock, sleep
        self.tokens, self.last = float(capacity), clock()

    def acquire(self, n: int) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            self.sleep(-self.tokens / self.rate)


@dataclass
class ReplaySummary:
    replay_id: str
    sent: int = 0
    """Messages Pub/Sub acknowledged in this invocation."""
    failed: int = 0
    skipped: int = 0
    """Rows a previous invocation already sent (before the checkpoint's cursor)."""
    seconds: float = 0.0
    done: bool = False


class PublisherUnavailable(TransientError):
    """Messages still failed transiently after retries; the replay stops to resume later."""


def replay_message(message: Message, replay_id: str, force: bool) -> Message:
    """The original message with the replay attributes added; body and key unchanged."""
    extra = {"replay": "true", "replay_id": replay_id}
    if force:
        extra["force"] = "true"
    return dataclasses.replace(message, attributes={**message.attributes, **extra})


class Replayer:
    """Reads a window from a :class:`ReplaySource` and publishes it in batches."""

    def __init__(self, route: Route, source: ReplaySource, publisher: Publisher, *,
                 batch_size: int = 500, rate: float | None = None,
                 publish_attempts: int = 3, retry_wait: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None:  # batches of about a second, so a burst is one second's worth
            batch_size = max(1, min(batch_size, math.ceil(rate)))
        self.route, self.source, self.publisher = route, source, publisher
        self.batch_size, self.publish_attempts, self.retry_wait = (
            batch_size, publish_attempts, retry_wait)
        self.clock, self.sleep = clock, sleep
        self.bucket = None if rate is None else TokenBucket(rate, batch_size, clock, sleep)
        self.summary = ReplaySummary("")
        """Live counts; still readable after :meth:`run` raised."""

    def run(self, checkpoint: Checkpoint, save: Callable[[Checkpoint], None],
            on_batch: Callable[[ReplaySummary], None] = lambda s: None,
            stop: Callable[[], bool] = lambda: False) -> ReplaySummary:
        """Publish everything after the checkpoint's cursor, saving after each batch.

        ``stop`` is asked between batches (Ctrl-C sets it), so a stop asked
        for there re-sends nothing on resume; the summary then has ``done``
        False.
        """
        self.summary = summary = ReplaySummary(checkpoint.replay_id, skipped=checkpoint.sent)
        start = self.clock()
        batch: list[PendingRow] = []
        rows = () if checkpoint.done else self.source.rows(checkpoint.query, checkpoint.cursor)
        for row in rows:
            batch.append(row)
            if len(batch) >= self.batch_size:
                self._batch(batch, checkpoint, save)
                batch = []
                summary.seconds = self.clock() - start
                on_batch(summary)
                if stop():
                    return summary
        if batch:
            self._batch(batch, checkpoint, save)
        if not checkpoint.done:
            checkpoint.done = True
            save(checkpoint)
        summary.seconds, summary.done = self.clock() - start, True
        on_batch(summary)
        return summary

    def _batch(self, rows: Sequence[PendingRow], checkpoint: Checkpoint,
               save: Callable[[Checkpoint], None]) -> None:
        failed: list[str] = []
        pending: list[Message] = []
        for row in rows:
            try:
                message = self.route.encoder(row.row)
            except (OutboxError, KeyError, TypeError, ValueError):
                failed.append(row.execution_id)  # cannot become a message: no retry helps
                continue
            pending.append(replay_message(message, checkpoint.replay_id, checkpoint.query.force))
        for attempt in range(1, self.publish_attempts + 1):
            if not pending:
                break
            if self.bucket is not None:
                self.bucket.acquire(len(pending))
            outcomes = self.publisher.publish(self.route.topic, pending)
            retry: list[Message] = []
            for message, outcome in zip(pending, outcomes, strict=True):
                if outcome.ok:
                    self.summary.sent += 1
                elif isinstance(outcome.error, TransientError):
                    retry.append(message)
                else:
                    failed.append(message.key)
            pending = retry
            if pending and attempt < self.publish_attempts:
                self.sleep(self.retry_wait * attempt)
        if pending:
            raise PublisherUnavailable(f"{len(pending)} messages still failed transiently "
                                       f"after {self.publish_attempts} attempts")
        self.summary.failed += len(failed)
        checkpoint.sent += len(rows) - len(failed)
        checkpoint.failed += len(failed)
        checkpoint.failed_ids = (checkpoint.failed_ids + failed)[:MAX_FAILED_IDS]
        checkpoint.cursor = rows[-1].cursor
        save(checkpoint)


# -- sources -----------------------------------------------------------------------------
