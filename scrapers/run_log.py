"""The one log row a scraper run leaves, and writing it so that it cannot vanish quietly.

The row is the outbox: the relay turns it into the ``nba-scraper-complete``
event, so its ``execution_id`` is the event's identity and must be unique per
run. The platform used 8 hex characters (32 bits: a collision is likely after
~80,000 runs, about a season of ~30 scrapers); here it is 16 (64 bits, from
``uuid4``), whose first 8 still look like the platform's run ids.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from outbox.errors import OutboxError, TransientError
from outbox.ports import LogWriter

log = logging.getLogger("scrapers.run")

ERROR_MESSAGE_LIMIT = 1000
APPEND_ATTEMPTS = 4


def new_execution_id() -> str:
    return uuid.uuid4().hex[:16]


class LogWriteFailed(OutboxError):
    """The run's row could not be written, even after retries.

    The data file (if any) exists but no event will announce it, so the
    service answers 500 and the row is logged at ERROR in full: an operator
    can re-append it from that line.
    """

    def __init__(self, execution_id: str, gcs_path: str | None, cause: Exception) -> None:
        where = gcs_path or "no file (the run failed before exporting)"
        super().__init__(f"log row for execution {execution_id} not written; "
                         f"data at {where}: {type(cause).__name__}: {cause}")
        self.execution_id = execution_id
        self.gcs_path = gcs_path
        self.cause = cause


@dataclass(frozen=True)
class RunMeta:
    """Who ran what, when: the columns every row has whatever the outcome."""

    execution_id: str
    scraper_name: str
    scraper_class: str
    triggered_at: dt.datetime
    source: str
    workflow: str
    environment: str
    triggered_by: str | None
    opts: Mapping[str, Any]
    """Already without secrets."""


@dataclass(frozen=True)
class Outcome:
    """How the run ended. ``error`` is set for ``failed`` (and describes the
    failed records for ``partial``)."""

    status: str
    record_count: int = 0
    gcs_path: str | None = None
    completed_at: dt.datetime | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None


def status_for(records: int, records_failed: int) -> str:
    """The platform's rule, plus ``partial`` when some records could not be fetched."""
    if records_failed > 0:
        return "partial"
    return "success" if records > 0 else "no_data"


def build_row(meta: RunMeta, outcome: Outcome) -> dict[str, Any]:
    """The log row. ``completed_at`` and ``duration_seconds`` stay NULL on failure."""
    finished = outcome.completed_at if outcome.status != "failed" else None
    message = outcome.error_message
    return {
        "execution_id": meta.execution_id,
        "run_id": meta.execution_id,
        "scraper_name": meta.scraper_name,
        "workflow": meta.workflow,
        "status": outcome.status,
        "triggered_at": meta.triggered_at,
        "completed_at": finished,
        "duration_seconds": (round((finished - meta.triggered_at).total_seconds(), 3)
                             if finished else None),
        "source": meta.source,
        "environment": meta.environment,
        "triggered_by": meta.triggered_by,
        "gcs_path": outcome.gcs_path,
        "data_summary": {
            "record_count": outcome.record_count,
            "scraper_stats": dict(outcome.stats),
            "is_empty_report": outcome.record_count == 0,
            "scraper_class": meta.scraper_class,
        },
        "error_type": outcome.error_type,
        "error_message": message[:ERROR_MESSAGE_LIMIT] if message else None,
        "retry_count": 0,
        "recovery": meta.source == "RECOVERY",
        "opts": dict(meta.opts),
    }


def retrying_transient(sleep: Callable[[float], None] = time.sleep) -> Retrying:
    """Up to four tries, 0.25 s doubling, for calls that raise
    :class:`~outbox.errors.TransientError` when a retry may help (log appends,
    blob writes). Anything else, such as an :class:`~outbox.errors.InvalidRow`,
    would fail the same way every time and is raised at once."""
    return Retrying(
        stop=stop_after_attempt(APPEND_ATTEMPTS),
        wait=wait_exponential(multiplier=0.25, max=2),
        retry=retry_if_exception_type(TransientError),
        sleep=sleep,
        reraise=True,
    )


def write_row(writer: LogWriter, row: Mapping[str, Any],
              sleep: Callable[[float], None] = time.sleep) -> None:
    """Append ``row``, retrying transient failures; :class:`LogWriteFailed` if it never lands."""
    try:
        retrying_transient(sleep)(writer.append, [row])
    except Exception as exc:
        failed = LogWriteFailed(row["execution_id"], row.get("gcs_path"), exc)
        log.error(str(failed), extra={"json_fields": {
            "execution_id": row["execution_id"], "gcs_path": row.get("gcs_path"),
            "scraper_name": row["scraper_name"], "error_class": type(exc).__name__,
            "row": dict(row)}})
        raise failed from exc
