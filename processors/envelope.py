"""Decoding a Pub/Sub push delivery into an :class:`~processors.base.Event`, defensively.

Why so defensive: ``/process`` is fed by Pub/Sub push, but also by replay
tools, older publishers and Cloud Storage notifications, and real traffic has
camelCase and snake_case twins (``messageId``/``message_id``), missing
``deliveryAttempt`` and absent attributes. :func:`decode_push` never raises on
input; every body becomes exactly one of:

* :class:`Probe`: an empty body or an envelope without a message; nothing to do.
* :class:`Rejected`: permanently bad input (a short ``reason`` code, a detail);
  retrying the same bytes cannot help, so the service quarantines it.
* :class:`Decoded`: an event to route, with its delivery metadata, the event's
  own time (the dedupe ledger's partition key) and, when the event is
  deliberately not ours to process, a ``skip`` reason.

The three payload shapes (design notes §1): v1 (``scraper_name``/``name``,
``execution_id``, ``gcs_path``, ``status``), v2 (``processor_name``, ``phase``,
``execution_id``, ``correlation_id``, ``metadata.gcs_path``) and Cloud Storage
object finalize (``bucket`` + ``name`` in the body, or ``bucketId`` +
``objectId`` attributes for notifications without a payload).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outbox.clock import Clock, utcnow
from processors.base import Event, EventFormat

MAX_ID = 128
"""Ids longer than the log and ledger columns allow are refused, not cut."""
MAX_PATH = 1024
_TRUE = frozenset({"true", "1", "yes"})
_PAYLOAD_KEYS = frozenset({"execution_id", "gcs_path", "scraper_name", "processor_name", "bucket"})
_SANE_YEARS = range(2000, 2101)


@dataclass(frozen=True)
class Delivery:
    """What Pub/Sub says about this delivery (never the event's identity)."""

    message_id: str | None = None
    publish_time: str | None = None
    delivery_attempt: int | None = None
    subscription: str | None = None


@dataclass(frozen=True)
class Probe:
    reason: str
    delivery: Delivery = field(default_factory=Delivery)


@dataclass(frozen=True)
class Rejected:
    reason: str
    detail: str
    delivery: Delivery = field(default_factory=Delivery)
    execution_id: str | None = None


@dataclass(frozen=True)
class Decoded:
    event: Event
    delivery: Delivery
    event_time: dt.datetime
    """The event's own time (its body timestamp, else publish time, else now).
    Stable across re-publishes, so it can pick the ledger partition."""
    skip: str | None = None
    """Why there is nothing to process (no file, failed run, not phase 1), or None."""


DecodeResult = Probe | Rejected | Decoded


class _Reject(Exception):
    def __init__(self, reason: str, detail: str, execution_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.execution_id = reason, detail, execution_id


def decode_push(raw: bytes, clock: Clock = utcnow) -> DecodeResult:
    """One push body to a :data:`DecodeResult`; never raises."""
    if not raw.strip():
        return Probe("empty_body")
    delivery = Delivery()
    try:
        envelope = _json(raw, "envelope")
        if not isinstance(envelope, dict):
            raise _Reject("envelope_not_object", f"envelope is a {_kind(envelope)}")
        message = envelope.get("message")
        delivery = _delivery(envelope, message if isinstance(message, dict) else {})
        if message is None:
            if _PAYLOAD_KEYS & envelope.keys():
                # A subscription set to "no wrapper" would otherwise be acked as probes.
                raise _Reject("unwrapped_payload", "a payload without a push envelope")
            return Probe("no_message", delivery)
        if not isinstance(message, dict):
            raise _Reject("message_not_object", f"message is a {_kind(message)}")
        attributes = _attributes(message.get("attributes"))
        return _decode(_data(message.get("data")), attributes, delivery, clock)
    except _Reject as exc:
        return Rejected(exc.reason, exc.detail, delivery, exc.execution_id)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _Reject(f"{what}_not_utf8", f"{what} is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise _Reject(f"{what}_not_json", f"{what} is not JSON: {str(exc)[:200]}") from None


def safe_text(value: str, limit: int) -> str:
    """``value`` made valid UTF-8 (lone surrogates from JSON escapes spelled out)
    and cut to ``limit``, so that writing it to BigQuery cannot fail."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return safe_text(value, MAX_ID)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _first(obj: Mapping[str, Any], *keys: str) -> Any:
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


def _delivery(envelope: Mapping[str, Any], message: Mapping[str, Any]) -> Delivery:
    attempt = _first(envelope, "deliveryAttempt", "delivery_attempt")
    if isinstance(attempt, str) and attempt.isdigit() and len(attempt) < 10:
        attempt = int(attempt)
    return Delivery(
        message_id=_scalar_text(_first(message, "messageId", "message_id")),
        publish_time=_scalar_text(_first(message, "publishTime", "publish_time")),
        delivery_attempt=(attempt if isinstance(attempt, int) and not isinstance(attempt, bool)
                          and 0 <= attempt < 2**31 else None),
        subscription=_scalar_text(envelope.get("subscription")),
    )


def _attributes(value: Any) -> dict[str, str]:
    """Attributes are optional and always strings on the wire; anything else is dropped."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _data(data: Any) -> dict[str, Any]:
    if data is None or data == "":
        return {}
    if not isinstance(data, str):
        raise _Reject("data_not_string", f"message.data is a {_kind(data)}, not base64 text")
    try:
        decoded = base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise _Reject("data_not_base64", "message.data is not valid base64") from None
    payload = _json(decoded, "data")
    if not isinstance(payload, dict):
        raise _Reject("data_not_object", f"message.data holds a {_kind(payload)}, not an object")
    return payload


def _text(obj: Mapping[str, Any], key: str, limit: int = MAX_ID) -> str | None:
    """An optional string field: None when absent or empty; wrong types are refused."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Reject("wrong_type", f"{key} must be a string, got {_kind(value)}")
    if len(value) > limit:
        raise _Reject("field_too_long", f"{key} is longer than {limit} characters")
    if not value.isascii() and safe_text(value, limit) != value:
        raise _Reject("invalid_text", f"{key} is not valid Unicode text")
    return value


def _format(body: Mapping[str, Any], attributes: Mapping[str, str]) -> EventFormat:
    if "bucket" in body and "name" in body and not {"execution_id", "scraper_name"} & body.keys():
        return "gcs"
    if not body and "bucketId" in attributes and "objectId" in attributes:
        return "gcs"
    if "processor_name" in body or "phase" in body:
        return "v2"
    if {"scraper_name", "name", "execution_id", "gcs_path"} & body.keys():
        return "v1"
    if not body and "execution_id" in attributes:
        return "v1"  # attributes only: an id, but no file to process
    if not body:
        raise _Reject("empty_message", "the message has neither data nor usable attributes")
    raise _Reject("unknown_format", f"no known payload shape; keys: {sorted(body)[:20]}")


def _decode(body: dict[str, Any], attributes: dict[str, str], delivery: Delivery,
            clock: Clock) -> Decoded:
    kind = _format(body, attributes)
    fields: dict[str, Any]
    if kind == "gcs":
        execution_id, fields = _gcs(body, attributes)
    else:
        execution_id = _text(body, "execution_id") or _text(attributes, "execution_id") or ""
        if not execution_id:
            raise _Reject("missing_execution_id", f"a {kind} event without an execution_id")
    try:
        if kind != "gcs":
            fields = _v1(body, attributes) if kind == "v1" else _v2(body)
        event = Event(
            execution_id=execution_id, format=kind, attributes=attributes, body=body,
            replay=(attributes.get("replay", "").lower() in _TRUE
                    or bool(attributes.get("replay_id"))),
            force=attributes.get("force", "").lower() in _TRUE,
            **fields,
        )
        return Decoded(event, delivery, _event_time(body, attributes, delivery, clock),
                       _skip(event))
    except _Reject as exc:
        raise _Reject(exc.reason, exc.detail, execution_id) from None


def _v1(body: Mapping[str, Any], attributes: Mapping[str, str]) -> dict[str, Any]:
    return {
        "scraper_name": (_text(body, "scraper_name") or _text(body, "name")
                         or _text(attributes, "scraper_name")),
        "status": _text(body, "status", 32) or _text(attributes, "status", 32),
        "gcs_path": _text(body, "gcs_path", MAX_PATH),
        "correlation_id": _text(body, "correlation_id"),
    }


def _phase(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        digits = re.search(r"\d{1,3}", value)
        return int(digits.group()) if digits else None
    raise _Reject("wrong_type", f"phase must be a number or a string, got {_kind(value)}")


def _v2(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Reject("wrong_type", f"metadata must be an object, got {_kind(metadata)}")
    _phase(body.get("phase"))  # type check now, so a bad phase is refused, not skipped
    return {
        "scraper_name": _text(body, "scraper_name") or _text(body, "processor_name"),
        "status": _text(body, "status", 32),
        "gcs_path": _text(metadata or {}, "gcs_path", MAX_PATH) or _text(body, "gcs_path",
                                                                          MAX_PATH),
        "correlation_id": _text(body, "correlation_id"),
    }


def _gcs(body: Mapping[str, Any], attributes: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """Object finalize: the path is the object; the id is derived, so a repeat is a duplicate."""
    src = body or attributes
    bucket_key, name_key, generation_key = (("bucket", "name", "generation") if body
                                            else ("bucketId", "objectId", "objectGeneration"))
    bucket, name = _text(src, bucket_key), _text(src, name_key, MAX_PATH)
    generation = src.get(generation_key)
    if isinstance(generation, int) and not isinstance(generation, bool):
        generation = str(generation)
    generation = _text({generation_key: generation}, generation_key, 64)
    if bucket is None or name is None:
        raise _Reject("missing_object", "an object notification needs a bucket and a name")
    path = f"gs://{bucket}/{name}"
    if len(path) > MAX_PATH:
        raise _Reject("field_too_long", f"gcs path is longer than {MAX_PATH} characters")
    execution_id = f"gcs:{bucket}/{name}" + (f"#{generation}" if generation else "")
    if len(execution_id) > MAX_ID:
        execution_id = "gcs:sha256:" + hashlib.sha256(execution_id.encode()).hexdigest()
    return execution_id, {"gcs_path": path}


def _skip(event: Event) -> str | None:
    if event.format == "v2" and (_phase(event.body.get("phase")) or 1) >= 2:
        # Phase-2 events are this service's own output: processing them would loop.
        return "not_a_phase1_event"
    kind = event.attributes.get("eventType")
    if event.format == "gcs" and kind not in (None, "OBJECT_FINALIZE"):
        return "not_object_finalize"
    if event.status == "failed":
        return "scraper_run_failed"
    if event.gcs_path is None:
        return "no_gcs_path"
    return None


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC) if parsed.year in _SANE_YEARS else None


def _event_time(body: Mapping[str, Any], attributes: Mapping[str, str], delivery: Delivery,
                clock: Clock) -> dt.datetime:
    for value in (body.get("timestamp"), body.get("timeCreated"), attributes.get("eventTime"),
                  delivery.publish_time):
        parsed = _parse_time(value)
        if parsed is not None:
            return parsed
    return clock()
