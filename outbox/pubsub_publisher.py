"""The Pub/Sub adapter of the :class:`~outbox.ports.Publisher` port.

It uses the official ``PublisherClient``, which batches concurrently and
honours ``PUBSUB_EMULATOR_HOST`` by itself (insecure channel, anonymous
credentials), so no emulator-specific factory is needed here.

Ordering keys are deliberately not used: after a failed publish the client
*pauses* that key and rejects every later message on it until someone calls
``resume_publish()``. A relay that forgets to (or crashes before it does)
stalls for good. Consumers deduplicate on ``execution_id`` anyway, and the
outbox retries rows in (triggered_at, execution_id) order, which is as much
order as the platform needs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as pub_exc

from outbox.errors import ConfigError, InvalidMessage, OutboxError, PermanentError, TransientError
from outbox.messages import check_message
from outbox.ports import Message, PublishOutcome

DEFAULT_BATCH_MAX_MESSAGES = 1000
DEFAULT_BATCH_MAX_BYTES = 9_000_000
"""Under the 10 MB request limit, leaving room for the request's own overhead."""
DEFAULT_BATCH_MAX_LATENCY = 0.01
DEFAULT_TIMEOUT = 60.0

RESERVED_ATTRIBUTES = frozenset({"topic", "data", "ordering_key", "retry", "timeout"})
"""``PublisherClient.publish`` takes attributes as ``**kwargs`` beside these
parameters, so an attribute of that name would collide with (or silently set)
the parameter. Such messages are refused before anything is sent."""

_RETRYABLE = (
    gexc.Aborted,
    gexc.Cancelled,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.Unknown,
)
"""What the client retries by default; we keep the set and bound the deadline."""

_TRANSIENT = (
    *_RETRYABLE,
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


class PubSubPublisher:
    """Publishes with ``PublisherClient``; one outcome per message, in order.

    ``timeout`` bounds one :meth:`publish` call: the client's retry deadline
    (600 s by default) is cut to it, so a relay run's own deadline holds.
    A message still unresolved when it expires is reported as transient;
    its batch may yet land, which is a duplicate consumers dedupe.

    The batch settings apply only to a client built here; an injected
    ``client`` keeps its own. Either way :meth:`close` stops the client.
    """

    def __init__(
        self,
        project: str,
        client: Any | None = None,
        *,
        batch_max_messages: int = DEFAULT_BATCH_MAX_MESSAGES,
        batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
        batch_max_latency: float = DEFAULT_BATCH_MAX_LATENCY,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not project:
            raise ConfigError("a Google Cloud project id is required")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout}")
        self.project = project
        self.timeout = timeout
        self._client = client or pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_bytes=batch_max_bytes,
                max_latency=batch_max_latency,
                max_messages=batch_max_messages,
            )
        )
        self._retry = Retry(
            predicate=if_exception_type(*_RETRYABLE),
            initial=0.1,
            maximum=min(10.0, timeout),
            multiplier=2.0,
            timeout=timeout,
        )
        self._closed = False
        self._lock = threading.Lock()

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        """See :meth:`outbox.ports.Publisher.publish`.

        Messages Pub/Sub would refuse are failed here, before sending: one bad
        message in a batch makes the server fail the whole batch.
        """
        if self._closed:
            raise RuntimeError("PubSubPublisher is closed")
        if not messages:
            return []
        path = self._client.topic_path(self.project, topic)
        errors: dict[int, OutboxError] = {}
        pending: dict[int, concurrent.futures.Future[str]] = {}
        for i, m in enumerate(messages):
            try:
                _refuse_reserved(check_message(m))
                pending[i] = self._client.publish(
                    path, m.data, retry=self._retry, timeout=self.timeout, **m.attributes
                )
            except (InvalidMessage, pub_exc.MessageTooLargeError, TypeError) as exc:
                errors[i] = translate_error(exc, path)
        concurrent.futures.wait(pending.values(), timeout=self.timeout)
        outcomes: list[PublishOutcome] = []
        for i, m in enumerate(messages):
            future = pending.get(i)
            if future is None:
                outcomes.append(PublishOutcome(m.key, error=errors[i]))
            elif not future.done():
                timed_out = concurrent.futures.TimeoutError(f"no result within {self.timeout}s")
                outcomes.append(PublishOutcome(m.key, error=translate_error(timed_out, path)))
            elif (failure := future.exception()) is not None:
                outcomes.append(PublishOutcome(m.key, error=translate_error(failure, path)))
            else:
                outcomes.append(PublishOutcome(m.key, message_id=future.result()))
        for outcome in outcomes:
            if isinstance(outcome.error, ConfigError):
                raise outcome.error
        return outcomes

    def close(self) -> None:
        """Flush and stop the client's batching. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError):  # already stopped by its other owner
            self._client.stop()


def _refuse_reserved(message: Message) -> None:
    clash = RESERVED_ATTRIBUTES.intersection(message.attributes)
    if clash:
        raise InvalidMessage(f"attribute names {sorted(clash)} are reserved by the client")
