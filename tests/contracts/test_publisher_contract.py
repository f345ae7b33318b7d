"""The contract every :class:`~outbox.ports.Publisher` must pass.

One suite, run against each implementation through a small per-implementation
backend that creates topics and reads back what arrived: the in-memory double
reads ``publisher.sent``; the Pub/Sub adapter runs against Google's emulator,
with a pull subscription per topic. A double that diverges from the real
adapter fails here.

The second half unit-tests the adapter without a network: its error
translation, and its requests, retries and timeouts against a fake GAPIC layer.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as pub_exc
from google.pubsub_v1.types import PublishRequest
from tenacity import wait_fixed

from outbox.errors import (
    ConfigError,
    InvalidMessage,
    OutboxError,
    PermanentError,
    TransientError,
)
from outbox.ports import Message, Publisher
from outbox.pubsub_publisher import DEFAULT_MAX_BYTES, PubSubPublisher, translate_error
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


def test_attribute_names_like_client_parameters_arrive_intact(
    backend: Backend, publisher: Publisher
) -> None:
    """Attributes are a map in the Publish RPC: "timeout" is just a name."""
    topic = backend.new_topic()
    attributes = {"timeout": "5", "retry": "no", "data": "x", "topic": "t"}
    [outcome] = publisher.publish(topic, [Message("t", b"body", attributes)])
    assert outcome.ok, outcome
    [got] = backend.received(topic, 1)
    assert got.attributes == attributes


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


Step = BaseException | threading.Event
"""What the fake does on one call: raise the error, or wait for the event first."""


@dataclass
class Call:
    request: Any  # the raw PublishRequest protobuf
    retry: Any
    timeout: float
    thread: threading.Thread


class FakeApi:
    """Stands in for the GAPIC layer: ``publish(request=..., retry=..., timeout=...)``.

    Requests are told apart by their first message's data, since the pool sends
    them concurrently: ``steps[data]`` lists what successive calls for that
    request do; once used up (or when absent), a call succeeds with the ids
    ``"id:" + data`` of its messages.
    """

    def __init__(self, steps: dict[bytes, list[Step]] | None = None) -> None:
        self.steps = steps or {}
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def publish(self, *, request: Any, retry: Any, timeout: float) -> SimpleNamespace:
        pb = PublishRequest.pb(request)
        with self._lock:
            self.calls.append(Call(pb, retry, timeout, threading.current_thread()))
            todo = self.steps.get(pb.messages[0].data, [])
            step = todo.pop(0) if todo else None
        if isinstance(step, threading.Event):
            step.wait(10)
        elif step is not None:
            raise step
        return SimpleNamespace(message_ids=[f"id:{m.data.decode()}" for m in pb.messages])

    def calls_for(self, data: bytes) -> list[Call]:
        return [c for c in self.calls if c.request.messages[0].data == data]


class FakeClient:
    """Stands in for ``PublisherClient``: ``topic_path``, ``api`` and ``stop``."""

    def __init__(self, steps: dict[bytes, list[Step]] | None = None) -> None:
        self.api = FakeApi(steps)
        self.stops = 0

    def topic_path(self, project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise RuntimeError("Cannot stop a publisher already stopped.")


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., PubSubPublisher]]:
    """Builds publishers on a fake client that do not sleep between attempts."""
    made: list[PubSubPublisher] = []

    def make(client: FakeClient, **kwargs: Any) -> PubSubPublisher:
        kwargs.setdefault("retry_wait", wait_fixed(0.01))
        made.append(PubSubPublisher("p", client, **kwargs))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()


def test_a_transient_error_is_retried_and_then_succeeds(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    client = FakeClient({b"body of a": [gexc.ServiceUnavailable("down")]})
    outcomes = make_publisher(client, timeout=7).publish("t", [msg("a"), msg("b")])
    assert [o.message_id for o in outcomes] == ["id:body of a", "id:body of b"]
    calls = client.api.calls
    assert len(calls) == 2
    assert calls[0].request == calls[1].request
    assert all(c.request.topic == "projects/p/topics/t" for c in calls)
    # The library must not retry underneath, and no attempt may outlast the call.
    assert all(c.retry is None and 0 < c.timeout <= 7 for c in calls)


def test_a_permanent_error_fails_its_request_and_is_not_retried(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    client = FakeClient({b"body of a": [gexc.InvalidArgument("Some messages are empty")]})
    publisher = make_publisher(client, max_messages=2)
    outcomes = publisher.publish("t", [msg("a"), msg("b"), msg("c")])
    assert [type(o.error) for o in outcomes] == [InvalidMessage, InvalidMessage, type(None)]
    assert outcomes[2].message_id == "id:body of c"
    assert len(client.api.calls_for(b"body of a")) == 1


def test_transient_errors_are_retried_only_until_the_timeout(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    client = FakeClient({b"body of a": [gexc.ServiceUnavailable("down")] * 1000})
    started = time.monotonic()
    [outcome] = make_publisher(client, timeout=0.3).publish("t", [msg("a")])
    assert time.monotonic() - started < 1.5
    assert isinstance(outcome.error, TransientError)
    assert isinstance(outcome.error.__cause__, gexc.ServiceUnavailable)
    assert 2 <= len(client.api.calls) < 1000


def test_permission_denied_raises_instead_of_failing_each_message(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    client = FakeClient({b"body of b": [gexc.PermissionDenied("denied")]})
    publisher = make_publisher(client, max_messages=1)
    with pytest.raises(ConfigError, match="projects/p/topics/t"):
        publisher.publish("t", [msg("a"), msg("b"), msg("c")])
    assert len(client.api.calls_for(b"body of b")) == 1
    assert len(client.api.calls) == 3  # the other requests still ran to the end


def test_a_request_without_an_answer_is_transient_after_the_timeout(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    hang = threading.Event()
    client = FakeClient({b"body of b": [hang]})
    publisher = make_publisher(client, max_messages=1, timeout=0.2)
    started = time.monotonic()
    try:
        outcomes = publisher.publish("t", [msg("a"), msg("b"), msg("c")])
    finally:
        hang.set()
    assert time.monotonic() - started < 2
    assert outcomes[0].message_id == "id:body of a"
    assert isinstance(outcomes[1].error, TransientError)
    assert outcomes[2].message_id == "id:body of c"


@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_BYTES, 100_000])
def test_a_large_call_is_split_into_bounded_requests_in_input_order(
    make_publisher: Callable[..., PubSubPublisher], max_bytes: int
) -> None:
    client = FakeClient()
    messages = [msg(f"k{i:04}", f"{i:04}".encode() * 50, n=str(i)) for i in range(2500)]
    outcomes = make_publisher(client, max_bytes=max_bytes).publish("t", messages)
    assert [o.key for o in outcomes] == [m.key for m in messages]
    assert [o.message_id for o in outcomes] == [f"id:{m.data.decode()}" for m in messages]
    requests = sorted((c.request for c in client.api.calls), key=lambda r: r.messages[0].data)
    assert all(len(r.messages) <= 1000 and r.ByteSize() <= max_bytes for r in requests)
    if max_bytes == DEFAULT_MAX_BYTES:
        assert [len(r.messages) for r in requests] == [1000, 1000, 500]
    else:
        assert len(requests) > 3  # split by size: each request full up to one message
        assert all(r.ByteSize() > max_bytes - r.messages[0].ByteSize() - 3 for r in requests[:-1])
    sent = [(m.data, dict(m.attributes)) for r in requests for m in r.messages]
    assert sent == [(m.data, dict(m.attributes)) for m in messages]


def test_an_invalid_message_is_never_sent(make_publisher: Callable[..., PubSubPublisher]) -> None:
    client = FakeClient()
    outcomes = make_publisher(client).publish(
        "t", [msg("a"), Message("empty", b""), msg("b", goog_x="reserved prefix")]
    )
    assert outcomes[0].message_id == "id:body of a"
    assert isinstance(outcomes[1].error, InvalidMessage)
    assert isinstance(outcomes[2].error, InvalidMessage)
    [call] = client.api.calls
    assert [m.data for m in call.request.messages] == [b"body of a"]


def test_close_stops_the_pool_and_the_client_once_and_refuses_further_publishes(
    make_publisher: Callable[..., PubSubPublisher],
) -> None:
    client = FakeClient()
    publisher = make_publisher(client, max_messages=1)
    publisher.publish("t", [msg("a"), msg("b"), msg("c")])
    threads = {c.thread for c in client.api.calls}
    publisher.close()
    publisher.close()
    assert client.stops == 1
    assert not any(t.is_alive() for t in threads)  # the pool's workers have exited
    with pytest.raises(RuntimeError):
        publisher.publish("t", [msg("a")])
