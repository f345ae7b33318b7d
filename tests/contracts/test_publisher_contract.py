"""The contract every :class:`~outbox.ports.Publisher` must pass.

One suite, run against each implementation through a small per-implementation
backend that creates topics and reads back what arrived: the in-memory double
reads ``publisher.sent``; the Pub/Sub adapter runs against Google's emulator,
with a pull subscription per topic. A double that diverges from the real
adapter fails here.

The second half unit-tests the adapter's error translation without a network.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as pub_exc

from outbox.errors import (
    ConfigError,
    InvalidMessage,
    OutboxError,
    PermanentError,
    TransientError,
)
from outbox.ports import Message, Publisher
from outbox.pubsub_publisher import PubSubPublisher, translate_error
from outbox.testing import InMemoryPublisher


@dataclass(frozen=True)
class Received:
    message_id: str
    data: bytes
    attributes: dict[str, str]


class Backend(Protocol):
    publisher: Publisher

    def new_topic(self) -> str:
        """Create a topic (with a reader attached) and return its short id."""
        ...

    def received(self, topic: str, count: int) -> list[Received]:
        """Everything that arrived on ``topic``, waiting for up to ``count``."""
        ...


def unique(prefix: str = "contract") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class MemoryBackend:
    def __init__(self) -> None:
        self.publisher = InMemoryPublisher(topics=())

    def new_topic(self) -> str:
        name = unique()
        self.publisher.topics.add(name)
        return name

    def received(self, topic: str, count: int) -> list[Received]:
        return [
            Received(s.message_id, s.message.data, dict(s.message.attributes))
            for s in self.publisher.sent
            if s.topic == topic
        ]

    def close(self) -> None:
        self.publisher.close()


class EmulatorBackend:
    """Real topics and pull subscriptions on Google's Pub/Sub emulator."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.admin = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = PubSubPublisher(project, timeout=30)
        self.subscriptions: dict[str, str] = {}

    def new_topic(self) -> str:
        name = unique()
        topic_path = self.admin.topic_path(self.project, name)
        self.admin.create_topic(name=topic_path)
        sub = self.subscriber.subscription_path(self.project, f"{name}-sub")
        self.subscriber.create_subscription(name=sub, topic=topic_path, ack_deadline_seconds=60)
        self.subscriptions[name] = sub
        return name

    def _pull(self, sub: str, immediately: bool) -> list[Received]:
        response = self.subscriber.pull(
            request={"subscription": sub, "max_messages": 1000, "return_immediately": immediately},
            timeout=10,
        )
        got = response.received_messages
        if got:
            self.subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in got])
        return [
            Received(m.message.message_id, m.message.data, dict(m.message.attributes)) for m in got
        ]

    def received(self, topic: str, count: int) -> list[Received]:
        sub = self.subscriptions[topic]
        out: list[Received] = []
        deadline = time.monotonic() + 20
        while len(out) < count and time.monotonic() < deadline:
            out += self._pull(sub, immediately=False)
        out += self._pull(sub, immediately=True)  # anything beyond what was expected
        return out

    def close(self) -> None:
        self.publisher.close()
        for name, sub in self.subscriptions.items():
            self.subscriber.delete_subscription(subscription=sub)
            self.admin.delete_topic(topic=self.admin.topic_path(self.project, name))
        self.subscriber.close()
        self.admin.stop()


@pytest.fixture(params=[pytest.param("memory"), pytest.param("pubsub", marks=pytest.mark.emulator)])
def backend(request: pytest.FixtureRequest) -> Iterator[MemoryBackend | EmulatorBackend]:
    impl: MemoryBackend | EmulatorBackend
    if request.param == "memory":
        impl = MemoryBackend()
    else:
        emulator = request.getfixturevalue("pubsub_emulator")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
            impl = EmulatorBackend(emulator.project)
    yield impl
    impl.close()


@pytest.fixture
def publisher(backend: Backend) -> Publisher:
    return backend.publisher


def msg(key: str, data: bytes | None = None, **attributes: str) -> Message:
    return Message(key, data if data is not None else f"body of {key}".encode(), attributes)


def test_each_message_gets_a_distinct_id_and_outcomes_keep_input_order(
    backend: Backend, publisher: Publisher
) -> None:
    topic = backend.new_topic()
    messages = [msg(f"k{i}", execution_id=f"k{i}") for i in range(5)]
    outcomes = publisher.publish(topic, messages)
    assert [o.key for o in outcomes] == [m.key for m in messages]
    assert all(o.ok and o.message_id for o in outcomes), outcomes
    assert len({o.message_id for o in outcomes}) == len(messages)


def test_messages_arrive_with_the_same_data_and_attributes(
    backend: Backend, publisher: Publisher
) -> None:
    topic = backend.new_topic()
    messages = [
        msg("a", b'{"x":1}', scraper_name="bdl_games_scraper", status="success"),
        msg("b", "é ünicode".encode(), status="failed", execution_id="b"),
        msg("c", b"", only="attributes"),
    ]
    outcomes = publisher.publish(topic, messages)
    sent = {o.message_id: m for o, m in zip(outcomes, messages, strict=True)}
    got = backend.received(topic, len(messages))
    assert {r.message_id: (r.data, r.attributes) for r in got} == {
        mid: (m.data, dict(m.attributes)) for mid, m in sent.items()
    }


def test_publishing_nothing_returns_nothing(backend: Backend, publisher: Publisher) -> None:
    topic = backend.new_topic()
    assert publisher.publish(topic, []) == []
    assert backend.received(topic, 0) == []


def test_an_unknown_topic_raises_config_error(publisher: Publisher) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        publisher.publish(unique("no-such-topic"), [msg("a")])


def test_republishing_creates_a_second_message(backend: Backend, publisher: Publisher) -> None:
    """Not idempotent: Pub/Sub cannot spot the duplicate, so consumers dedupe on the key."""
    topic = backend.new_topic()
    first = publisher.publish(topic, [msg("dup", execution_id="dup")])
    second = publisher.publish(topic, [msg("dup", execution_id="dup")])
    assert first[0].ok and second[0].ok
    assert first[0].message_id != second[0].message_id
    got = backend.received(topic, 2)
    assert sorted(r.message_id for r in got) == sorted(
        [str(first[0].message_id), str(second[0].message_id)]
    )
    assert {r.attributes["execution_id"] for r in got} == {"dup"}


def test_a_thousand_messages_in_one_call_all_succeed(
    backend: Backend, publisher: Publisher
) -> None:
    topic = backend.new_topic()
    messages = [msg(f"m{i:04}", b"x" * 400, execution_id=f"m{i:04}") for i in range(1000)]
    outcomes = publisher.publish(topic, messages)
    assert [o.key for o in outcomes] == [m.key for m in messages]
    assert all(o.ok for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 1000
    got = backend.received(topic, 1000)
    assert sorted(r.attributes["execution_id"] for r in got) == [m.key for m in messages]


def test_an_empty_attribute_value_is_accepted(backend: Backend, publisher: Publisher) -> None:
    """The v1 contract sends ``workflow=""`` when the column is NULL."""
    topic = backend.new_topic()
    [outcome] = publisher.publish(topic, [msg("w", workflow="", status="success")])
    assert outcome.ok
    [got] = backend.received(topic, 1)
    assert got.attributes == {"workflow": "", "status": "success"}


def test_a_message_pubsub_would_refuse_fails_alone(
    request: pytest.FixtureRequest, backend: Backend, publisher: Publisher
) -> None:
    """No poison batches: Pub/Sub fails a whole request for one empty message."""
    topic = backend.new_topic()
    outcomes = publisher.publish(topic, [msg("ok1"), Message("empty", b""), msg("ok2")])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1].error, PermanentError)
    assert len(backend.received(topic, 2)) == 2


# -- PubSubPublisher without a network ---------------------------------------


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped here
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (gexc.ServiceUnavailable("down"), TransientError),
        (gexc.DeadlineExceeded("slow"), TransientError),
        (gexc.InternalServerError("oops"), TransientError),
        (gexc.Aborted("aborted"), TransientError),
        (gexc.ResourceExhausted("quota"), TransientError),
        (gexc.Unknown("?"), TransientError),
        (gexc.Cancelled("cancelled"), TransientError),
        (gexc.TooManyRequests("429"), TransientError),
        (gexc.BadGateway("502"), TransientError),
        (
            gexc.RetryError("Timeout of 60.0s exceeded", gexc.ServiceUnavailable("x")),
            TransientError,
        ),
        (concurrent.futures.TimeoutError(), TransientError),
        (pub_exc.PublishError("Some messages were not successfully published."), TransientError),
        (pub_exc.FlowControlLimitError(), TransientError),
        (auth_exc.TransportError("token endpoint unreachable"), TransientError),
        (FakeRpcError(grpc.StatusCode.UNAVAILABLE), TransientError),
        (gexc.InvalidArgument("Some messages are empty"), InvalidMessage),
        (pub_exc.MessageTooLargeError("too large"), InvalidMessage),
        (TypeError("attributes must be text"), InvalidMessage),
        (gexc.FailedPrecondition("no"), PermanentError),
        (gexc.MethodNotImplemented("no"), PermanentError),
        (gexc.AlreadyExists("no"), PermanentError),
        (FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT), InvalidMessage),
        (RuntimeError("a bug"), PermanentError),
        (gexc.NotFound("Topic not found"), ConfigError),
        (gexc.PermissionDenied("no pubsub.topics.publish"), ConfigError),
        (gexc.Unauthenticated("bad token"), ConfigError),
        (auth_exc.RefreshError("expired key"), ConfigError),
        (FakeRpcError(grpc.StatusCode.NOT_FOUND), ConfigError),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else type(v).__name__,
)
def test_translate_error(exc: BaseException, expected: type[OutboxError]) -> None:
    err = translate_error(exc, "projects/p/topics/t")
    assert type(err) is expected
    assert not (expected is TransientError and isinstance(err, PermanentError))
    if not isinstance(exc, FakeRpcError):
        assert err.__cause__ is exc


def test_translate_error_names_a_missing_topic() -> None:
    err = translate_error(gexc.NotFound("Topic not found"), "projects/p/topics/t")
    assert str(err) == "Pub/Sub topic projects/p/topics/t does not exist"


def test_translate_error_passes_project_errors_through() -> None:
    err = TransientError("already ours")
    assert translate_error(err) is err


class FakeClient:
    """Stands in for ``PublisherClient``: each publish returns a scripted future."""

    def __init__(self, script: list[BaseException | str | None]) -> None:
        self.script = script
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.stops = 0

    def topic_path(self, project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, **kwargs: Any) -> concurrent.futures.Future[str]:
        self.sent.append((topic, data, kwargs))
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        result = self.script.pop(0)
        if isinstance(result, BaseException):
            future.set_exception(result)
        elif result is not None:  # None: never completes
            future.set_result(result)
        return future

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise RuntimeError("Cannot stop a publisher already stopped.")


def test_permission_denied_raises_instead_of_failing_each_message() -> None:
    client = FakeClient(["1", gexc.PermissionDenied("denied")])
    with pytest.raises(ConfigError, match="projects/p/topics/t"):
        PubSubPublisher("p", client).publish("t", [msg("a"), msg("b")])


def test_an_unresolved_future_is_transient_after_the_timeout() -> None:
    client = FakeClient(["1", None, gexc.ServiceUnavailable("down")])
    started = time.monotonic()
    outcomes = PubSubPublisher("p", client, timeout=0.2).publish(
        "t", [msg("a"), msg("b"), msg("c")]
    )
    assert time.monotonic() - started < 2
    assert outcomes[0].message_id == "1"
    assert isinstance(outcomes[1].error, TransientError)
    assert isinstance(outcomes[2].error, TransientError)


def test_reserved_attribute_names_are_refused_before_sending() -> None:
    client = FakeClient(["1"])
    outcomes = PubSubPublisher("p", client).publish("t", [msg("a", retry="3"), msg("b")])
    assert isinstance(outcomes[0].error, InvalidMessage)
    assert outcomes[1].message_id == "1"
    assert [data for _, data, _ in client.sent] == [b"body of b"]


def test_the_bounded_retry_and_timeout_go_with_every_publish() -> None:
    client = FakeClient(["1"])
    PubSubPublisher("p", client, timeout=7).publish("t", [msg("a", status="ok")])
    [(topic, _, kwargs)] = client.sent
    assert topic == "projects/p/topics/t"
    assert kwargs["timeout"] == 7
    assert kwargs["retry"].timeout == 7
    assert kwargs["status"] == "ok"


def test_close_stops_the_client_once_and_refuses_further_publishes() -> None:
    client = FakeClient([])
    publisher = PubSubPublisher("p", client)
    publisher.close()
    publisher.close()
    assert client.stops == 1
    with pytest.raises(RuntimeError):
        publisher.publish("t", [msg("a")])
