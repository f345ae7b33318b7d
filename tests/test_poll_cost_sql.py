"""The poll's partition filter, proven on the text BigQuery receives.

bqemulator reports no bytes, so ``benchmarks/poll_cost.py`` can count a
run's jobs, sessions and admitted partitions but cannot show pruning. What
makes BigQuery prune is a lower bound on the partition column that is a
top-level conjunct of the filter: under an OR or a NOT it prunes nothing.
``tests/test_sql_and_messages.py`` already checks that every statement
mentions ``triggered_at`` in its WHERE and, as text, how the read
restrictions start; these parse the Storage Read restrictions (the poll the
relay actually runs) and the query-mode poll and fold SQL, and check the
bound's shape, the table it is on, and its value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import sqlglot
from sqlglot import exp

from outbox import bigquery_sql as sq
from outbox.bigquery_read import journal_restriction, log_restriction
from outbox.messages import V1_COLUMNS
from outbox.schema import OUTBOX_JOURNAL, SCRAPER_EXECUTION_LOG

LOG, JOURNAL = SCRAPER_EXECUTION_LOG, OUTBOX_JOURNAL
NOW = dt.datetime(2026, 11, 28, 12, 34, 56, 789012, tzinfo=dt.UTC)
NORMAL, SWEEP = NOW - dt.timedelta(days=3), NOW - dt.timedelta(days=90)


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    """The top-level AND terms; an OR or NOT stays one opaque term."""
    node = condition.unnest()
    if isinstance(node, exp.And):
        return [c.unnest() for c in node.flatten()]
    return [node]


def _lower_bounds(condition: exp.Expr, column: str, qualifier: str = "") -> list[exp.GTE]:
    """Top-level ``<qualifier>.<column> >= x`` terms of ``condition``."""
    return [
        c for c in _conjuncts(condition)
        if isinstance(c, exp.GTE) and isinstance(c.this, exp.Column)
        and c.this.name == column and c.this.table == qualifier
    ]


@pytest.mark.parametrize("since", [NORMAL, SWEEP], ids=["normal", "sweep"])
@pytest.mark.parametrize("table, restriction", [
    ("log", lambda since: log_restriction(LOG, since)),
    ("journal", lambda since: journal_restriction(JOURNAL, "scrapers", since)),
])
def test_read_restriction_bounds_the_partition_column_from_below(
    table: str, restriction: Callable[[dt.datetime], str], since: dt.datetime
) -> None:
    text = restriction(since)
    where = sqlglot.parse_one(f"SELECT 1 FROM t WHERE {text}", read="bigquery").args["where"]
    spec = LOG if table == "log" else JOURNAL
    bounds = _lower_bounds(where.this, spec.partition_column)
    assert len(bounds) == 1, text
    bound = bounds[0].expression
    assert isinstance(bound, exp.Cast) and bound.to.is_type("timestamp", "timestamptz"), text
    assert isinstance(bound.this, exp.Literal) and bound.this.is_string
    assert dt.datetime.fromisoformat(bound.this.this) == since
    # Nothing in the restriction widens it again.
    assert not list(where.find_all(exp.Or)), text


def _statements() -> list[sq.Statement]:
    return [
        sq.poll("p-proj", LOG, JOURNAL, "scrapers", NORMAL, 1000, None, V1_COLUMNS),
        sq.poll("p-proj", LOG, JOURNAL, "scrapers", NORMAL, 1000, (NOW, "abc"), V1_COLUMNS),
        sq.fold("p-proj", LOG, JOURNAL, "scrapers", NORMAL),
    ]


@pytest.mark.parametrize("stmt", _statements(), ids=["poll", "poll-after", "fold"])
def test_every_table_of_the_poll_and_fold_is_bounded_by_since(stmt: sq.Statement) -> None:
    """Each log or journal table is pruned in its own scope, by the column
    of *that* table (its alias), with ``@since`` as the bound."""
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    tables = [t for t in tree.find_all(exp.Table) if t.args.get("db")]
    assert {t.name for t in tables} == {LOG.name, JOURNAL.name}
    for table in tables:
        scope = table.find_ancestor(exp.Select, exp.Update)
        assert scope is not None and scope.args.get("where") is not None, table.sql()
        # An UPDATE's target is named without an alias; everywhere else the
        # column must be qualified with the table's alias.
        qualifier = "" if isinstance(scope, exp.Update) and scope.this is table else table.alias
        bounds = _lower_bounds(scope.args["where"].this, "triggered_at", qualifier)
        assert len(bounds) == 1, scope.sql()
        param = bounds[0].expression
        assert isinstance(param, exp.Parameter) and param.name == "since", scope.sql()
    assert stmt.param("since") == NORMAL
