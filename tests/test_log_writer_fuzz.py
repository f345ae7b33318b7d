"""The log writer fed rows with every field missing, wrong-typed or oversized.

Why: a bad row must be refused whole, before anything is written, with the column
named (``InvalidRow.field``), so that the caller's bug is found at once instead of as a
hole in the outbox; and a row that is accepted must be one the Storage Write API can take.

Two writers get every row: the in-memory double (what the services' tests use) and the
production store, ``BigQueryOutboxStore`` over ``StorageWriteAppender``, with only the
gRPC client faked, so that a row is really serialised into an ``AppendRowsRequest``.
They must refuse the same rows with the same field. Both log tables, every column,
systematically; then the scrapers' ``write_row``; then hypothesis.

The corners where the validator once raised something other than ``InvalidRow`` (or
accepted what BigQuery cannot store) have their own tests at the end: a float beyond
FLOAT64, a timestamp outside years 1-9999 in UTC, JSON nested past 500 levels, a lone
surrogate.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_write import StorageWriteAppender
from outbox.errors import InvalidRow
from outbox.rows import MAX_JSON_BYTES
from outbox.schema import (
    PROCESSOR_EXECUTION_LOG,
    PUBLISHED,
    SCRAPER_EXECUTION_LOG,
    Column,
    TableSpec,
)
from outbox.testing import InMemoryOutboxStore
from scrapers.run_log import LogWriteFailed, write_row

CI = os.environ.get("CI", "").strip().lower() == "true"
TABLES = {"scrapers": SCRAPER_EXECUTION_LOG, "processors": PROCESSOR_EXECUTION_LOG}
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
APPEND_ROWS_LIMIT = 10 * 1024 * 1024
"""The Storage Write API refuses an ``AppendRowsRequest`` of 10 MB or more."""
STORE_DEFAULTS = {"created_at", PUBLISHED}
"""Columns the stores fill in when the row has none."""

GOOD: dict[str, Any] = {"STRING": "x", "INT64": 7, "FLOAT64": 1.5, "BOOL": True,
                        "TIMESTAMP": NOW, "DATE": dt.date(2026, 11, 28),
                        "JSON": {"record_count": 1, "pages": [1, "2"]}}
WRONG: dict[str, list[Any]] = {
    "STRING": [7, 1.5, True, b"x", ["x"], {"x": 1}, NOW, dt.date(2026, 11, 28)],
    "INT64": ["7", 7.0, True, b"7", [7], 2**63, -(2**63) - 1, NOW],
    "FLOAT64": ["1.5", True, b"1", [1.5], math.nan, math.inf, -math.inf, NOW],
    "BOOL": [1, 0, 1.0, "true", "false", b"", [True], NOW],
    "TIMESTAMP": [NOW.replace(tzinfo=None), "2026-11-28T12:00:00", "yesterday", "",
                  1_764_331_200, 1.5, True, dt.date(2026, 11, 28), [NOW]],
    "DATE": [NOW, "2026-13-01", "28/11/2026", "", 20261128, True, [dt.date(2026, 11, 28)]],
    "JSON": [object(), {1, 2}, math.nan, math.inf, b"x", NOW, dt.date(2026, 11, 28),
             {"k": object()}, {(1, 2): 1}, [math.nan]],
}


def full_row(spec: TableSpec) -> dict[str, Any]:
    """Every column set to a valid value."""
    return {c.name: GOOD[c.type] for c in spec.columns}


def cases(without: frozenset[str] = frozenset()) -> Iterator[Any]:
    """(table, column) for every column of both log tables, but those of a type in ``without``."""
    for table, spec in TABLES.items():
        for col in spec.columns:
            if col.type not in without:
                yield pytest.param(table, col, id=f"{table}.{col.name}")


# -- the writers -------------------------------------------------------------------------


@dataclass
class FakeWriteClient:
    """``BigQueryWriteClient.append_rows`` that keeps the requests and answers success."""

    requests: list[Any] = field(default_factory=list)

    def append_rows(self, requests: Iterable[Any]) -> list[Any]:
        self.requests.extend(requests)
        return []


@dataclass(repr=False)  # pytest and hypothesis print the writers of a failing example
class Writers:
    spec: TableSpec
    memory: InMemoryOutboxStore
    wire: FakeWriteClient
    bigquery: BigQueryOutboxStore

    @classmethod
    def of(cls, table: str) -> Writers:
        spec, wire = TABLES[table], FakeWriteClient()
        client: Any = SimpleNamespace(project="test-project")  # appends run no query
        appender = StorageWriteAppender(wire, "test-project")
        store = BigQueryOutboxStore(client, appender, spec, table)
        return cls(spec, InMemoryOutboxStore(spec, table), wire, store)

    def written(self) -> tuple[int, int]:
        return len(self.memory.rows), len(self.wire.requests)

    def refused(self, rows: list[Any]) -> InvalidRow:
        """Both writers refuse ``rows`` with the same field and write nothing."""
        errors, before = [], self.written()
        for writer in (self.memory, self.bigquery):
            with pytest.raises(InvalidRow) as info:
                writer.append(rows)
            errors.append(info.value)
        assert self.written() == before, "a refused row was written"
        assert errors[0].field == errors[1].field and errors[0].problem
        return errors[0]

    def accepted(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Both writers take ``row``; the production one builds a request BigQuery takes."""
        before = self.written()
        self.memory.append([row])
        self.bigquery.append([row])
        assert self.written() == (before[0] + 1, before[1] + 1)
        request = self.wire.requests[-1]
        assert len(request.proto_rows.rows.serialized_rows) == 1
        assert type(request).pb(request).ByteSize() < APPEND_ROWS_LIMIT
        return self.memory.rows[-1]


# -- every column: missing, wrong-typed, oversized -----------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_a_valid_row_appends_full_or_with_only_its_required_columns(table: str) -> None:
    writers = Writers.of(table)
    full = full_row(writers.spec)
    assert writers.accepted(full) == full
    minimal = {c.name: GOOD[c.type] for c in writers.spec.columns if c.required}
    stored = writers.accepted(minimal)
    assert set(stored) == set(minimal) | STORE_DEFAULTS


@pytest.mark.parametrize(("table", "col"), cases())
@pytest.mark.parametrize("how", ["absent", "None"])
def test_a_missing_field_is_refused_by_name_when_required(table: str, col: Column,
                                                          how: str) -> None:
    writers = Writers.of(table)
    row = full_row(writers.spec)
    if how == "absent":
        del row[col.name]
    else:
        row[col.name] = None
    if col.required:
        error = writers.refused([row])
        assert (error.field, error.problem) == (col.name, "is required")
    else:
        stored = writers.accepted(row)
        assert (col.name in stored) == (col.name in STORE_DEFAULTS)


@pytest.mark.parametrize(("table", "col"), cases())
def test_each_wrong_type_is_refused_naming_the_field(table: str, col: Column) -> None:
    for value in WRONG[col.type]:
        writers = Writers.of(table)
        row = {**full_row(writers.spec), col.name: value}
        error = writers.refused([row])
        assert error.field == col.name, (value, error)


@pytest.mark.parametrize(("table", "col"), cases(without=frozenset({"BOOL"})))
def test_an_oversized_field_is_refused_or_cut_and_one_at_the_limit_appends(
        table: str, col: Column) -> None:
    writers = Writers.of(table)

    def set_to(value: Any) -> dict[str, Any]:
        return {**full_row(writers.spec), col.name: value}

    if col.type == "STRING":
        assert col.max_length is not None, f"{col.name}: a STRING column without a limit"
        at_limit = "\u00e9" * col.max_length  # the limit counts characters, not bytes
        assert writers.accepted(set_to(at_limit))[col.name] == at_limit
        over = set_to("x" * (col.max_length + 1))
        if col.truncate:
            assert writers.accepted(over)[col.name] == "x" * col.max_length
        else:
            error = writers.refused([over])
            assert (error.field, error.problem) == (
                col.name, f"longer than {col.max_length} characters")
    elif col.type == "JSON":
        padding = MAX_JSON_BYTES - len(json.dumps({"k": ""}))
        writers.accepted(set_to({"k": "x" * padding}))
        error = writers.refused([set_to({"k": "x" * (padding + 1)})])
        assert error.field == col.name and str(MAX_JSON_BYTES) in error.problem
    elif col.type == "INT64":
        writers.accepted(set_to(2**63 - 1))
        writers.accepted(set_to(-(2**63)))
        assert writers.refused([set_to(2**63)]).field == col.name
    elif col.type == "FLOAT64":
        writers.accepted(set_to(1.7976931348623157e308))
        assert writers.refused([set_to(math.inf)]).field == col.name
    elif col.type == "TIMESTAMP":
        latest = dt.datetime.max.replace(tzinfo=dt.UTC)
        assert writers.accepted(set_to(latest))[col.name] == latest
        assert writers.refused([set_to("9" * 100)]).field == col.name
    else:
        assert col.type == "DATE", col
        assert writers.accepted(set_to("9999-12-31"))[col.name] == dt.date.max
        assert writers.refused([set_to("9999-12-32")]).field == col.name


def test_the_largest_row_the_validator_allows_fits_one_append_request() -> None:
    """Every STRING at its limit (4-byte characters) and every JSON at 1 MB: about 2 MB,
    under the 10 MB request limit, so a one-row append (all the services do) always fits."""
    writers = Writers.of("scrapers")
    row = {c.name: ("\U0001f3c0" * c.max_length if c.type == "STRING" and c.max_length
                    else {"k": "x" * (MAX_JSON_BYTES - 10)} if c.type == "JSON"
                    else GOOD[c.type]) for c in writers.spec.columns}
    writers.accepted(row)


def test_an_unknown_column_a_non_string_key_or_a_non_mapping_is_refused_by_name() -> None:
    writers = Writers.of("scrapers")
    assert writers.refused([{**full_row(writers.spec), "scraper": "x"}]).field == "scraper"
    assert writers.refused([{**full_row(writers.spec), 7: "x"}]).field == "7"
    assert writers.refused([["execution_id", "x"]]).field == "<row>"


@pytest.mark.parametrize("table", TABLES)
def test_one_bad_row_refuses_the_whole_batch(table: str) -> None:
    writers = Writers.of(table)
    good = full_row(writers.spec)
    error = writers.refused([good, {**good, "status": None}, good])
    assert error.field == "status"


@pytest.mark.parametrize("col", SCRAPER_EXECUTION_LOG.columns, ids=lambda c: c.name)
def test_the_scrapers_write_row_fails_at_once_naming_the_field(col: Column) -> None:
    """``write_row`` retries transient failures only: a bad row is not retried, and the
    ``LogWriteFailed`` it raises (the service's 500) carries the ``InvalidRow``."""
    store, sleeps = InMemoryOutboxStore(), list[float]()
    row = {**full_row(SCRAPER_EXECUTION_LOG), col.name: WRONG[col.type][0]}
    with pytest.raises(LogWriteFailed) as info:
        write_row(store, row, sleep=sleeps.append)
    assert isinstance(info.value.cause, InvalidRow) and info.value.cause.field == col.name
    assert store.rows == [] and sleeps == []


# -- hypothesis ----------------------------------------------------------------------------

ZONES = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                         dt.timezone(dt.timedelta(hours=-8))])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**100), 2**100), st.floats(),
    st.text(max_size=16), st.binary(max_size=8),
    st.integers(0, 1100).map("s".__mul__),  # around every STRING limit
    # Years 2..9998: the first and last day overflow on the way to UTC (xfail below).
    st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31), timezones=ZONES),
    st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31)),
    st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31)).map(str), st.dates(),
    st.dates().map(str),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def typed(col: Column) -> st.SearchStrategy[Any]:
    """Values of about the column's type, many of them valid, and its edges."""
    if col.type == "STRING":
        limit = col.max_length or 1000
        return st.text(max_size=20) | st.integers(limit - 2, limit + 2).map("s".__mul__)
    if col.type == "INT64":
        return st.integers(-(2**63) - 2, 2**63 + 1) | st.sampled_from([-(2**63), 2**63 - 1])
    if col.type == "FLOAT64":
        return st.floats() | st.integers(-(10**6), 10**6)
    if col.type == "BOOL":
        return st.booleans()
    if col.type == "TIMESTAMP":
        aware = st.datetimes(dt.datetime(2, 1, 1), dt.datetime(9998, 12, 31), timezones=ZONES)
        return aware | aware.map(dt.datetime.isoformat)
    if col.type == "DATE":
        return st.dates() | st.dates().map(str)
    return values


@st.composite
def mangled_rows(draw: st.DrawFn, spec: TableSpec) -> tuple[dict[str, Any], set[str]]:
    """A valid row with some fields removed, set to a value of about their type, or set to
    anything, and now and then an unknown field: (row, the fields touched)."""
    row = full_row(spec)
    touched = set(draw(st.lists(st.sampled_from(spec.columns), max_size=4, unique=True)))
    for col in touched:
        how = draw(st.sampled_from(["remove", "typed", "typed", "anything"]))
        if how == "remove":
            del row[col.name]
        else:
            row[col.name] = draw(typed(col) if how == "typed" else values)
    names = {col.name for col in touched}
    if draw(st.sampled_from([False] * 9 + [True])):
        extra = draw(st.text(max_size=10))
        row[extra] = draw(values)
        names.add(extra)
    return row, names


def check_storable(spec: TableSpec, row: Mapping[str, Any]) -> None:
    """What BigQuery needs of every stored value, whatever the validator let through."""
    for col in spec.columns:
        value = row.get(col.name)
        if value is None:
            assert not col.required, col.name
        elif col.type == "STRING":
            assert isinstance(value, str) and len(value) <= (col.max_length or len(value))
        elif col.type == "INT64":
            assert type(value) is int and -(2**63) <= value < 2**63
        elif col.type == "FLOAT64":
            assert type(value) is float and math.isfinite(value)
        elif col.type == "BOOL":
            assert type(value) is bool
        elif col.type == "TIMESTAMP":
            assert isinstance(value, dt.datetime) and value.utcoffset() == dt.timedelta(0)
        elif col.type == "DATE":
            assert type(value) is dt.date
        else:
            assert len(json.dumps(value, allow_nan=False).encode()) <= MAX_JSON_BYTES


FUZZ = settings(max_examples=1000 if CI else 200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("table", TABLES)
@FUZZ
@given(data=st.data())
def test_any_mangled_row_is_refused_naming_a_touched_field_or_stored_as_bigquery_needs(
        table: str, data: st.DataObject) -> None:
    writers = Writers.of(table)
    row, touched = data.draw(mangled_rows(writers.spec))
    try:
        stored = writers.accepted(row)
    except InvalidRow as exc:
        event(f"refused: {exc.problem.split(':')[0][:30]}")
        assert writers.refused([row]).field == exc.field  # and nothing written
        assert exc.field in {str(k) for k in touched}, (exc, touched)
        return
    event("accepted")
    check_storable(writers.spec, stored)
    for name in set(row) - touched:
        assert stored[name] == row[name], name


@pytest.mark.parametrize("table", TABLES)
@FUZZ
@given(data=st.data())
def test_a_batch_with_any_bad_row_writes_nothing(table: str, data: st.DataObject) -> None:
    writers = Writers.of(table)
    batch = data.draw(st.lists(mangled_rows(writers.spec), min_size=1, max_size=4))
    rows = [row for row, _ in batch]
    try:
        writers.memory.append(rows)
    except InvalidRow:
        writers.refused(rows)  # by both writers, and nothing written
        return
    writers.bigquery.append(rows)
    assert writers.written() == (len(rows), 1)


# -- gaps the fuzzing found in outbox/rows.py: each raised something other than InvalidRow ---


def test_a_float_column_given_an_int_beyond_any_float_is_an_invalid_row() -> None:
    writers = Writers.of("scrapers")
    writers.refused([{**full_row(writers.spec), "duration_seconds": 10**400}])


@pytest.mark.parametrize("value", [
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    "9999-12-31T23:00:00-05:00"])
def test_a_timestamp_outside_the_utc_range_is_an_invalid_row(value: Any) -> None:
    writers = Writers.of("scrapers")
    writers.refused([{**full_row(writers.spec), "triggered_at": value}])


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [501, 100_000])
def test_a_json_value_nested_past_bigquerys_limit_is_an_invalid_row(depth: int) -> None:
    writers = Writers.of("scrapers")
    writers.refused([{**full_row(writers.spec), "opts": _nested(depth)}])


def test_a_json_value_nested_to_bigquerys_limit_is_written() -> None:
    writers = Writers.of("scrapers")
    for writer in (writers.memory, writers.bigquery):
        writer.append([{**full_row(writers.spec), "opts": _nested(499)}])
    assert writers.written() == (1, 1)


@pytest.mark.parametrize(("field", "value"), [
    ("workflow", "w\ud800"), ("opts", {"k": "\udfff"}), ("opts", {"\ud800": 1})])
def test_text_that_is_not_valid_unicode_is_an_invalid_row(field: str, value: Any) -> None:
    writers = Writers.of("scrapers")
    writers.refused([{**full_row(writers.spec), field: value}])
