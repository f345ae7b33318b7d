"""Permanently bad input is quarantined and acknowledged, not dead-lettered.

The choice (issue 3, part 1): a delivery that can never succeed (a malformed
envelope, an unknown payload shape, a missing file, an invalid file) gets a
2xx and one append-only row in ``nba_orchestration.processor_quarantine``.
Why not return non-2xx and let Pub/Sub dead-letter it after 5 attempts:

* those 5 attempts are pointless by definition, each one re-reads the blob and
  re-runs the lookup, and with backoff the message spends minutes in flight;
* dead-lettering is best effort (design notes §2: it needs IAM grants the
  original scripts forgot, and it can deliver twice), while the quarantine row
  is written before the ack, so nothing is acked unrecorded: if the row cannot
  be written the service answers 503 and Pub/Sub retries;
* the DLQ keeps messages 7 days behind a pull subscription, which consumes
  them when read; quarantine rows stay queryable for 90 days, with the reason,
  the ids and the raw envelope, and :meth:`Quarantine.list_quarantined` lists
  them for the CLI without removing anything.

The dead-letter topic stays configured as the safety net for what is *not* the
input's fault and does not heal: a persistent 5xx (misconfiguration, a bug)
still ends there after 5 attempts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Protocol

from google.cloud import bigquery

from outbox.bigquery_sql import Param, Statement, table_ref
from outbox.bigquery_write import RowAppender
from outbox.rows import validate_row
from outbox.schema import Column, TableSpec
from processors.dedupe import append_rows, run_query
from processors.envelope import safe_text

MAX_ENVELOPE_CHARS = 16_000
"""The raw envelope is kept up to this size: enough to read and replay any
scraper event; a 10 MB body is cut (``envelope_bytes`` keeps its real size)."""

PROCESSOR_QUARANTINE = TableSpec(
    dataset="nba_orchestration",
    name="processor_quarantine",
    partition_field="quarantined_at",
    clustering=("reason", "processor"),
    description="Append-only: deliveries /process acknowledged without processing, and why.",
    columns=(
        Column("quarantined_at", "TIMESTAMP", required=True),
        Column("reason", "STRING", required=True, max_length=64),
        Column("detail", "STRING", max_length=1000, truncate=True),
        Column("execution_id", "STRING", max_length=128),
        Column("processor", "STRING", max_length=128),
        Column("gcs_path", "STRING", max_length=1024, truncate=True),
        Column("message_id", "STRING", max_length=128, truncate=True),
        Column("delivery_attempt", "INT64"),
        Column("envelope", "STRING", max_length=MAX_ENVELOPE_CHARS, truncate=True),
        Column("envelope_bytes", "INT64"),
    ),
)


@dataclass(frozen=True)
class QuarantineRecord:
    reason: str
    detail: str
    quarantined_at: dt.datetime
    envelope: str
    envelope_bytes: int
    execution_id: str | None = None
    processor: str | None = None
    gcs_path: str | None = None
    message_id: str | None = None
    delivery_attempt: int | None = None

    @classmethod
    def of(cls, reason: str, detail: str, raw: bytes, at: dt.datetime,
           execution_id: str | None = None, processor: str | None = None,
           gcs_path: str | None = None, message_id: str | None = None,
           delivery_attempt: int | None = None) -> QuarantineRecord:
        """A record whose every text field is valid UTF-8 and within its column."""
        text = raw[: MAX_ENVELOPE_CHARS * 4].decode("utf-8", "backslashreplace")
        return cls(
            reason=safe_text(reason, 64), detail=safe_text(detail, 1000), quarantined_at=at,
            envelope=text[:MAX_ENVELOPE_CHARS], envelope_bytes=len(raw),
            execution_id=execution_id and safe_text(execution_id, 128),
            processor=processor, gcs_path=gcs_path and safe_text(gcs_path, 1024),
            message_id=message_id and safe_text(message_id, 128),
            delivery_attempt=delivery_attempt,
        )

    def row(self, spec: TableSpec) -> dict[str, object]:
        return validate_row(spec, {k: v for k, v in asdict(self).items() if v is not None})


class Quarantine(Protocol):
    """Where permanently bad deliveries are recorded before they are acked."""

    def put(self, record: QuarantineRecord) -> None:
        """Append one record. Raises TransientError when nothing was written,
        so the caller must not ack."""
        ...

    def list_quarantined(self, since: dt.datetime, limit: int = 1000) -> list[QuarantineRecord]:
        """Records quarantined at or after ``since``, newest first."""
        ...


def list_statement(project: str, spec: TableSpec, since: dt.datetime, limit: int) -> Statement:
    columns = ", ".join(spec.column_names)
    sql = f"""SELECT {columns}
FROM {table_ref(project, spec)}
WHERE {spec.partition_column} >= @since
ORDER BY {spec.partition_column} DESC
LIMIT @limit"""
    return Statement(sql, (Param("since", "TIMESTAMP", since), Param("limit", "INT64", limit)))


class BigQueryQuarantine:
    """:class:`Quarantine` on ``nba_orchestration.processor_quarantine``."""

    def __init__(self, client: bigquery.Client, appender: RowAppender,
                 project: str | None = None, spec: TableSpec = PROCESSOR_QUARANTINE) -> None:
        self.client, self.appender, self.spec = client, appender, spec
        self.project = project or client.project

    def put(self, record: QuarantineRecord) -> None:
        append_rows(self.appender, self.spec, [record.row(self.spec)])

    def list_quarantined(self, since: dt.datetime, limit: int = 1000) -> list[QuarantineRecord]:
        stmt = list_statement(self.project, self.spec, since, limit)
        rows = run_query(self.client, stmt, "list quarantined deliveries")
        return [QuarantineRecord(**row) for row in rows]

    def describe(self) -> str:
        return f"bigquery:{self.project}.{self.spec.dataset}.{self.spec.name}"
