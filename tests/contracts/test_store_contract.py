"""The OutboxStore contract: every store implementation passes these tests.

Runs against the in-memory double and the BigQuery store on bqemulator (with
both the Storage Write API and legacy streaming appenders).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from outbox.errors import InvalidRow
from outbox.ports import JournalEntry, OutboxStore, PendingRow
from outbox.samples import scraper_row, scraper_rows
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS, SCRAPER_EXECUTION_LOG
from outbox.testing import InMemoryOutboxStore

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SINCE = NOW - dt.timedelta(days=2)

StoreFactory = Callable[[], OutboxStore]
CHUNK_ROWS = 4
"""Rows per snapshot chunk for the BigQuery stores (the default is 10,000)."""


def _bigquery_factory(bq_emulator: Any, write_mode: str, read_mode: str) -> StoreFactory:
    from outbox.bigquery_tables import ensure_tables
    from outbox.wiring import Settings, Wiring

    settings = Settings(
        project=bq_emulator.project,
        bigquery_emulator=bq_emulator.rest_url.removeprefix("http://"),
        bigquery_emulator_grpc=bq_emulator.grpc_endpoint,
        write_mode=write_mode,  # type: ignore[arg-type]
        read_mode=read_mode,  # type: ignore[arg-type]
    )
    wiring = Wiring.build(settings)

    def make() -> OutboxStore:
        from outbox.bigquery_store import BigQueryOutboxStore

        dataset = f"contract_{uuid.uuid4().hex[:10]}"
        log = SCRAPER_EXECUTION_LOG.with_location(dataset)
        journal = OUTBOX_JOURNAL.with_location(dataset)
        runs = OUTBOX_RUNS.with_location(dataset)
        ensure_tables(wiring.bigquery, settings.project, [log, journal, runs])
        # Tiny snapshot chunks, so that every paging test here crosses chunks.
        return BigQueryOutboxStore(
            wiring.bigquery, wiring.appender, log, "scrapers", journal, reader=wiring.reader,
            snapshot_rows=CHUNK_ROWS,
        )

    return make


@pytest.fixture(
    params=[
        "memory",
        pytest.param("bigquery", marks=pytest.mark.emulator),
        pytest.param("bigquery-legacy", marks=pytest.mark.emulator),
        pytest.param("bigquery-query", marks=pytest.mark.emulator),
    ]
)
def store_factory(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    if request.param == "memory":
        yield lambda: InMemoryOutboxStore()
        return
    bq = request.getfixturevalue("bq_emulator")
    write = "legacy-streaming" if request.param == "bigquery-legacy" else "storage-write"
    read = "query" if request.param == "bigquery-query" else "storage-read"
    yield _bigquery_factory(bq, write, read)


@pytest.fixture
def store(store_factory: StoreFactory) -> OutboxStore:
    return store_factory()


def entry(row: PendingRow, outcome: str, error: str | None = None) -> JournalEntry:
    return JournalEntry(row.execution_id, row.triggered_at, outcome, "run1",  # type: ignore[arg-type]
                        message_id="m1" if outcome == "published" else None, error=error)


def test_empty_table_polls_nothing(store: OutboxStore) -> None:
    result = store.poll(SINCE, 10)
    assert (result.rows, result.backlog, result.oldest, result.unfolded) == ([], 0, None, 0)


def test_appended_rows_come_back_whole_and_in_order(store: OutboxStore) -> None:
    rows = scraper_rows(5, seed=1, now=NOW)
    store.append(list(reversed(rows)))
    result = store.poll(SINCE, 10)
    assert [p.execution_id for p in result.rows] == [r["execution_id"] for r in rows]
    assert result.backlog == 5 and result.oldest == rows[0]["triggered_at"]
    first = result.rows[0].row
    for key in ("scraper_name", "status", "workflow", "source", "data_summary", "opts"):
        assert first[key] == rows[0][key], key
    assert first["triggered_at"] == rows[0]["triggered_at"]
    assert all(p.attempts == 0 for p in result.rows)


def test_missing_required_field_is_refused_by_name_and_nothing_is_written(
    store: OutboxStore,
) -> None:
    good = scraper_row(now=NOW)
    bad = scraper_row(now=NOW)
    del bad["status"]
    with pytest.raises(InvalidRow) as err:
        store.append([good, bad])
    assert err.value.field == "status"
    assert store.poll(SINCE, 10).rows == []


def test_poll_filters_by_since_pages_by_cursor_and_limits(store: OutboxStore) -> None:
    old = scraper_row(now=NOW - dt.timedelta(days=5), execution_id="old00001")
    rows = scraper_rows(5, seed=2, now=NOW)
    store.append([old, *rows])
    first = store.poll(SINCE, 2)
    assert len(first.rows) == 2 and first.backlog == 5
    second = store.poll(SINCE, 2, after=first.rows[-1].cursor)
    third = store.poll(SINCE, 2, after=second.rows[-1].cursor)
    got = [p.execution_id for p in first.rows + second.rows + third.rows]
    assert got == [r["execution_id"] for r in rows]
    assert store.poll(NOW - dt.timedelta(days=6), 10).backlog == 6


def test_paging_through_many_pages_gives_every_row_once_in_order(store: OutboxStore) -> None:
    rows = scraper_rows(23, seed=8, now=NOW)
    store.append(list(reversed(rows)))
    got, after = [], None
    while page := store.poll(SINCE, 3, after=after).rows:
        assert len(page) <= 3
        got += [p.execution_id for p in page]
        after = page[-1].cursor
    assert got == [r["execution_id"] for r in rows]


def test_journaled_rows_leave_the_poll_and_fold_flags_them(store: OutboxStore) -> None:
    store.append(scraper_rows(3, seed=3, now=NOW))
    pending = store.poll(SINCE, 10).rows
    store.record([entry(pending[0], "published"), entry(pending[1], "published")])
    after = store.poll(SINCE, 10)
    assert [p.execution_id for p in after.rows] == [pending[2].execution_id]
    assert after.backlog == 1 and after.unfolded == 2
    assert store.fold(SINCE) == 2
    assert store.fold(SINCE) == 0
    assert store.poll(SINCE, 10).unfolded == 0


def test_mark_published_is_idempotent(store: OutboxStore) -> None:
    store.append(scraper_rows(4, seed=4, now=NOW))
    pending = store.poll(SINCE, 10).rows
    assert store.mark_published(pending[:3]) == 3
    assert store.mark_published(pending[:3]) == 0
    assert store.mark_published([]) == 0
    left = store.poll(SINCE, 10)
    assert [p.execution_id for p in left.rows] == [pending[3].execution_id]
    assert left.unfolded == 0


def test_failures_count_attempts_and_set_aside_rows_leave_the_poll(store: OutboxStore) -> None:
    store.append(scraper_rows(2, seed=5, now=NOW))
    a, b = store.poll(SINCE, 10).rows
    store.record([entry(a, "failed", "boom 1")])
    store.record([entry(a, "failed", "boom 2")])
    polled = {p.execution_id: p.attempts for p in store.poll(SINCE, 10).rows}
    assert polled == {a.execution_id: 2, b.execution_id: 0}
    store.record([entry(b, "failed", "too big"), entry(b, "set_aside", "too big")])
    assert [p.execution_id for p in store.poll(SINCE, 10).rows] == [a.execution_id]
    aside = store.set_aside(SINCE)
    assert [(s.execution_id, s.attempts, s.last_error) for s in aside] == [
        (b.execution_id, 1, "too big")
    ]
    assert aside[0].set_aside_at is not None


def test_published_count_counts_journaled_rows_once(store: OutboxStore) -> None:
    store.append(scraper_rows(3, seed=7, now=NOW))
    rows = store.poll(SINCE, 10).rows
    before = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    store.record([entry(rows[0], "published"), entry(rows[1], "published"),
                  entry(rows[1], "published"), entry(rows[2], "failed", "x")])
    assert store.published_count(SINCE, before) == 2
    assert store.published_count(SINCE, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == 0


def test_the_last_run_is_the_newest_recorded(store: OutboxStore) -> None:
    assert store.last_run(SINCE) is None
    store.record_run("run-1", "drained", {"published": 1})
    store.record_run("run-2", "deadline", {"published": 7, "when": NOW.isoformat()})
    last = store.last_run(SINCE)
    assert last is not None and last["run_id"] == "run-2" and last["stopped"] == "deadline"
    assert last["summary"]["published"] == 7
