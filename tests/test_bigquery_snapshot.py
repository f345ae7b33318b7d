"""The chunked snapshot (outbox/bigquery_read.py), without an emulator.

A snapshot holds the keys of every pending row but the rows of one chunk at a
time, read by triggered_at range. These check that paging through it still
gives every pending row once, in (triggered_at, execution_id) order, whatever
the chunk and page sizes, at chunk boundaries inside a run of equal
timestamps, and when rows appear or disappear between the snapshot and a
chunk's read. The contract suite runs the same paging on bqemulator.
"""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot
from sqlglot import exp

from outbox.bigquery_read import (
    Snapshot,
    journal_state,
    log_restriction,
    range_restriction,
)
from outbox.ports import PollResult
from outbox.schema import SCRAPER_EXECUTION_LOG

LOG = SCRAPER_EXECUTION_LOG
T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SINCE = T0 - dt.timedelta(days=3)
TS = pa.timestamp("us", tz="UTC")


class FakeLog:
    """A log table in Arrow; ``read`` is a chunk read (range, unpublished),
    returned shuffled as a read session may return it."""

    def __init__(self, rows: list[tuple[str, dt.datetime]]) -> None:
        self.ids = [eid for eid, _ in rows]
        self.at = [at for _, at in rows]
        self.status = [f"s-{eid}" for eid in self.ids]
        self.published = [False] * len(rows)
        self.reads: list[tuple[dt.datetime, dt.datetime]] = []

    def table(self) -> pa.Table:
        return pa.table({"execution_id": pa.array(self.ids, pa.string()),
                         "triggered_at": pa.array(self.at, TS),
                         "status": pa.array(self.status, pa.string()),
                         "published": pa.array(self.published, pa.bool_())})

    def keys(self) -> pa.Table:
        t = self.table()
        return t.filter(pc.invert(t.column("published"))).select(["execution_id", "triggered_at"])

    def read(self, lo: dt.datetime, hi: dt.datetime) -> pa.Table:
        self.reads.append((lo, hi))
        t = self.table()
        at = t.column("triggered_at")
        keep = pc.and_(pc.and_(pc.greater_equal(at, pa.scalar(lo, TS)),
                               pc.less_equal(at, pa.scalar(hi, TS))),
                       pc.invert(t.column("published")))
        t = t.filter(keep).select(["execution_id", "triggered_at", "status"])
        order = list(range(t.num_rows))
        random.Random(len(self.reads)).shuffle(order)
        return t.take(pa.array(order, pa.int64()))


def no_journal() -> pa.Table:
    return pa.table({"execution_ids": pa.array([], pa.list_(pa.string())),
                     "outcome": pa.array([], pa.string())})


def snapshot(log: FakeLog, chunk_rows: int, journal: pa.Table | None = None) -> Snapshot:
    return Snapshot(LOG, log.keys(), journal_state(journal or no_journal()), SINCE, log.read,
                    chunk_rows)


def drain(snap: Snapshot, limit: int) -> tuple[list[str], list[PollResult]]:
    seen: list[str] = []
    polls: list[PollResult] = []
    after = None
    while True:
        poll = snap.page(limit, after)
        polls.append(poll)
        assert len(poll.rows) <= limit
        if not poll.rows:
            return seen, polls
        seen += [p.execution_id for p in poll.rows]
        after = poll.rows[-1].cursor


def rows(n: int, same_every: int = 1) -> list[tuple[str, dt.datetime]]:
    """``n`` rows, ``same_every`` of them sharing each timestamp, ids shuffled."""
    out = [(f"e{i:05d}", T0 + dt.timedelta(milliseconds=i // same_every)) for i in range(n)]
    random.Random(n).shuffle(out)
    return out


def expected(log: FakeLog) -> list[str]:
    return [eid for at, eid in sorted(zip(log.at, log.ids, strict=True))]


@pytest.mark.parametrize(("n", "chunk_rows", "limit", "same_every"), [
    (25, 4, 3, 1), (25, 4, 4, 1), (25, 6, 10, 1), (25, 100, 7, 1),
    (30, 4, 3, 5), (30, 5, 2, 30), (1, 1, 1, 1),
])
def test_every_pending_row_once_in_order(n: int, chunk_rows: int, limit: int,
                                         same_every: int) -> None:
    log = FakeLog(rows(n, same_every))
    snap = snapshot(log, chunk_rows)
    seen, polls = drain(snap, limit)
    assert seen == expected(log)
    assert {p.backlog for p in polls} == {n}
    assert {p.oldest for p in polls} == {min(log.at)}
    assert len(log.reads) == -(-n // chunk_rows)  # each chunk read once


def test_the_rows_come_back_whole() -> None:
    log = FakeLog(rows(9))
    poll = snapshot(log, 4).page(9, None)
    by_id = {p.execution_id: p for p in poll.rows}
    for eid, at, status in zip(log.ids, log.at, log.status, strict=True):
        assert by_id[eid].triggered_at == at
        assert by_id[eid].row == {"execution_id": eid, "triggered_at": at, "status": status}


def test_a_chunk_is_read_only_when_a_page_needs_it_and_let_go_when_drained() -> None:
    log = FakeLog(rows(12))
    snap = snapshot(log, 4)
    assert log.reads == []
    first = snap.page(4, None)
    assert len(log.reads) == 1
    snap.page(4, first.rows[-1].cursor)
    assert len(log.reads) == 2
    drain(snap, 4)
    assert snap._chunk is None  # nothing held between runs


def test_journaled_and_set_aside_rows_are_left_out_and_counted() -> None:
    log = FakeLog(rows(10))
    order = expected(log)
    journal = pa.table({
        "execution_ids": pa.array([[order[0], order[5]], [order[7]], [order[2]], [order[2]]],
                                  pa.list_(pa.string())),
        "outcome": ["published", "set_aside", "failed", "failed"],
    })
    snap = snapshot(log, 3, journal)
    seen, polls = drain(snap, 2)
    assert seen == [e for e in order if e not in (order[0], order[5], order[7])]
    assert polls[0].backlog == 7 and polls[0].unfolded == 2
    attempts = {p.execution_id: p.attempts for p in snapshot(log, 3, journal).page(10, None).rows}
    assert attempts[order[2]] == 2 and attempts[order[1]] == 0


def test_rows_that_arrive_after_the_snapshot_wait_for_the_next_one() -> None:
    log = FakeLog(rows(8))
    snap = snapshot(log, 4)
    late = T0 + dt.timedelta(microseconds=500)  # inside the first chunk's range
    log.ids.append("late")
    log.at.append(late)
    log.status.append("s-late")
    log.published.append(False)
    seen, _ = drain(snap, 3)
    assert "late" not in seen and len(seen) == 8
    assert "late" in drain(snapshot(log, 4), 3)[0]


def test_rows_published_meanwhile_are_skipped_and_paging_goes_on() -> None:
    log = FakeLog(rows(12))
    order = expected(log)
    snap = snapshot(log, 4)
    # Another relay flags the whole second chunk and one row of the third.
    for eid in [*order[4:8], order[9]]:
        log.published[log.ids.index(eid)] = True
    seen, _ = drain(snap, 4)
    assert seen == order[:4] + order[8:9] + order[10:]


def test_an_empty_window() -> None:
    empty = pa.table({"execution_id": pa.array([], pa.string()),
                      "triggered_at": pa.array([], pa.string())})  # as StorageReader returns it
    snap = Snapshot(LOG, empty, journal_state(no_journal()), SINCE,
                    lambda lo, hi: pytest.fail("no chunk to read"), 10)
    poll = snap.page(5, None)
    assert (poll.rows, poll.backlog, poll.oldest, poll.unfolded) == ([], 0, None, 0)


def test_a_chunk_restriction_is_the_log_restriction_from_its_first_key_plus_an_upper_bound(
) -> None:
    lo, hi = T0, T0 + dt.timedelta(minutes=5, microseconds=7)
    text = range_restriction(LOG, lo, hi)
    assert text.startswith(log_restriction(LOG, lo) + " AND ")
    where = sqlglot.parse_one(f"SELECT 1 FROM t WHERE {text}", read="bigquery").args["where"]
    assert not list(where.find_all(exp.Or))
    bounds = {type(c).__name__: c.expression.this.this for c in where.find_all(exp.GTE, exp.LTE)
              if isinstance(c.this, exp.Column) and c.this.name == LOG.partition_column}
    assert dt.datetime.fromisoformat(bounds["GTE"]) == lo
    assert dt.datetime.fromisoformat(bounds["LTE"]) == hi


# -- what the store asks the Read API for -------------------------------------------------


class RecordingReader:
    """A StorageReader that answers the keys read from ``keys`` and records every
    restriction it is given."""

    def __init__(self, keys: pa.Table) -> None:
        self.keys = keys
        self.restrictions: list[tuple[str, str]] = []

    def read(self, spec: object, columns: list[str], restriction: str) -> pa.Table:
        name = getattr(spec, "name", "?")
        self.restrictions.append((name, restriction))
        if name == "outbox_journal":
            return pa.table({"execution_ids": pa.array([], pa.list_(pa.string())),
                             "outcome": pa.array([], pa.string())})
        return self.keys


def _store(reader: RecordingReader) -> object:
    from types import SimpleNamespace

    from outbox.bigquery_store import BigQueryOutboxStore

    client = SimpleNamespace(project="p-proj")
    return BigQueryOutboxStore(client, SimpleNamespace(), LOG, "scrapers",  # type: ignore[arg-type]
                               reader=reader)  # type: ignore[arg-type]


def test_the_journal_is_read_from_the_oldest_pending_row_not_the_window_start() -> None:
    oldest = T0 - dt.timedelta(hours=2)
    keys = FakeLog([("b", T0), ("a", oldest)]).keys()
    reader = RecordingReader(keys)
    _store(reader).poll(SINCE, 10)  # type: ignore[attr-defined]
    journal = [r for name, r in reader.restrictions if name == "outbox_journal"]
    assert len(journal) == 1
    tree = sqlglot.parse_one(f"SELECT 1 FROM t WHERE {journal[0]}", read="bigquery")
    bound = next(c for c in tree.find_all(exp.GTE) if c.this.name == "triggered_at")
    assert oldest.strftime("%Y-%m-%d %H:%M:%S") in bound.expression.sql()


def test_an_idle_poll_reads_the_keys_and_nothing_else() -> None:
    reader = RecordingReader(FakeLog([]).keys())
    result = _store(reader).poll(SINCE, 10)  # type: ignore[attr-defined]
    assert result.rows == [] and [name for name, _ in reader.restrictions] == [LOG.name]
