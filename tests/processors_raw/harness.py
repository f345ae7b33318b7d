"""Sinks to test against: the in-memory double, and BigQuery on bqemulator.

Each BigQuery harness gets a dataset of its own holding all ``nba_raw``
tables, so tests never see each other's rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outbox.rows import Row
from processors.raw.tables import GAME_DATE, PROCESSED_AT, RAW_TABLES, RawTable
from processors.raw.testing import InMemoryRawSink

_ALL_DATES = (dt.date(1900, 1, 1), dt.date(2200, 1, 1))


@dataclass
class Harness:
    """A sink, where its tables live, and how to read them back."""

    kind: str
    dataset: str
    sink: Any
    """The sink; both kinds have a settable ``max_rows``."""
    read: Callable[[RawTable], list[Row]]

    def table(self, raw: RawTable) -> RawTable:
        return raw.in_dataset(self.dataset)

    def rows(self, raw: RawTable, drop: tuple[str, ...] = ()) -> list[Row]:
        """The rows of ``raw`` (in this harness's dataset), without the ``drop`` columns."""
        return [{k: v for k, v in r.items() if k not in drop} for r in self.read(self.table(raw))]

    def loaded(self, raw: RawTable) -> list[Row]:
        """Rows without ``processed_at``, which a re-run rightly moves forward."""
        return self.rows(raw, drop=(PROCESSED_AT,))


def memory_harness() -> Harness:
    sink = InMemoryRawSink()
    return Harness("memory", "nba_raw_test", sink, sink.rows)


def bigquery_harness(bq_emulator: Any) -> Harness:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from outbox.bigquery_tables import ensure_tables
    from processors.raw.bigquery_sink import BigQueryRawSink

    project = bq_emulator.project
    client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                             client_options=ClientOptions(api_endpoint=bq_emulator.rest_url))
    dataset = f"raw_{uuid.uuid4().hex[:10]}"
    ensure_tables(client, project, [t.in_dataset(dataset).spec for t in RAW_TABLES])

    def read(table: RawTable) -> list[Row]:
        spec = table.spec
        job = client.query(
            f"SELECT * FROM `{project}.{spec.dataset}.{spec.name}` "
            f"WHERE {GAME_DATE} BETWEEN @lo AND @hi",
            job_config=bigquery.QueryJobConfig(query_parameters=[
                bigquery.ScalarQueryParameter("lo", "DATE", _ALL_DATES[0]),
                bigquery.ScalarQueryParameter("hi", "DATE", _ALL_DATES[1]),
            ]),
        )
        rows = [{k: v for k, v in dict(r).items() if v is not None} for r in job.result()]
        return sorted(rows, key=table.key)

    sink = BigQueryRawSink(client, project, retry_wait=0.01)
    return Harness("bigquery", dataset, sink, read)
