"""Dead letters: look at them without consuming them, and re-drive them to their topic.

Why pull-and-release to look: Pub/Sub has no "peek". Reading means pulling,
which leases the messages; ``modify_ack_deadline(0)`` hands the lease back, so
:func:`peek` consumes nothing, but the messages it holds are invisible to
every other reader of the subscription while it runs.

Why re-drive acks only after the re-publish returned a message id: a DLQ
message acked first and then never re-published (crash, refused publish)
would be lost. Acking after means a crash in between leaves it in the DLQ and
the next run re-publishes it: at worst a duplicate, which consumers drop by
``execution_id`` anyway (push has no exactly-once).

Whatever a run leased and did not ack (left out by the filter, failed, the
batch in flight at a stop) is released when the run ends, on Ctrl-C too; if
the process dies, the leases run out after :data:`LEASE_SECONDS`. Only at the
end: a message released earlier would come straight back in the next pull.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.api_core import exceptions as gexc

from outbox.errors import ConfigError, OutboxError, PermanentError, TransientError
from outbox.ports import Message, Publisher

log = logging.getLogger("outbox.dlq")
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
"""Every attribute Pub/Sub adds when it dead-letters a message starts with this."""
DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
SOURCE_PROJECT = "CloudPubSubDeadLetterSourceSubscriptionProject"
SOURCE_PUBLISH_TIME = "CloudPubSubDeadLetterSourceTopicPublishTime"
LEASE_SECONDS = 60
"""How long a re-drive holds what it pulled: the longest a killed run hides messages."""
PULL_WAIT_SECONDS = 3.0
"""The most one pull waits. A run ends with a pull that brings nothing new; the
emulator holds an empty pull until about 1 s before this deadline."""
_ACK_CHUNK = 1000  # ack ids per request, well under the 512 KiB request limit

Filters = Mapping[str, frozenset[str]]
"""Attribute name (or ``message_id``) -> accepted values: OR within a key, AND across keys."""


class DlqInputError(ConfigError):
    """A request that cannot be right (a malformed filter); nothing was pulled."""


def parse_filters(items: Iterable[str]) -> dict[str, frozenset[str]]:
    """``KEY=VALUE`` strings to :data:`Filters`; raises :class:`DlqInputError`."""
    out: dict[str, set[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value or any(c.isspace() for c in key):
            raise DlqInputError(f"{item!r}: use KEY=VALUE, e.g. scraper_name=bdl_games_scraper "
                                "(an attribute name, or message_id)")
        out.setdefault(key, set()).add(value)
    return {k: frozenset(v) for k, v in out.items()}


@dataclass(frozen=True)
class DeadLetter:
    """One pulled DLQ message; ``ack_id`` is good only while our lease lasts."""

    ack_id: str
    message_id: str
    publish_time: dt.datetime | None
    """When it was dead-lettered (its publish time on the DLQ topic)."""
    data: bytes
    attributes: Mapping[str, str]

    @classmethod
    def from_received(cls, received: Any) -> DeadLetter:
        m = received.message
        return cls(received.ack_id, m.message_id, m.publish_time or None, bytes(m.data),
                   dict(m.attributes))

    @property
    def original_attributes(self) -> dict[str, str]:
        """The attributes it was first published with."""
        return {k: v for k, v in self.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)}

    @property
    def delivery_count(self) -> int | None:
        value = self.attributes.get(DELIVERY_COUNT, "")
        return int(value) if value.isdigit() else None

    @property
    def source_subscription(self) -> str | None:
        """Short name (what Pub/Sub writes); a full path is cut to its last part."""
        value = self.attributes.get(SOURCE_SUBSCRIPTION)
        return value.rsplit("/", 1)[-1] if value else None

    @property
    def source_project(self) -> str | None:
        return self.attributes.get(SOURCE_PROJECT) or None

    @property
    def key(self) -> str:
        return self.attributes.get("execution_id") or self.message_id

    def preview(self, width: int = 60) -> str:
        text = " ".join(self.data.decode("utf-8", "replace").split())
        return text if len(text) <= width else text[: width - 1] + "…"

    def matches(self, filters: Filters) -> bool:
        values = {**self.attributes, "message_id": self.message_id}
        return all(values.get(k) in accepted for k, accepted in filters.items())

    def as_dict(self) -> dict[str, Any]:
        a, when = self.attributes, self.publish_time
        return {"message_id": self.message_id,
                "publish_time": when.isoformat() if when else None,
                **{k: a.get(k) for k in ("execution_id", "scraper_name", "status")},
                "delivery_count": self.delivery_count,
                "source_subscription": self.source_subscription,
                "source_project": self.source_project,
                "source_publish_time": a.get(SOURCE_PUBLISH_TIME),
                "attributes": self.original_attributes, "preview": self.preview(200)}


def redrive_message(letter: DeadLetter, redrive_id: str) -> Message:
    """Same body and original attributes, marked as a re-drive."""
    attributes = {**letter.original_attributes, "redrive": "true", "redrive_id": redrive_id}
    return Message(letter.key, letter.data, attributes)


class DeadLetterSource(Protocol):
    """A pull subscription, as the three calls a re-drive needs."""

    def pull(self, max_messages: int) -> list[DeadLetter]: ...
    def ack(self, ack_ids: Sequence[str]) -> None: ...
    def lease(self, ack_ids: Sequence[str], seconds: int) -> None:
        """``seconds`` 0 releases: the messages are deliverable again at once."""
        ...


class PubSubDeadLetters:
    """:class:`DeadLetterSource` on a real (or emulated) pull subscription."""

    def __init__(self, project: str, subscription: str, client: Any | None = None,
                 wait: float = PULL_WAIT_SECONDS) -> None:
        from google.cloud import pubsub_v1

        self.subscription, self.wait = subscription, wait
        self.path = f"projects/{project}/subscriptions/{subscription}"
        self._client = client or pubsub_v1.SubscriberClient()

    def pull(self, max_messages: int) -> list[DeadLetter]:
        request = {"subscription": self.path, "max_messages": max_messages}
        try:
            response = self._client.pull(request=request, timeout=self.wait)
        except (gexc.DeadlineExceeded, gexc.RetryError):
            return []  # nothing arrived within the wait
        except gexc.GoogleAPIError as exc:
            raise _translate(exc, f"pull from {self.subscription}") from exc
        return [DeadLetter.from_received(r) for r in response.received_messages]

    def ack(self, ack_ids: Sequence[str]) -> None:
        self._call(self._client.acknowledge, ack_ids, {}, "ack")

    def lease(self, ack_ids: Sequence[str], seconds: int) -> None:
        self._call(self._client.modify_ack_deadline, ack_ids,
                   {"ack_deadline_seconds": seconds}, "modify ack deadline")

    def _call(self, method: Any, ack_ids: Sequence[str], extra: dict[str, Any],
              doing: str) -> None:
        for i in range(0, len(ack_ids), _ACK_CHUNK):
            request = {"subscription": self.path, "ack_ids": list(ack_ids[i:i + _ACK_CHUNK])}
            try:
                method(request={**request, **extra})
            except gexc.GoogleAPIError as exc:
                raise _translate(exc, f"{doing} on {self.subscription}") from exc

    def close(self) -> None:
        self._client.close()


def _translate(exc: gexc.GoogleAPIError, doing: str) -> OutboxError:
    text = f"{doing}: {getattr(exc, 'message', '') or exc}"
    if isinstance(exc, gexc.NotFound | gexc.PermissionDenied | gexc.Unauthenticated):
        return ConfigError(text)
    if isinstance(exc, gexc.ServerError | gexc.TooManyRequests | gexc.RetryError
                  | gexc.Aborted | gexc.Cancelled | gexc.DeadlineExceeded):
        return TransientError(text)
    return PermanentError(text)


def release(source: DeadLetterSource, ack_ids: Sequence[str]) -> None:
    """Make leased messages deliverable now. Called from ``finally``, so it must not mask
    the error in flight; if it fails, the leases just run out on their own."""
    try:
        if ack_ids:
            source.lease(ack_ids, 0)
    except OutboxError as exc:
        log.warning("could not release %d messages; they come back when their lease ends: %s",
                    len(ack_ids), exc)


def peek(source: DeadLetterSource, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` messages, consuming none: all pulled is released at the end.

    A message seen twice (its lease ran out meanwhile) is shown once.
    """
    found: dict[str, DeadLetter] = {}
    held: list[str] = []
    try:
        while len(found) < limit:
            batch = source.pull(min(100, limit - len(found)))
            held += [d.ack_id for d in batch]
            new = [d for d in batch if d.message_id not in found]
            if not new:
                break
            found.update((d.message_id, d) for d in new)
    finally:
        release(source, held)
    return list(found.values())


@dataclass
class RedriveSummary:
    """What a run did. Everything but ``redriven`` is still in the DLQ."""

    redrive_id: str
    dry_run: bool = False
    redriven: int = 0  # re-published and acked (--dry-run: would be re-published)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)  # publish refused
    unacked: list[tuple[DeadLetter, str]] = field(default_factory=list)
    """Re-published, but the ack failed: the next run publishes it again (a duplicate)."""
    not_matching: int = 0
    other_topic: int = 0  # dead-lettered from a subscription of another topic
    came_back: int = 0  # re-driven by this very run and dead-lettered again: still failing
    seconds: float = 0.0
    stopped: bool = False  # stop() was asked between batches
    selected: list[DeadLetter] = field(default_factory=list)  # --dry-run: what would go

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unacked


class Redriver:
    """Pulls batches from the DLQ and re-publishes the selected messages to ``topic``.

    ``topic_of`` names the topic of a letter's source subscription (None if
    unknown). A letter from a subscription of another topic is left alone:
    re-published to ``topic`` it would reach the wrong consumers. So is one
    this run re-drove that came back: re-driving it again would only loop.
    """

    def __init__(self, source: DeadLetterSource, publisher: Publisher, topic: str, *,
                 filters: Filters | None = None, limit: int | None = None,
                 batch_size: int = 100, dry_run: bool = False,
                 topic_of: Callable[[DeadLetter], str | None] = lambda d: None,
                 redrive_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source, self.publisher, self.topic = source, publisher, topic
        self.filters, self.limit, self.batch_size = filters or {}, limit, batch_size
        self.dry_run, self.topic_of, self.clock = dry_run, topic_of, clock
        self.summary = RedriveSummary(redrive_id or uuid.uuid4().hex[:12], dry_run)
        """Live counts; still readable after :meth:`run` raised."""

    def run(self, on_batch: Callable[[RedriveSummary], None] = lambda s: None,
            stop: Callable[[], bool] = lambda: False) -> RedriveSummary:
        """Re-drive until a pull brings nothing new, ``limit`` is reached or ``stop()``.

        ``stop`` is asked between batches, so a stop never splits a batch.
        """
        s, start = self.summary, self.clock()
        done: set[str] = set()  # message ids re-published and acked by this run
        held: dict[str, str] = {}  # message id -> ack id: leased, not acked; released at the end
        try:
            while self.limit is None or s.redriven < self.limit:
                if stop():
                    s.stopped = True
                    break
                left = self.batch_size if self.limit is None else self.limit - s.redriven
                batch = self.source.pull(min(self.batch_size, left))
                again = [d.ack_id for d in batch if d.message_id in done]
                if again:  # our ack got lost; it was re-published already: ack it again
                    self.source.ack(again)
                new = [d for d in batch if d.message_id not in done]
                fresh = [d for d in new if d.message_id not in held]
                held.update((d.message_id, d.ack_id) for d in new)  # the newest ack id wins
                if not fresh:
                    break
                self.source.lease([d.ack_id for d in fresh], LEASE_SECONDS)
                self._batch(fresh, held, done)
                s.seconds = self.clock() - start
                on_batch(s)
        finally:
            s.seconds = self.clock() - start
            release(self.source, list(held.values()))
        return s

    def _batch(self, letters: list[DeadLetter], held: dict[str, str], done: set[str]) -> None:
        s, chosen = self.summary, []
        for d in letters:
            if not d.matches(self.filters):
                s.not_matching += 1
            elif d.attributes.get("redrive_id") == s.redrive_id:
                s.came_back += 1
            elif self.topic_of(d) not in (None, self.topic):
                s.other_topic += 1
            else:
                chosen.append(d)
        if self.dry_run:
            s.redriven += len(chosen)
            s.selected += chosen
            return
        if not chosen:
            return
        outcomes = self.publisher.publish(
            self.topic, [redrive_message(d, s.redrive_id) for d in chosen])
        pairs = list(zip(chosen, outcomes, strict=True))
        sent = [d for d, o in pairs if o.ok]
        s.failed += [(d, str(o.error)) for d, o in pairs if not o.ok]
        try:
            self.source.ack([d.ack_id for d in sent])
        except OutboxError as exc:
            s.unacked += [(d, str(exc)) for d in sent]
            return
        for d in sent:
            done.add(d.message_id)
            del held[d.message_id]
        s.redriven += len(sent)
