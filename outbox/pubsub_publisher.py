"""The Pub/Sub adapter of the :class:`~outbox.ports.Publisher` port.

Each :meth:`PubSubPublisher.publish` call is sent as raw protobuf
``PublishRequest``\\ s through the GAPIC layer of the official
``PublisherClient`` (``client.api.publish``): requests of at most
``max_messages`` messages and ``max_bytes`` bytes, sent concurrently from a
small thread pool the publisher owns. The client still builds the channel, so
``PUBSUB_EMULATOR_HOST`` is honoured (insecure channel, anonymous credentials)
without an emulator-specific factory.

Why not ``PublisherClient.publish``: it is made for callers that produce one
message at a time. Per message it builds a proto-plus message, runs the
client's batcher and flow control and returns a future. The relay already
holds whole batches (up to 5,000 messages), so all of that is overhead: on
Google's emulator, 50,000 ~500-byte messages took 3.3 s (3.1 s CPU) through
``client.publish`` per message, and 0.63 s (0.54 s CPU) as requests of 1,000
raw protobuf messages from 4 threads. ``make bench`` still compares the relay
against plain ``client.publish`` per message, the way an application publishes
without the outbox.

With the Publish RPC, attributes are a protobuf map, so an attribute may have
any name Pub/Sub allows (``retry``, ``timeout``, ``data``, ...): nothing
collides with a keyword parameter as it did with ``client.publish(**attrs)``.

Retries are ours, with tenacity, for transient errors only and bounded by
``timeout``; the GAPIC call is made with ``retry=None`` so that the library
does not retry underneath.

Ordering keys are deliberately not used: they need the client's per-key
sequencing, and after a failed publish the client *pauses* that key and
rejects every later message on it until someone calls ``resume_publish()``.
A relay that forgets to (or crashes before it does) stalls for good.
Consumers deduplicate on ``execution_id`` anyway, and the outbox retries rows
in (triggered_at, execution_id) order, which is as much order as the platform
needs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import grpc
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as pub_exc
from google.pubsub_v1.types import PubsubMessage
from google.pubsub_v1.types import pubsub as pubsub_types
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter
from tenacity.wait import wait_base

from outbox.errors import ConfigError, InvalidMessage, OutboxError, PermanentError, TransientError
from outbox.messages import check_message
from outbox.ports import Message, PublishOutcome

DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_BYTES = 9_000_000
"""Under the 10 MB request limit, leaving room for the request's own overhead."""
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPT_TIMEOUT = 30.0
"""The most one Publish RPC may take; cut to what is left of ``timeout``."""
GRACE_SECONDS = 0.5
"""How long past ``timeout`` :meth:`PubSubPublisher.publish` waits for a request
whose last attempt was cut to end at the deadline, before giving up on it."""

_MessagePb: Any = PubsubMessage.pb()
_RequestPb: Any = pubsub_types.PublishRequest.pb()

_TRANSIENT = (
    gexc.Aborted,
    gexc.Cancelled,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.Unknown,
    gexc.TooManyRequests,
    gexc.RetryError,
    pub_exc.PublishError,  # the server returned fewer ids than messages sent
    pub_exc.FlowControlLimitError,
    concurrent.futures.TimeoutError,
    auth_exc.TransportError,  # could not reach the token endpoint
)
_CONFIG = (gexc.NotFound, gexc.PermissionDenied, gexc.Unauthenticated, auth_exc.RefreshError)


def translate_error(exc: BaseException, topic: str = "<unknown>") -> OutboxError:
    """Map an exception from publishing to the project's error tree.

    :class:`ConfigError` means no message to ``topic`` can succeed (missing
    topic, no permission, bad credentials); the caller raises it instead of
    returning it per message. Anything unrecognised is permanent, so that a
    bug cannot make the relay retry forever.
    """
    if isinstance(exc, OutboxError):
        return exc
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        return translate_error(gexc.from_grpc_status(exc.code(), str(exc)), topic)
    err: OutboxError
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, gexc.NotFound):
        err = ConfigError(f"Pub/Sub topic {topic} does not exist")
    elif isinstance(exc, _CONFIG):
        err = ConfigError(f"cannot publish to Pub/Sub topic {topic}: {detail}")
    elif isinstance(exc, _TRANSIENT) or (
        isinstance(exc, gexc.ServerError) and not isinstance(exc, gexc.MethodNotImplemented)
    ):
        err = TransientError(detail)
    elif isinstance(exc, gexc.InvalidArgument | pub_exc.MessageTooLargeError | TypeError):
        err = InvalidMessage(detail)
    else:
        err = PermanentError(detail)
    err.__cause__ = exc
    return err


def _is_transient(exc: BaseException) -> bool:
    return isinstance(translate_error(exc), TransientError)


def _field_size(length: int) -> int:
    """Bytes of a length-delimited field in a request: tag, length varint, content."""
    return 1 + max(1, (length.bit_length() + 6) // 7) + length


class PubSubPublisher:
    """Publishes through the Publish RPC; one outcome per message, in order.

    ``timeout`` bounds one :meth:`publish` call. Each request is retried (only
    for transient errors, with exponential backoff and jitter) until the
    deadline; each attempt may take at most ``attempt_timeout`` and never runs
    past the deadline. A request still unresolved ``GRACE_SECONDS`` after the
    deadline gives its messages a :class:`TransientError`; its messages may
    still land, which makes a duplicate when the relay publishes them again.
    Consumers deduplicate on ``execution_id``.

    ``client`` is a ``google.cloud.pubsub_v1.PublisherClient`` (built here when
    not given); only its ``topic_path`` and its GAPIC layer (``client.api``)
    are used. ``retry_wait`` is tenacity's wait between attempts. Thread-safe;
    :meth:`close` stops the pool and the client.
    """

    def __init__(
        self,
        project: str,
        client: Any | None = None,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        workers: int = DEFAULT_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        retry_wait: wait_base | None = None,
    ) -> None:
        if not project:
            raise ConfigError("a Google Cloud project id is required")
        for name, value in (
            ("timeout", timeout), ("attempt_timeout", attempt_timeout),
            ("max_messages", max_messages), ("max_bytes", max_bytes), ("workers", workers),
        ):  # fmt: skip
            if value <= 0:
                raise ConfigError(f"{name} must be positive, not {value}")
        self.project = project
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._client = client or pubsub_v1.PublisherClient()
        # ``api`` is the client's GAPIC layer. The client overrides ``publish``
        # with its batching one, so this is the one way to the plain RPC; read
        # once, since every read emits a DeprecationWarning.
        self._api = self._client.api
        self._wait = retry_wait or wait_exponential_jitter(initial=0.1, max=5)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="pubsub-publish"
        )
        self._closed = False
        self._lock = threading.Lock()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        """See :meth:`outbox.ports.Publisher.publish`.

        Messages Pub/Sub would refuse are failed here, before sending: one bad
        message in a request makes the server fail the whole request.
        """
        if self._closed:
            raise RuntimeError("PubSubPublisher is closed")
        if not messages:
            return []
        path = self._client.topic_path(self.project, topic)
        deadline = time.monotonic() + self.timeout
        outcomes: list[PublishOutcome | None] = [None] * len(messages)
        requests: list[tuple[list[int], concurrent.futures.Future[list[str]]]] = []

        def send(indices: list[int], pbs: list[Any]) -> None:
            request = pubsub_types.PublishRequest.wrap(_RequestPb(topic=path, messages=pbs))
            requests.append((indices, self._pool.submit(self._send, request, deadline)))

        indices: list[int] = []
        pbs: list[Any] = []
        empty = size = _field_size(len(path.encode()))  # the request's topic
        for i, m in enumerate(messages):
            try:
                check_message(m)
                pb = _MessagePb(data=m.data, attributes=m.attributes)
            except (InvalidMessage, TypeError, ValueError) as exc:
                outcomes[i] = PublishOutcome(m.key, error=translate_error(exc, path))
                continue
            n = _field_size(pb.ByteSize())
            if pbs and (len(pbs) >= self.max_messages or size + n > self.max_bytes):
                send(indices, pbs)
                indices, pbs, size = [], [], empty
            indices.append(i)
            pbs.append(pb)
            size += n
        if pbs:
            send(indices, pbs)

        concurrent.futures.wait(
            [f for _, f in requests], timeout=deadline - time.monotonic() + GRACE_SECONDS
        )
        for indices, future in requests:
            error: OutboxError | None = None
            ids: list[str] = []
            if not future.done() or future.cancelled():
                why = "the publisher was closed" if future.cancelled() else "no result"
                future.cancel()  # if still queued, it is never sent
                timed_out = concurrent.futures.TimeoutError(f"{why} within {self.timeout}s")
                error = translate_error(timed_out, path)
            elif (failure := future.exception()) is not None:
                error = translate_error(failure, path)
            else:
                ids = future.result()
                if len(ids) != len(indices):
                    short = pub_exc.PublishError(
                        f"Pub/Sub returned {len(ids)} ids for {len(indices)} messages"
                    )
                    error = translate_error(short, path)
            for j, i in enumerate(indices):
                key = messages[i].key
                if error is None:
                    outcomes[i] = PublishOutcome(key, message_id=ids[j])
                else:
                    outcomes[i] = PublishOutcome(key, error=error)
        result = cast(list[PublishOutcome], outcomes)  # every slot is filled by now
        for outcome in result:
            if isinstance(outcome.error, ConfigError):
                raise outcome.error
        return result

    def _send(self, request: Any, deadline: float) -> list[str]:
        """One Publish RPC, retried for transient errors until ``deadline``.

        The stop is tenacity's ``stop_after_delay(timeout)`` counted from the
        :meth:`publish` call rather than from this request's first attempt,
        since a request may have waited in the pool's queue. Sleeps are cut to
        the deadline, and an attempt that would start past it re-raises the
        last error instead of calling Pub/Sub.
        """
        last: list[BaseException] = []

        def attempt() -> list[str]:
            left = deadline - time.monotonic()
            if left <= 0:  # slept up to the deadline, or queued past it
                raise last[-1] if last else concurrent.futures.TimeoutError("deadline passed")
            try:
                response = self._api.publish(
                    request=request, retry=None, timeout=min(self.attempt_timeout, left)
                )
            except Exception as exc:
                last.append(exc)
                raise
            return list(response.message_ids)

        def out_of_time(state: RetryCallState) -> bool:
            return time.monotonic() >= deadline

        def wait(state: RetryCallState) -> float:
            return max(0.0, min(self._wait(state), deadline - time.monotonic()))

        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=out_of_time,
            wait=wait,
            reraise=True,
        )
        return retrying(attempt)

    def close(self) -> None:
        """Wait for running requests, stop the pool and the client. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(RuntimeError):  # already stopped by its other owner
            self._client.stop()
