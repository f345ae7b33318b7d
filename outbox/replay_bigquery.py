"""Replay's BigQuery source: the log rows of a window, a day at a time.

Split from :mod:`outbox.replay` so that the replay logic has no BigQuery in it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox.bigquery_errors import translate
from outbox.bigquery_sql import Param, Statement, decode_row, row_json, table_ref
from outbox.bigquery_store import query_params, transient_retry
from outbox.ports import Cursor, PendingRow
from outbox.replay import DAY, ReplayQuery, name_column
from outbox.routes import Route


def replay_statement(project: str, route: Route, query: ReplayQuery,
                     bounds: tuple[dt.datetime, dt.datetime], after: Cursor | None,
                     limit: int | None) -> Statement:
    """A page of rows (``limit``) or their count (``limit=None``) between ``bounds``.

    The partition column bounds every read; the name and status filters hit
    the table's clustering. Rows travel packed in one JSON cell, decoded by
    :func:`~outbox.bigquery_sql.decode_row` as in the relay's poll.
    """
    log, part = route.table, route.table.partition_column
    params = [Param("since", "TIMESTAMP", bounds[0]), Param("until", "TIMESTAMP", bounds[1])]
    where = [f"c.{part} >= @since", f"c.{part} < @until"]
    if query.names:
        where.append(f"c.{name_column(route)} IN UNNEST(@names)")
        params.append(Param("names", "STRING", list(query.names), array=True))
    if query.statuses:
        where.append("c.status IN UNNEST(@statuses)")
        params.append(Param("statuses", "STRING", list(query.statuses), array=True))
    if after is not None:
        where.append(f"(c.{part} > @after_ts OR (c.{part} = @after_ts "
                     f"AND c.execution_id > @after_id))")
        params += [Param("after_ts", "TIMESTAMP", after[0]),
                   Param("after_id", "STRING", after[1])]
    filters = "\n  AND ".join(where)
    if limit is None:
        sql = f"SELECT COUNT(*) AS n\nFROM {table_ref(project, log)} AS c\nWHERE {filters}"
        return Statement(sql, tuple(params))
    sql = (f"SELECT {row_json(log, route.columns)} AS _row\n"
           f"FROM {table_ref(project, log)} AS c\nWHERE {filters}\n"
           f"ORDER BY c.{part}, c.execution_id\nLIMIT @limit")
    return Statement(sql, (*params, Param("limit", "INT64", limit)))


class BigQueryReplaySource:
    """Reads a window one UTC day at a time, in keyset pages of ``page_size``.

    Why per day: a page query reads every selected column of the partitions
    it touches, so paging the whole window would re-read it once per page.
    Bounded to the cursor's day, each page reads one partition.
    """

    def __init__(self, client: bigquery.Client, route: Route, project: str | None = None,
                 page_size: int = 5000, max_bytes_billed: int | None = 10 * 1024**3) -> None:
        self.client, self.route = client, route
        self.project = project or client.project
        self.page_size, self.max_bytes_billed = page_size, max_bytes_billed
        self.jobs = 0

    @transient_retry
    def _query(self, stmt: Statement, doing: str, dry_run: bool = False) -> bigquery.QueryJob:
        config = bigquery.QueryJobConfig(
            query_parameters=query_params(stmt), dry_run=dry_run, use_query_cache=not dry_run,
            labels={"component": "outbox-replay", "route": self.route.name.lower()})
        if self.max_bytes_billed is not None:
            config.maximum_bytes_billed = self.max_bytes_billed
        try:
            job = self.client.query(stmt.sql, job_config=config)
            if not dry_run:
                job.result()
        except (gexc.GoogleAPICallError, ConnectionError, TimeoutError) as exc:
            raise translate(exc, doing) from exc
        self.jobs += 1
        return job

    def count(self, query: ReplayQuery, after: Cursor | None = None) -> int:
        stmt = replay_statement(self.project, self.route, query, query.window(), after, None)
        job = self._query(stmt, "count the replay's rows")
        return int(next(iter(job.result()))["n"] or 0)

    def estimate_bytes(self, query: ReplayQuery) -> int | None:
        stmt = replay_statement(self.project, self.route, query, query.window(), None,
                                self.page_size)
        job = self._query(stmt, "dry-run the replay's query", dry_run=True)
        return int(job.total_bytes_processed or 0)

    def rows(self, query: ReplayQuery, after: Cursor | None = None) -> Iterator[PendingRow]:
        start, end = query.window()
        day = start
        if after is not None:
            day = max(start, dt.datetime.combine(after[0].astimezone(dt.UTC).date(),
                                                 dt.time(), dt.UTC))
        while day < end:
            bounds = (day, min(day + DAY, end))
            cursor = after if after is not None and after[0] >= day else None
            while True:
                stmt = replay_statement(self.project, self.route, query, bounds, cursor,
                                        self.page_size)
                job = self._query(stmt, f"read {self.route.table.name} for the replay")
                page = [decode_row(self.route.table, r["_row"]) for r in job.result()]
                part = self.route.table.partition_column
                yield from (PendingRow(r["execution_id"], r[part], r) for r in page)
                if len(page) < self.page_size:
                    break
                cursor = (page[-1][part], page[-1]["execution_id"])
            day = bounds[1]
