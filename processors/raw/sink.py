"""The port through which processors write ``nba_raw`` tables.

One call loads one file's rows idempotently. The semantics, shared by the
BigQuery sink and the in-memory double (and pinned by one contract suite):

- A row is identified by ``game_date`` plus the table's natural key; only the
  game dates present in ``rows`` are touched.
- A matching row is replaced only if the incoming file is at least as new
  (``scraped_at`` not older), so an old file redelivered late cannot undo a
  newer one. Loading the same rows again leaves the same rows.
- ``replace=True`` says the rows are the whole truth for their game dates:
  rows of those dates that are absent, and not newer, are deleted.
- Rows sharing a key within one call: the last one wins.
- Every row is validated first; an invalid one refuses the whole call.
- A refusal that a retry can cure (concurrent DML on the same table, quota)
  is a :class:`LoadRefused`, a ``TransientError``: the service answers 503
  and Pub/Sub redelivers, which is safe because the load is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from outbox.errors import PermanentError, TransientError
from outbox.rows import Row, validate_row
from processors.raw.tables import SCRAPED_AT, RawTable

MAX_ROWS_PER_STATEMENT = 4000
"""About 1 KB per row travels as a query parameter; BigQuery takes requests up
to 10 MB. Bigger snapshot files are loaded in several statements; a full-day
file (whose delete needs one statement) that big is refused."""


class LoadRefused(TransientError):
    """BigQuery refused the load for now (concurrent update, quota); retry later."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"load refused for now ({reason}): {detail}")
        self.reason = reason


class RawTableSink(Protocol):
    def upsert(self, table: RawTable, rows: Sequence[Mapping[str, Any]], *,
               replace: bool = False) -> int:
        """Load ``rows`` as described above; returns how many distinct rows were loaded."""
        ...


def prepare(table: RawTable, rows: Sequence[Mapping[str, Any]], replace: bool,
            max_rows: int) -> list[Row]:
    """Validate and de-duplicate ``rows`` (last wins) before any write.

    Both sinks call this, so both refuse and collapse rows the same way.
    """
    if replace and not table.full_day:
        raise PermanentError(f"{table.spec.name} holds snapshots; its files never replace a day")
    unique: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        clean = validate_row(table.spec, row)
        unique[table.key(clean)] = clean
    out = list(unique.values())
    if replace and len(out) > max_rows:
        raise PermanentError(
            f"{table.spec.name}: {len(out)} rows replace a day in one statement, "
            f"more than {max_rows}; split the file by day"
        )
    return out


def chunks(rows: list[Row], max_rows: int) -> list[list[Row]]:
    return [rows[i:i + max_rows] for i in range(0, len(rows), max_rows)]


def newest_scraped_at(rows: Sequence[Row]) -> Any:
    """The newest ``scraped_at`` of a load: rows older than it may be deleted."""
    return max(r[SCRAPED_AT] for r in rows)
