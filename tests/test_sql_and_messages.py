"""SQL as data, the v1 message contract, row validation and error translation:
all checked without BigQuery."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlglot
from google.api_core import exceptions as gexc
from sqlglot import exp

from outbox import bigquery_sql as sq
from outbox.bigquery_errors import translate
from outbox.bigquery_read import journal_restriction, log_restriction, timestamp_literal
from outbox.errors import ConfigError, InvalidMessage, InvalidRow, MarkRefused, TransientError
from outbox.messages import (
    V1_COLUMNS,
    check_message,
    encode_scraper_complete_v1,
)
from outbox.ports import Message
from outbox.rows import validate_row
from outbox.samples import scraper_row
from outbox.schema import OUTBOX_JOURNAL, SCRAPER_EXECUTION_LOG, TableSpec

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
LOG, JOURNAL = SCRAPER_EXECUTION_LOG, OUTBOX_JOURNAL


def statements() -> list[sq.Statement]:
    return [
        sq.poll("p-proj", LOG, JOURNAL, "scrapers", NOW, 100, None, V1_COLUMNS),
        sq.poll("p-proj", LOG, JOURNAL, "scrapers", NOW, 100, (NOW, "abc")),
        sq.mark_published("p-proj", LOG, ["a", "b"], NOW, NOW),
        sq.fold("p-proj", LOG, JOURNAL, "scrapers", NOW),
        sq.set_aside("p-proj", LOG, JOURNAL, "scrapers", NOW),
    ]


def _tables_filtered_on_partition(tree: exp.Expression) -> int:
    """Every real (dataset-qualified) table is read in a scope whose WHERE
    filters on triggered_at. Returns how many such tables were checked."""
    checked = 0
    for table in tree.find_all(exp.Table):
        if not table.args.get("db"):
            continue  # a CTE
        scope = table.find_ancestor(exp.Select, exp.Update)
        assert scope is not None
        where = scope.args.get("where")
        assert where is not None, scope.sql()
        assert "triggered_at" in {c.name for c in where.find_all(exp.Column)}, scope.sql()
        checked += 1
    return checked


@pytest.mark.parametrize("stmt", statements(), ids=lambda s: s.sql.split()[0] + str(len(s.sql)))
def test_every_statement_filters_on_the_partition_column(stmt: sq.Statement) -> None:
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    assert _tables_filtered_on_partition(tree) >= 1


@pytest.mark.parametrize("stmt", statements(), ids=lambda s: s.sql.split()[0] + str(len(s.sql)))
def test_values_travel_only_as_parameters(stmt: sq.Statement) -> None:
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    literals = {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}
    assert literals <= {"published", "set_aside", "failed"}, literals
    for p in stmt.params:
        assert f"@{p.name}" in stmt.sql


def test_poll_selects_only_the_encoders_columns() -> None:
    stmt = sq.poll("p-proj", LOG, JOURNAL, "scrapers", NOW, 10, None, ("status",))
    assert "l.status" in stmt.sql and "l.opts" not in stmt.sql and "l.execution_id" in stmt.sql


@pytest.mark.parametrize("bad", ["x`; DROP TABLE t; --", "has space", "a.b"])
def test_identifiers_are_validated(bad: str) -> None:
    with pytest.raises(ConfigError):
        LOG.with_location(bad)


def test_bad_project_is_refused() -> None:
    with pytest.raises(ConfigError):
        sq.fold("bad`proj", LOG, JOURNAL, "scrapers", NOW)


def test_read_restrictions_filter_on_the_partition_column() -> None:
    assert log_restriction(LOG, NOW).startswith("triggered_at >= TIMESTAMP '2026-11-28 12:00:00")
    assert "published IS NOT TRUE" in log_restriction(LOG, NOW)
    assert "route = 'scrapers'" in journal_restriction(JOURNAL, "scrapers", NOW)
    with pytest.raises(ConfigError):
        journal_restriction(JOURNAL, "x' OR TRUE --", NOW)
    with pytest.raises(ValueError):
        timestamp_literal(dt.datetime(2026, 1, 1))


def test_decode_row_restores_types() -> None:
    packed = json.dumps({"execution_id": "a", "triggered_at": 1_795_867_200_000_000,
                         "duration_seconds": 1, "retry_count": "3", "data_summary": {"n": 1},
                         "error_type": None})
    row = sq.decode_row(LOG, packed)
    assert row == {"execution_id": "a", "triggered_at": NOW, "duration_seconds": 1.0,
                   "retry_count": 3, "data_summary": {"n": 1}}


# -- the v1 message contract ------------------------------------------------------------

def test_v1_success_body_and_attributes_exactly() -> None:
    row = validate_row(LOG, scraper_row(now=NOW, status="success", execution_id="abcd1234",
                                        scraper_name="bdl_games_scraper", workflow="morning",
                                        completed_at=NOW, gcs_path="gs://b/x.json",
                                        data_summary={"record_count": 3,
                                                      "scraper_class": "BdlGames"}))
    msg = encode_scraper_complete_v1(row)
    body = json.loads(msg.data)
    assert set(body) == {"name", "scraper_name", "execution_id", "status", "gcs_path",
                         "record_count", "duration_seconds", "timestamp", "workflow",
                         "error_message", "metadata"}
    assert body["name"] == body["scraper_name"] == "bdl_games_scraper"
    assert body["record_count"] == row["data_summary"]["record_count"]
    assert body["timestamp"] == NOW.isoformat()
    assert body["metadata"] == {"scraper_class": "BdlGames", "opts": row["opts"]}
    assert body["record_count"] == 3 and body["gcs_path"] == "gs://b/x.json"
    assert msg.attributes == {"scraper_name": "bdl_games_scraper", "status": "success",
                              "execution_id": "abcd1234", "workflow": "morning"}
    assert msg.key == "abcd1234"


def test_v1_failed_body_carries_error_type_and_empty_workflow_attribute() -> None:
    row = validate_row(LOG, scraper_row(now=NOW, status="failed", workflow=None,
                                        error_type="HTTPError", error_message="boom"))
    row.pop("workflow", None)
    body = json.loads(encode_scraper_complete_v1(row).data)
    assert body["metadata"]["error_type"] == "HTTPError"
    assert body["error_message"] == "boom" and body["workflow"] is None
    assert encode_scraper_complete_v1(row).attributes["workflow"] == ""


@pytest.mark.parametrize("message, problem", [
    (Message("k", b"x" * 10_000_001), "body is"),
    (Message("k", b"x", {"a": "v" * 1025}), "attribute 'a'"),
    (Message("k", b"x", {f"a{i}": "v" for i in range(101)}), "attributes; the limit"),
    (Message("k", b"x", {"googkey": "v"}), "reserved"),
    (Message("k", b""), "neither data nor attributes"),
])
def test_messages_pubsub_would_refuse_are_refused_locally(message: Message, problem: str) -> None:
    with pytest.raises(InvalidMessage, match=problem):
        check_message(message)


# -- row validation -------------------------------------------------------------------

@pytest.mark.parametrize("field, value, problem", [
    ("execution_id", None, "is required"),
    ("triggered_at", "yesterday", "ISO-8601"),
    ("triggered_at", dt.datetime(2026, 1, 1), "time zone"),
    ("retry_count", "3", "integer"),
    ("retry_count", True, "integer"),
    ("duration_seconds", float("nan"), "finite"),
    ("recovery", "yes", "boolean"),
    ("scraper_name", "x" * 129, "longer than 128"),
    ("data_summary", {"x": object()}, "JSON"),
    ("no_such_column", 1, "not a column"),
])
def test_bad_rows_are_refused_naming_the_field(field: str, value: object, problem: str) -> None:
    row = scraper_row(now=NOW)
    row[field] = value
    with pytest.raises(InvalidRow, match=problem) as err:
        validate_row(LOG, row)
    assert err.value.field == field


def test_error_message_is_truncated_not_refused() -> None:
    row = validate_row(LOG, scraper_row(now=NOW, error_message="e" * 5000))
    assert len(row["error_message"]) == 1000


def test_table_spec_checks_its_own_columns() -> None:
    with pytest.raises(ConfigError):
        TableSpec("d", "t", LOG.columns, partition_field="nope")


# -- error translation ----------------------------------------------------------------

@pytest.mark.parametrize("exc, dml, expected, reason", [
    (gexc.BadRequest("UPDATE or DELETE statement over table x would affect rows in the "
                     "streaming buffer, which is not supported"), True, MarkRefused,
     "streaming_buffer"),
    (gexc.BadRequest("Could not serialize access to table x due to concurrent update"), True,
     MarkRefused, "concurrent_update"),
    (gexc.Forbidden("quota", errors=[{"reason": "quotaExceeded"}]), True, MarkRefused, "quota"),
    (gexc.BadRequest("Too many DML statements outstanding against table x, limit is 20"),
     True, MarkRefused, "quota"),
    (gexc.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}]), False, TransientError,
     None),
    (gexc.ServiceUnavailable("down"), False, TransientError, None),
    (gexc.NotFound("no table"), False, ConfigError, None),
    (gexc.BadRequest("Syntax error"), False, Exception, None),
])
def test_bigquery_errors_are_translated(exc: Exception, dml: bool, expected: type,
                                        reason: str | None) -> None:
    out = translate(exc, "doing", dml=dml)
    assert isinstance(out, expected)
    if reason:
        assert isinstance(out, MarkRefused) and out.reason == reason
    if isinstance(exc, gexc.BadRequest) and not dml:
        assert not isinstance(out, TransientError)
