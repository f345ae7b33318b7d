"""The BigQuery sink without BigQuery: its SQL, its parameters, its errors and retries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlglot
from google.api_core import exceptions as gexc
from sqlglot import exp

from outbox.errors import ConfigError, PermanentError, TransientError
from outbox.testing import CONCURRENT_UPDATE_ERROR
from processors.raw.bigquery_sink import BigQueryRawSink, merge_statement, query_parameters
from processors.raw.sink import LoadRefused
from processors.raw.tables import BDL_GAMES, ODDS_API_PLAYER_POINTS_PROPS, RAW_TABLES, RawTable
from processors.raw.testing import InMemoryRawSink, SinkFaults
from processors_raw.test_sink_contract import game

D = dt.date(2026, 11, 28)


MERGES = [(t, r) for t in RAW_TABLES for r in (False, True) if t.full_day or not r]


@pytest.mark.parametrize(("table", "replace"), MERGES,
                         ids=[f"{t.spec.name}-{'replace' if r else 'upsert'}" for t, r in MERGES])
def test_merge_is_valid_bigquery_and_values_travel_only_as_parameters(
    table: RawTable, replace: bool
) -> None:
    rows = [{"game_date": D, "scraped_at": dt.datetime(2026, 11, 28, tzinfo=dt.UTC)}]
    stmt = merge_statement("p-1", table, rows, replace)
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    assert isinstance(tree, exp.Merge)
    assert not [lit for lit in tree.find_all(exp.Literal) if lit.is_string]
    assert {p.name for p in stmt.params} == set(
        ["rows", "first_date", "last_date"] + (["dates", "file_time"] if replace else []))
    on = tree.args["on"].sql(dialect="bigquery")
    assert "T.`game_date` BETWEEN @first_date AND @last_date" in on  # constant: prunes
    assert (" IN UNNEST(@dates)" in stmt.sql) == replace


def test_the_rows_parameter_is_an_array_of_structs_typed_from_the_spec() -> None:
    stmt = merge_statement("p-1", BDL_GAMES, [game(1), game(2, status=None)], replace=True)
    params = {p.name: p for p in query_parameters(BDL_GAMES.spec, stmt)}
    api = params["rows"].to_api_repr()
    struct = api["parameterType"]["arrayType"]["structTypes"]
    fields = {f["name"]: f["type"]["type"] for f in struct}
    assert fields["game_id"] == "INT64" and fields["game_date"] == "DATE"
    assert fields["scraped_at"] == "TIMESTAMP" and list(fields) == list(BDL_GAMES.spec.column_names)
    assert len(api["parameterValue"]["arrayValues"]) == 2
    assert params["dates"].to_api_repr()["parameterValue"]["arrayValues"] == [{"value": str(D)}]


class _Job:
    total_bytes_processed = 10
    total_bytes_billed = 10 * 1024**2

    def result(self) -> None:
        return None


class FakeClient:
    """Raises the queued errors, one per query, then succeeds."""

    project = "p-1"

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.queries: list[tuple[str, Any]] = []

    def query(self, sql: str, job_config: Any) -> _Job:
        self.queries.append((sql, job_config))
        if self.errors:
            raise self.errors.pop(0)
        return _Job()


def concurrent() -> gexc.BadRequest:
    return gexc.BadRequest(CONCURRENT_UPDATE_ERROR.format(table="p-1:nba_raw.bdl_games"),
                           errors=[{"reason": "invalidQuery"}])


def sink(client: FakeClient, **kw: Any) -> BigQueryRawSink:
    return BigQueryRawSink(client, retry_wait=0.001, **kw)


def test_one_statement_per_file_with_the_cost_guard_and_labels() -> None:
    client = FakeClient()
    s = sink(client)
    assert s.upsert(BDL_GAMES, [game(1), game(2)], replace=True) == 2
    [(sql, config)] = client.queries
    assert sql.startswith("MERGE `p-1.nba_raw.bdl_games`")
    assert config.maximum_bytes_billed == 1024**3
    assert config.labels == {"component": "processors", "table": "bdl_games"}
    assert s.stats.jobs == 1 and s.stats.bytes_billed == 10 * 1024**2


def test_a_concurrent_update_is_retried_and_then_succeeds() -> None:
    client = FakeClient(concurrent(), concurrent())
    assert sink(client).upsert(BDL_GAMES, [game(1)], replace=True) == 1
    assert len(client.queries) == 3


def test_a_lasting_concurrent_update_surfaces_as_a_transient_error() -> None:
    client = FakeClient(*[concurrent() for _ in range(10)])
    with pytest.raises(TransientError) as err:
        sink(client, attempts=3).upsert(BDL_GAMES, [game(1)], replace=True)
    assert isinstance(err.value, LoadRefused) and err.value.reason == "concurrent_update"
    assert "load 1 rows into nba_raw.bdl_games" in str(err.value)
    assert len(client.queries) == 3


@pytest.mark.parametrize(("error", "kind", "calls"), [
    (gexc.ServiceUnavailable("backend"), None, 2),
    (gexc.BadRequest("Resources exceeded during query execution: Too many DML statements "
                     "outstanding against table p-1:nba_raw.bdl_games, limit is 20",
                     errors=[{"reason": "resourcesExceeded"}]), None, 2),
    (gexc.BadRequest("Resources exceeded during query execution: query too complex",
                     errors=[{"reason": "resourcesExceeded"}]), PermanentError, 1),
    (gexc.Forbidden("quota", errors=[{"reason": "quotaExceeded"}]), None, 2),
    (gexc.NotFound("Table p-1:nba_raw.bdl_games"), ConfigError, 1),
    (gexc.BadRequest("Syntax error", errors=[{"reason": "invalidQuery"}]), PermanentError, 1),
])
def test_errors_are_translated_and_only_transient_ones_retried(
    error: Exception, kind: type[Exception] | None, calls: int
) -> None:
    client = FakeClient(error)
    s = sink(client)
    if kind is None:
        s.upsert(BDL_GAMES, [game(1)])
    else:
        with pytest.raises(kind):
            s.upsert(BDL_GAMES, [game(1)])
    assert len(client.queries) == calls


def test_an_invalid_row_never_reaches_bigquery() -> None:
    client = FakeClient()
    with pytest.raises(PermanentError):
        sink(client).upsert(ODDS_API_PLAYER_POINTS_PROPS, [{"event_id": "e1"}])
    assert client.queries == []


def test_the_double_injects_the_same_refusal() -> None:
    double = InMemoryRawSink(SinkFaults(refuse=1))
    with pytest.raises(LoadRefused, match="concurrent update"):
        double.upsert(BDL_GAMES, [game(1)], replace=True)
    assert double.rows(BDL_GAMES) == []
    double.upsert(BDL_GAMES, [game(1)], replace=True)
    assert len(double.rows(BDL_GAMES)) == 1 and double.statements == 2
