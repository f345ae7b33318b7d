"""The BigQuery :class:`~processors.raw.sink.RawTableSink`: one MERGE per file.

Why a MERGE from query parameters, not a load job or streaming:

- a table takes about 1,500 load jobs a day, and replacing a partition by load
  would erase the odds snapshots already in it;
- streamed rows sit in the streaming buffer, where the next re-scrape's
  MERGE or DELETE could not touch them for up to 90 minutes;
- a MERGE is one atomic job: a file lands whole or not at all, and running it
  again (Pub/Sub redelivery, a retry after a timeout) leaves the same rows.

The rows travel as one ``ARRAY<STRUCT<...>>`` parameter, typed from the spec.
The ``ON`` clause and the delete clause both filter the target on constants
(``BETWEEN @first_date AND @last_date``, ``IN UNNEST(@dates)``): BigQuery
prunes only on constant filters, never on ``T.game_date = S.game_date``, and
a table with ``require_partition_filter`` needs one. (bqemulator enforces
neither pruning nor that option; confirm on BigQuery with a dry run.)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from outbox.bigquery_errors import translate
from outbox.bigquery_sql import Param, Statement, table_ref
from outbox.bigquery_store import JobStats
from outbox.errors import ConfigError, MarkRefused, OutboxError, TransientError
from outbox.rows import Row
from outbox.schema import TableSpec
from processors.raw.sink import (
    MAX_ROWS_PER_STATEMENT,
    LoadRefused,
    chunks,
    newest_scraped_at,
    prepare,
)
from processors.raw.tables import GAME_DATE, SCRAPED_AT, RawTable


def _q(name: str) -> str:
    return f"`{name}`"  # names come from validated specs; quoting spares keyword clashes


def merge_statement(project: str, table: RawTable, rows: Sequence[Row], replace: bool) -> Statement:
    """The MERGE that loads ``rows`` (already prepared) into ``table``."""
    cols = table.spec.column_names
    match = table.match_columns
    dates = sorted({r[GAME_DATE] for r in rows})
    source = ", ".join(f"r.{_q(c)} AS {_q(c)}" for c in cols)
    on = " AND ".join(f"T.{_q(c)} = S.{_q(c)}" for c in match)
    updates = ", ".join(f"{_q(c)} = S.{_q(c)}" for c in cols if c not in match)
    day, stamp = _q(GAME_DATE), _q(SCRAPED_AT)
    # BETWEEN, not IN UNNEST(@dates), in ON: bqemulator (DuckDB) cannot run a
    # subquery in the join condition next to WHEN NOT MATCHED BY SOURCE.
    sql = f"""MERGE {table_ref(project, table.spec)} AS T
USING (SELECT {source} FROM UNNEST(@rows) AS r) AS S
ON {on} AND T.{day} BETWEEN @first_date AND @last_date
WHEN MATCHED AND T.{stamp} <= S.{stamp} THEN
  UPDATE SET {updates}
WHEN NOT MATCHED BY TARGET THEN
  INSERT ({", ".join(_q(c) for c in cols)}) VALUES ({", ".join(f"S.{_q(c)}" for c in cols)})"""
    params = [
        Param("rows", "STRUCT", list(rows), array=True),
        Param("first_date", "DATE", dates[0]),
        Param("last_date", "DATE", dates[-1]),
    ]
    if replace:
        # Not in the file, of the file's dates, and not newer than the file: gone.
        sql += f"""
WHEN NOT MATCHED BY SOURCE AND T.{day} IN UNNEST(@dates)
  AND T.{stamp} <= @file_time THEN
  DELETE"""
        params += [
            Param("dates", "DATE", dates, array=True),
            Param("file_time", "TIMESTAMP", newest_scraped_at(rows)),
        ]
    return Statement(sql, tuple(params))


def query_parameters(spec: TableSpec, stmt: Statement) -> list[Any]:
    """``stmt``'s parameters for the client; the STRUCT array is typed from ``spec``."""
    out: list[Any] = []
    for p in stmt.params:
        if p.type == "STRUCT":
            fields = [bigquery.ScalarQueryParameterType(c.type, name=c.name) for c in spec.columns]
            values = [
                bigquery.StructQueryParameter(None, *[
                    bigquery.ScalarQueryParameter(c.name, c.type, row.get(c.name))
                    for c in spec.columns
                ])
                for row in p.value
            ]
            out.append(bigquery.ArrayQueryParameter(
                p.name, bigquery.StructQueryParameterType(*fields), values))
        elif p.array:
            out.append(bigquery.ArrayQueryParameter(p.name, p.type, p.value))
        else:
            out.append(bigquery.ScalarQueryParameter(p.name, p.type, p.value))
    return out


_DML_QUEUE_FULL = "Too many DML statements outstanding"


def translate_load_error(exc: Exception, doing: str) -> OutboxError:
    """Google's error as the project's: DML refusals become :class:`LoadRefused`.

    A full DML queue (more than 20 statements waiting on one table) comes as
    400 ``resourcesExceeded``, a reason that otherwise means a query too big
    to ever run; only its text tells it apart, and it clears by itself.
    """
    if _DML_QUEUE_FULL in str(exc):
        return LoadRefused("dml_queue_full", f"{doing}: {exc}")
    err = translate(exc, doing, dml=True)
    if isinstance(err, MarkRefused):
        return LoadRefused(err.reason, f"{doing}: {exc}")
    if isinstance(exc, gexc.NotFound):
        return ConfigError(f"{doing}: not found ({exc}); create the nba_raw tables first "
                           "(ensure_tables with processors.raw.tables.RAW_TABLES)")
    return err


class BigQueryRawSink:
    """Loads files into ``nba_raw`` tables with one MERGE each (see the module doc)."""

    def __init__(
        self,
        client: bigquery.Client,
        project: str | None = None,
        *,
        max_bytes_billed: int | None = 1024**3,
        attempts: int = 4,
        retry_wait: float = 0.5,
        max_rows: int = MAX_ROWS_PER_STATEMENT,
    ) -> None:
        self.client = client
        self.project = project or client.project
        self.max_bytes_billed = max_bytes_billed
        self.max_rows = max_rows
        self.stats = JobStats()
        self._lock = threading.Lock()
        # Concurrent MERGEs of one partition: one of them is refused and must
        # retry. Jitter spreads the retries; past the last attempt the refusal
        # surfaces as a TransientError (503, and Pub/Sub redelivers).
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(initial=retry_wait, max=retry_wait * 16),
            reraise=True,
        )

    def upsert(self, table: RawTable, rows: Sequence[Mapping[str, Any]], *,
               replace: bool = False) -> int:
        clean = prepare(table, rows, replace, self.max_rows)
        for part in chunks(clean, self.max_rows):
            stmt = merge_statement(self.project, table, part, replace)
            doing = f"load {len(part)} rows into {table.spec.dataset}.{table.spec.name}"
            self._retrying.copy()(self._run, table.spec, stmt, doing)  # a copy per call: threads
        return len(clean)

    def _run(self, spec: TableSpec, stmt: Statement, doing: str) -> None:
        config = bigquery.QueryJobConfig(
            query_parameters=query_parameters(spec, stmt),
            labels={"component": "processors", "table": spec.name.lower()},
        )
        if self.max_bytes_billed is not None:
            config.maximum_bytes_billed = self.max_bytes_billed
        with self._lock:
            self.stats.jobs += 1
        try:
            job = self.client.query(stmt.sql, job_config=config)
            job.result()
        except (gexc.GoogleAPIError, ConnectionError, TimeoutError) as exc:
            raise translate_load_error(exc, doing) from exc
        with self._lock:
            self.stats.bytes_processed += job.total_bytes_processed or 0
            self.stats.bytes_billed += job.total_bytes_billed or 0
