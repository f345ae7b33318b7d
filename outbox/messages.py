"""The message contract: log rows to Pub/Sub messages.

``encode_scraper_complete_v1`` produces the platform's v1 event exactly (body
and attributes, design notes §1). ``check_message`` enforces Pub/Sub's limits
before anything is sent; every Publisher calls it, and the relay sets a row
whose message fails it aside at once instead of failing at Pub/Sub over and
over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from outbox.errors import InvalidMessage
from outbox.ports import Message
from outbox.rows import Row

MAX_DATA_BYTES = 10_000_000
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_KEY_BYTES = 256
MAX_ATTRIBUTE_VALUE_BYTES = 1024

Encoder = Callable[[Row], Message]

V1_ATTRIBUTES = ("scraper_name", "status", "execution_id", "workflow")
V1_COLUMNS = (
    "execution_id", "scraper_name", "workflow", "status", "triggered_at", "completed_at",
    "duration_seconds", "gcs_path", "data_summary", "error_type", "error_message", "opts",
)
"""The log columns the v1 encoder reads: the poll fetches (and BigQuery bills) only these."""


def check_message(message: Message) -> Message:
    """Raise :class:`InvalidMessage` if Pub/Sub would refuse ``message``."""
    if len(message.data) > MAX_DATA_BYTES:
        raise InvalidMessage(f"body is {len(message.data)} bytes; the limit is {MAX_DATA_BYTES}")
    if len(message.attributes) > MAX_ATTRIBUTES:
        raise InvalidMessage(f"{len(message.attributes)} attributes; the limit is {MAX_ATTRIBUTES}")
    for key, value in message.attributes.items():
        if not key or len(key.encode()) > MAX_ATTRIBUTE_KEY_BYTES or key.startswith("goog"):
            raise InvalidMessage(f"attribute key {key[:40]!r} is empty, reserved or too long")
        if len(value.encode()) > MAX_ATTRIBUTE_VALUE_BYTES:
            raise InvalidMessage(
                f"attribute {key!r} is {len(value.encode())} bytes; "
                f"the limit is {MAX_ATTRIBUTE_VALUE_BYTES}"
            )
    if not message.data and not message.attributes:
        raise InvalidMessage("message has neither data nor attributes")
    return message


def _iso(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return None


def _summary(row: Mapping[str, Any]) -> dict[str, Any]:
    summary = row.get("data_summary")
    return summary if isinstance(summary, dict) else {}


def scraper_complete_v1_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The v1 body. ``name`` duplicates ``scraper_name`` for older processors."""
    summary = _summary(row)
    status = row["status"]
    body: dict[str, Any] = {
        "name": row["scraper_name"],
        "scraper_name": row["scraper_name"],
        "execution_id": row["execution_id"],
        "status": status,
        "gcs_path": row.get("gcs_path"),
        "record_count": int(summary.get("record_count") or 0),
        "duration_seconds": row.get("duration_seconds"),
        "timestamp": _iso(row.get("completed_at")) or _iso(row.get("triggered_at")),
        "workflow": row.get("workflow"),
        "error_message": row.get("error_message"),
    }
    scraper_class = summary.get("scraper_class")
    if status == "failed":
        metadata = {"scraper_class": scraper_class, "error_type": row.get("error_type")}
    else:
        metadata = {"scraper_class": scraper_class, "opts": row.get("opts") or {}}
    if any(v not in (None, {}) for v in metadata.values()):
        body["metadata"] = metadata
    return body


def encode_scraper_complete_v1(row: Row) -> Message:
    body = scraper_complete_v1_body(row)
    attributes = {name: str(body[name] or "") for name in V1_ATTRIBUTES}
    data = orjson.dumps(body)
    # Every Publisher checks Pub/Sub's limits itself (check_message), so the
    # encoder does not pay for it twice.
    return Message(key=row["execution_id"], data=data, attributes=attributes)


PHASE2_COLUMNS = (
    "execution_id", "processor_name", "source_execution_id", "correlation_id", "status",
    "triggered_at", "completed_at", "duration_seconds", "trigger_source", "gcs_path",
    "output_dataset", "output_table", "game_date", "record_count", "records_failed",
    "error_type", "error_message",
)
PHASE2_ATTRIBUTES = ("processor_name", "status", "execution_id", "correlation_id", "game_date")


def phase2_complete_body(row: Mapping[str, Any]) -> dict[str, Any]:
    """The Phase 2 -> 3 event, in the platform's v2 envelope shape."""
    dataset, table = row.get("output_dataset"), row.get("output_table")
    game_date = row.get("game_date")
    return {
        "processor_name": row["processor_name"],
        "phase": 2,
        "execution_id": row["execution_id"],
        "correlation_id": row.get("correlation_id") or row.get("source_execution_id"),
        "source_execution_id": row.get("source_execution_id"),
        "game_date": game_date.isoformat() if game_date is not None else None,
        "source_table": f"{dataset}.{table}" if dataset and table else None,
        "output_dataset": dataset,
        "output_table": table,
        "status": row["status"],
        "success": row["status"] != "failed",
        "record_count": int(row.get("record_count") or 0),
        "records_failed": int(row.get("records_failed") or 0),
        "timestamp": _iso(row.get("completed_at")) or _iso(row.get("triggered_at")),
        "duration_seconds": row.get("duration_seconds"),
        "trigger_source": row.get("trigger_source"),
        "error_type": row.get("error_type"),
        "error_message": row.get("error_message"),
        "metadata": {"gcs_path": row.get("gcs_path")},
    }


def encode_phase2_complete(row: Row) -> Message:
    body = phase2_complete_body(row)
    attributes = {name: str(body[name] or "") for name in PHASE2_ATTRIBUTES}
    return Message(key=row["execution_id"], data=orjson.dumps(body), attributes=attributes)
