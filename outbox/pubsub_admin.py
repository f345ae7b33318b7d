"""Creating, reading and updating topics and subscriptions.

``ensure_topics`` creates topics only; :class:`PubSubAdmin` is what
``outbox infra`` uses: it reads a resource back as a plain state object, the
only thing the plan compares, and writes one with an update mask, so an update
touches exactly the fields that differ.

What Google's Pub/Sub emulator stores (checked against the one in the Cloud
SDK): a topic's ``message_retention_duration``; a subscription's ack deadline,
retention, push endpoint *and* OIDC token, dead-letter policy, retry policy,
filter and an explicit expiration policy, all read back exactly as written.
It refuses to *update* ``expiration_policy`` and ``filter`` (400 "currently
unsupported in the Pub/Sub Emulator"), and a subscription created without an
expiration policy reads back with none, where the real service reports its
31-day default; :func:`subscription_state` maps that absence to the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from outbox.errors import ConfigError, OutboxError, PermanentError, TransientError

DEFAULT_EXPIRATION_TTL_S = 31 * 86_400
"""What the real service applies to a subscription created without an expiration policy."""
NEVER = 0
"""``expiration_ttl_seconds`` of a subscription that never expires."""


def ensure_topics(
    project: str, topics: Iterable[str], client: pubsub_v1.PublisherClient | None = None
) -> list[tuple[str, bool]]:
    """Create missing topics; return (topic, created) pairs."""
    client = client or pubsub_v1.PublisherClient()
    out = []
    for topic in topics:
        path = client.topic_path(project, topic)
        try:
            client.create_topic(request={"name": path})
            out.append((topic, True))
        except gexc.AlreadyExists:
            out.append((topic, False))
    return out


@dataclass(frozen=True)
class TopicState:
    """A topic as the plan compares it. In a desired state, None means "not managed"."""

    name: str
    message_retention_seconds: int | None = None
    """0: the topic keeps no acknowledged messages (the API's unset)."""


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription as the plan compares it.

    Read back, every field is set ("" and 0 stand for the API's unset). In a
    desired state, None means "not managed": the plan ignores the field and an
    update carries the current value over.
    """

    name: str
    topic: str | None = None
    """Short topic name, or ``_deleted-topic_``."""
    ack_deadline_seconds: int | None = None
    message_retention_seconds: int | None = None
    push_endpoint: str | None = None
    """"" for a pull subscription."""
    oidc_service_account: str | None = None
    oidc_audience: str | None = None
    dead_letter_topic: str | None = None
    """Full path ``projects/P/topics/T``; "" for none."""
    max_delivery_attempts: int | None = None
    retry_min_backoff_seconds: int | None = None
    """0 (and max 0): no retry policy, i.e. immediate redelivery."""
    retry_max_backoff_seconds: int | None = None
    expiration_ttl_seconds: int | None = None
    """:data:`NEVER` (0) for a subscription that never expires."""
    filter: str | None = None


TOPIC_FIELDS = {"message_retention_seconds": "message_retention_duration"}
SUBSCRIPTION_FIELDS = {  # state field -> its name in the API; before the dot: the mask path
    "topic": "topic",
    "ack_deadline_seconds": "ack_deadline_seconds",
    "message_retention_seconds": "message_retention_duration",
    "push_endpoint": "push_config.push_endpoint",
    "oidc_service_account": "push_config.oidc_token.service_account_email",
    "oidc_audience": "push_config.oidc_token.audience",
    "dead_letter_topic": "dead_letter_policy.dead_letter_topic",
    "max_delivery_attempts": "dead_letter_policy.max_delivery_attempts",
    "retry_min_backoff_seconds": "retry_policy.minimum_backoff",
    "retry_max_backoff_seconds": "retry_policy.maximum_backoff",
    "expiration_ttl_seconds": "expiration_policy.ttl",
    "filter": "filter",
}
IMMUTABLE_FIELDS = frozenset({"topic", "filter"})
"""No update mask changes these; the subscription must be deleted and created again."""


def merged(desired: SubscriptionState, actual: SubscriptionState) -> SubscriptionState:
    """What an update sends: the desired value of each managed field, the current one otherwise.

    A mask path such as ``push_config`` replaces the whole sub-message, so its
    unmanaged parts (an OIDC token nobody asked to change) must be sent too.
    """
    managed = {f.name: getattr(desired, f.name) for f in dataclasses.fields(desired)
               if getattr(desired, f.name) is not None}
    return dataclasses.replace(actual, **managed)


Difference = tuple[str, str, str, str | None]
"""(field, current, desired, the update-mask path that fixes it or None if none can)."""


def differences(desired: TopicState | SubscriptionState,
                actual: TopicState | SubscriptionState | None) -> list[Difference]:
    """Managed (non-None) fields of ``desired`` that differ from ``actual``; all of them
    when there is no ``actual`` (what a create will set)."""
    names = TOPIC_FIELDS if isinstance(desired, TopicState) else SUBSCRIPTION_FIELDS
    out: list[Difference] = []
    for attr, api_name in names.items():
        want = getattr(desired, attr)
        have = getattr(actual, attr) if actual is not None else None
        if want is None or (actual is not None and want == have):
            continue
        mask = None if attr in IMMUTABLE_FIELDS else api_name.split(".")[0]
        out.append((api_name, show(attr, have), show(attr, want), mask))
    return out


def show(attr: str, value: object) -> str:
    """A state value as an operator reads it: durations in s/h/d, unset as none/never/pull."""
    if value is None:
        return "-"
    if attr.endswith("_seconds") and isinstance(value, int):
        if value == 0:
            return "never" if attr.startswith("expiration") else "none"
        for unit, size in (("d", 86_400), ("h", 3_600)):
            if value % size == 0:
                return f"{value // size} {unit}"
        return f"{value} s"
    if value == "":
        return "pull" if attr == "push_endpoint" else "none"
    if attr == "dead_letter_topic" and isinstance(value, str):
        return value.rsplit("/", 1)[-1]
    return str(value)


def _seconds(duration: Any) -> int:
    """proto-plus hands Durations over as ``timedelta``; whole seconds are what we set."""
    return int(duration.total_seconds()) if duration is not None else 0


def topic_state(topic: Any) -> TopicState:
    return TopicState(
        name=topic.name.rsplit("/", 1)[-1],
        message_retention_seconds=_seconds(topic.message_retention_duration),
    )


def subscription_state(sub: Any) -> SubscriptionState:
    push, oidc = sub.push_config, sub.push_config.oidc_token
    retry = sub.retry_policy if "retry_policy" in sub else None
    if "expiration_policy" not in sub:  # the emulator's default; the real service's is 31 d
        ttl = DEFAULT_EXPIRATION_TTL_S
    else:
        ttl = _seconds(sub.expiration_policy.ttl) if "ttl" in sub.expiration_policy else NEVER
    return SubscriptionState(
        name=sub.name.rsplit("/", 1)[-1],
        topic=sub.topic.rsplit("/", 1)[-1],
        ack_deadline_seconds=int(sub.ack_deadline_seconds),
        message_retention_seconds=_seconds(sub.message_retention_duration),
        push_endpoint=push.push_endpoint,
        oidc_service_account=oidc.service_account_email,
        oidc_audience=oidc.audience,
        dead_letter_topic=sub.dead_letter_policy.dead_letter_topic,
        max_delivery_attempts=int(sub.dead_letter_policy.max_delivery_attempts),
        retry_min_backoff_seconds=_seconds(retry.minimum_backoff) if retry else 0,
        retry_max_backoff_seconds=_seconds(retry.maximum_backoff) if retry else 0,
        expiration_ttl_seconds=ttl,
        filter=sub.filter,
    )


def _duration(seconds: int) -> dict[str, int]:
    return {"seconds": seconds}


def subscription_fields(project: str, s: SubscriptionState) -> dict[str, Any]:
    """The Subscription message's fields for ``s``; unmanaged (None) fields are left out."""
    out: dict[str, Any] = {"name": f"projects/{project}/subscriptions/{s.name}"}
    if s.topic is not None:
        out["topic"] = f"projects/{project}/topics/{s.topic}"
    if s.ack_deadline_seconds is not None:
        out["ack_deadline_seconds"] = s.ack_deadline_seconds
    if s.message_retention_seconds is not None:
        out["message_retention_duration"] = _duration(s.message_retention_seconds)
    if s.push_endpoint is not None:
        push: dict[str, Any] = {"push_endpoint": s.push_endpoint}
        if s.push_endpoint and s.oidc_service_account:
            push["oidc_token"] = {"service_account_email": s.oidc_service_account,
                                  "audience": s.oidc_audience or ""}
        out["push_config"] = push
    if s.dead_letter_topic:
        out["dead_letter_policy"] = {"dead_letter_topic": s.dead_letter_topic}
        if s.max_delivery_attempts:
            out["dead_letter_policy"]["max_delivery_attempts"] = s.max_delivery_attempts
    if s.retry_min_backoff_seconds or s.retry_max_backoff_seconds:
        out["retry_policy"] = {
            key: _duration(value)
            for key, value in (("minimum_backoff", s.retry_min_backoff_seconds),
                               ("maximum_backoff", s.retry_max_backoff_seconds))
            if value
        }
    if s.expiration_ttl_seconds is not None:
        ttl = s.expiration_ttl_seconds
        out["expiration_policy"] = {"ttl": _duration(ttl)} if ttl else {}
    if s.filter:
        out["filter"] = s.filter
    return out


class PubSubAdmin:
    """Topic and subscription admin for one project.

    The clients honour ``PUBSUB_EMULATOR_HOST`` themselves, as the publisher
    does. Errors become the project's: NotFound on read is None, a refused
    write is a :class:`PermanentError` naming the resource.
    """

    def __init__(self, project: str) -> None:
        self.project = project
        self._publisher = pubsub_v1.PublisherClient()
        self._subscriber = pubsub_v1.SubscriberClient()

    def close(self) -> None:
        self._subscriber.close()
        self._publisher.transport.close()

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def get_topic(self, name: str) -> TopicState | None:
        try:
            return topic_state(self._publisher.get_topic(request={"topic": self.topic_path(name)}))
        except gexc.NotFound:
            return None
        except gexc.GoogleAPIError as exc:
            raise _translate(exc, f"read topic {name}") from exc

    def get_subscription(self, name: str) -> SubscriptionState | None:
        path = f"projects/{self.project}/subscriptions/{name}"
        try:
            return subscription_state(
                self._subscriber.get_subscription(request={"subscription": path}))
        except gexc.NotFound:
            return None
        except gexc.GoogleAPIError as exc:
            raise _translate(exc, f"read subscription {name}") from exc

    def create_topic(self, t: TopicState) -> bool:
        """Create ``t``; False if it already exists (created meanwhile by someone else)."""
        request: dict[str, Any] = {"name": self.topic_path(t.name)}
        if t.message_retention_seconds:
            request["message_retention_duration"] = _duration(t.message_retention_seconds)
        return self._call(self._publisher.create_topic, request, f"create topic {t.name}")

    def update_topic(self, t: TopicState, paths: Sequence[str]) -> None:
        topic: dict[str, Any] = {"name": self.topic_path(t.name)}
        if t.message_retention_seconds:
            topic["message_retention_duration"] = _duration(t.message_retention_seconds)
        self._call(self._publisher.update_topic,
                   {"topic": topic, "update_mask": {"paths": list(paths)}},
                   f"update topic {t.name}")

    def create_subscription(self, s: SubscriptionState) -> bool:
        return self._call(self._subscriber.create_subscription,
                          subscription_fields(self.project, s), f"create subscription {s.name}")

    def update_subscription(self, s: SubscriptionState, paths: Sequence[str]) -> None:
        self._call(self._subscriber.update_subscription,
                   {"subscription": subscription_fields(self.project, s),
                    "update_mask": {"paths": list(paths)}},
                   f"update subscription {s.name}")

    @staticmethod
    def _call(method: Any, request: dict[str, Any], doing: str) -> bool:
        try:
            method(request=request)
        except gexc.AlreadyExists:
            return False
        except gexc.GoogleAPIError as exc:
            raise _translate(exc, doing) from exc
        return True


def _translate(exc: gexc.GoogleAPIError, doing: str) -> OutboxError:
    """RetryError (the client gave up, e.g. on an unreachable emulator) is transient too."""
    text = str(getattr(exc, "message", "") or exc)
    if isinstance(exc, (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
                        gexc.RetryError)):
        return TransientError(f"{doing}: {text}")
    if isinstance(exc, (gexc.InvalidArgument, gexc.NotFound)):
        return ConfigError(f"{doing}: {text}")
    return PermanentError(f"{doing}: {text}")
