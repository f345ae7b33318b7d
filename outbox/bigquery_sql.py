"""SQL for the BigQuery store, built as data.

Each function returns a :class:`Statement`: the SQL text and its parameters.
Identifiers come only from validated :class:`~outbox.schema.TableSpec`s and
the validated project id; every value is a query parameter. Every statement
filters on the partition column, so no poll scans the whole table. The unit
tests parse these with sqlglot to prove it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from outbox.ports import Cursor
from outbox.schema import PUBLISHED, PUBLISHED_AT, TableSpec, check_project


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    value: Any
    array: bool = False


@dataclass(frozen=True)
class Statement:
    sql: str
    params: tuple[Param, ...]

    def param(self, name: str) -> Any:
        return next(p.value for p in self.params if p.name == name)


def table_ref(project: str, spec: TableSpec) -> str:
    return f"`{check_project(project)}.{spec.dataset}.{spec.name}`"


def _journal_cte(project: str, journal: TableSpec) -> str:
    return f"""journal AS (
  SELECT execution_id,
    LOGICAL_OR(outcome = 'published') AS journaled,
    LOGICAL_OR(outcome = 'set_aside') AS set_aside,
    COUNTIF(outcome = 'failed') AS attempts
  FROM {table_ref(project, journal)}
  WHERE {journal.partition_field} >= @since AND route = @route
  GROUP BY execution_id
)"""


def poll(
    project: str,
    log: TableSpec,
    journal: TableSpec,
    route: str,
    since: dt.datetime,
    limit: int,
    after: Cursor | None,
) -> Statement:
    """One query: a page of rows to publish plus the backlog's statistics.

    The statistics ride along on every row (and on a single all-NULL row when
    the page is empty), so the relay learns the backlog, the oldest pending
    row and whether a fold is due without a second job.
    """
    cols = ", ".join(f"l.{c}" for c in log.column_names)
    part = log.partition_field
    sql = f"""WITH {_journal_cte(project, journal)},
candidates AS (
  SELECT {cols}, IFNULL(j.journaled, FALSE) AS _journaled, IFNULL(j.attempts, 0) AS _attempts
  FROM {table_ref(project, log)} AS l
  LEFT JOIN journal AS j ON j.execution_id = l.execution_id
  WHERE l.{part} >= @since AND l.{PUBLISHED} IS NOT TRUE AND IFNULL(j.set_aside, FALSE) = FALSE
),
stats AS (
  SELECT COUNTIF(NOT _journaled) AS _backlog,
    MIN(IF(_journaled, NULL, {part})) AS _oldest,
    COUNTIF(_journaled) AS _unfolded
  FROM candidates
),
page AS (
  SELECT * FROM candidates
  WHERE NOT _journaled
    AND (@has_after = FALSE OR {part} > @after_ts
         OR ({part} = @after_ts AND execution_id > @after_id))
  ORDER BY {part}, execution_id
  LIMIT @limit
)
SELECT stats._backlog, stats._oldest, stats._unfolded, page.*
FROM stats LEFT JOIN page ON TRUE
ORDER BY page.{part}, page.execution_id"""
    after_ts, after_id = after if after else (since, "")
    return Statement(
        sql,
        (
            Param("since", "TIMESTAMP", since),
            Param("route", "STRING", route),
            Param("has_after", "BOOL", after is not None),
            Param("after_ts", "TIMESTAMP", after_ts),
            Param("after_id", "STRING", after_id),
            Param("limit", "INT64", limit),
        ),
    )


def mark_published(
    project: str, log: TableSpec, ids: Sequence[str], lo: dt.datetime, hi: dt.datetime
) -> Statement:
    """Flag a batch. The BETWEEN on the partition column prunes to the batch's days."""
    part = log.partition_field
    sql = f"""UPDATE {table_ref(project, log)}
SET {PUBLISHED} = TRUE, {PUBLISHED_AT} = CURRENT_TIMESTAMP()
WHERE {part} BETWEEN @lo AND @hi
  AND execution_id IN UNNEST(@ids)
  AND {PUBLISHED} IS NOT TRUE"""
    return Statement(
        sql,
        (
            Param("lo", "TIMESTAMP", lo),
            Param("hi", "TIMESTAMP", hi),
            Param("ids", "STRING", list(ids), array=True),
        ),
    )


def fold(
    project: str, log: TableSpec, journal: TableSpec, route: str, since: dt.datetime
) -> Statement:
    """Carry the journal's 'published' outcomes into the flag."""
    part = log.partition_field
    sql = f"""UPDATE {table_ref(project, log)}
SET {PUBLISHED} = TRUE, {PUBLISHED_AT} = CURRENT_TIMESTAMP()
WHERE {part} >= @since
  AND {PUBLISHED} IS NOT TRUE
  AND execution_id IN (
    SELECT execution_id FROM {table_ref(project, journal)}
    WHERE {journal.partition_field} >= @since AND route = @route AND outcome = 'published'
  )"""
    return Statement(sql, (Param("since", "TIMESTAMP", since), Param("route", "STRING", route)))


def set_aside(
    project: str, log: TableSpec, journal: TableSpec, route: str, since: dt.datetime
) -> Statement:
    jt, part = table_ref(project, journal), journal.partition_field
    sql = f"""WITH journal AS (
  SELECT execution_id,
    ANY_VALUE({part}) AS triggered_at,
    LOGICAL_OR(outcome = 'published') AS journaled,
    MAX(IF(outcome = 'set_aside', recorded_at, NULL)) AS set_aside_at,
    COUNTIF(outcome = 'failed') AS attempts
  FROM {jt}
  WHERE {part} >= @since AND route = @route
  GROUP BY execution_id
),
errors AS (
  SELECT execution_id, error,
    ROW_NUMBER() OVER (PARTITION BY execution_id ORDER BY recorded_at DESC) AS n
  FROM {jt}
  WHERE {part} >= @since AND route = @route AND error IS NOT NULL
)
SELECT j.execution_id, j.triggered_at, j.attempts, e.error AS last_error, j.set_aside_at
FROM journal AS j
JOIN {table_ref(project, log)} AS l ON l.execution_id = j.execution_id
LEFT JOIN errors AS e ON e.execution_id = j.execution_id AND e.n = 1
WHERE l.{log.partition_field} >= @since AND l.{PUBLISHED} IS NOT TRUE
  AND j.set_aside_at IS NOT NULL AND NOT j.journaled
ORDER BY j.triggered_at, j.execution_id"""
    return Statement(sql, (Param("since", "TIMESTAMP", since), Param("route", "STRING", route)))
