"""Loss audit: for a window of days, prove every logged event reached each step.

Why: the outbox promises that no event is lost between a scraper's log row and
the processor's record; a promise needs a check that can run on a schedule.
Per route and UTC day (of the log's ``triggered_at``) it compares the log rows,
what the relay recorded as published (the journal's ``published`` entries, and
separately the flag) and, for scraper events, the processors' ledger.

Each event is listed once, at its first missing step; a loss wins over a
warning (an unflagged row that was never processed is listed as unprocessed):

* ``publish``: neither journaled as published nor flagged. A set-aside row is
  missing too (it never reached Pub/Sub), with its error as the reason.
* ``flag``: journaled, flag not folded: a warning (the journal hides the row
  from the poll; the next fold sets the flag).
* ``process``: published, expected by a processor, absent from the ledger.

"Expected" is decided in Python with the service's own rules (see
:func:`expected_processor`): SQL would need a copy of the registry's ordered
fragments. Events younger than ``grace`` are "pending" warnings, so a check
that includes today does not fail on rows the relay has not reached yet.

Cost: one query per route (log joined to the journal) and one of the ledger,
each filtered on its table's partition column.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox.bigquery_errors import translate
from outbox.bigquery_sql import LATEST_ERRORS_CTE, Param, Statement, table_ref
from outbox.bigquery_store import query_params, transient_retry
from outbox.errors import ConfigError
from outbox.replay import DAY, name_column
from outbox.routes import Route
from outbox.schema import OUTBOX_JOURNAL, TableSpec
from processors.base import Event
from processors.dedupe import LOOKUP_WINDOW, PROCESSED_EVENTS
from processors.registry import Match, Registry

if TYPE_CHECKING:
    from outbox.testing import InMemoryOutboxStore
    from processors.testing import InMemoryLedger

JOURNAL_MARGIN = dt.timedelta(days=3)
"""How far past the window the journal is read. A journal row's ``triggered_at``
is the newest of its batch, and a normal relay run's batches span at most its
``lookback`` (``RelayConfig.lookback``, 3 days). A row published later by a
sweep is still found through its flag, which the same run folds."""
GRACE = dt.timedelta(minutes=15)

Step = Literal["publish", "flag", "process"]
Kind = Literal["missing", "warning"]


class AuditInputError(ConfigError):
    """A request refused before any query runs (exit 2)."""


@dataclass(frozen=True)
class Window:
    """Whole UTC days, ``since`` to ``until`` inclusive."""

    since: dt.date
    until: dt.date

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        start = dt.datetime.combine(self.since, dt.time(), dt.UTC)
        return start, dt.datetime.combine(self.until, dt.time(), dt.UTC) + DAY

    def days(self) -> list[dt.date]:
        return [self.since + i * DAY for i in range((self.until - self.since).days + 1)]


def check_window(since: dt.date, until: dt.date, routes: Iterable[Route],
                 today: dt.date) -> Window:
    """Refuse an inverted, empty or expired window; clamp ``until`` to today.

    A window reaching past the retention is refused rather than audited: the
    expired days would show no rows, which reads as "nothing lost".
    """
    if since > until:
        raise AuditInputError(f"--since {since} is after --until {until}")
    if since > today:
        raise AuditInputError(f"the window is empty: --since {since} is after today "
                              f"({today}, UTC)")
    for route in routes:
        keep = route.table.expiration_days
        if keep is not None and since < today - dt.timedelta(days=keep - 1):
            raise AuditInputError(
                f"--since {since} is beyond the {keep}-day retention of {route.table.name}: "
                f"partitions before {today - dt.timedelta(days=keep - 1)} have expired")
    return Window(since, min(until, today))


@dataclass(frozen=True)
class LoggedEvent:
    """One log row and what the relay recorded about it."""

    execution_id: str
    triggered_at: dt.datetime
    name: str | None
    status: str | None
    gcs_path: str | None
    flagged: bool
    journaled: bool
    set_aside: bool = False
    attempts: int = 0
    last_error: str | None = None


class AuditSource(Protocol):
    """Read-only facts for the audit; every read is bounded by the window."""

    cost: dict[str, int]
    """What the reads cost so far (queries, bytes), for the report."""

    def events(self, route: Route, window: Window) -> list[LoggedEvent]:
        """The route's log rows triggered in the window, with their journal state
        (journal read from the window's start to its end plus JOURNAL_MARGIN)."""
        ...

    def processed(self, window: Window, processors: Collection[str]) -> dict[str, set[str]]:
        """execution_id -> processors that recorded it, for ledger event dates
        within LOOKUP_WINDOW of the window (the dedupe's own tolerance)."""
        ...


@dataclass(frozen=True)
class Finding:
    route: str
    day: dt.date
    execution_id: str
    step: Step
    kind: Kind
    reason: str


@dataclass
class DayReport:
    route: str
    day: dt.date
    logged: int = 0
    journaled: int = 0
    flagged: int = 0
    expected: int | None = None
    """Events a processor should process; None for routes without that step."""
    processed: int | None = None
    missing: int = 0
    warnings: int = 0


@dataclass
class AuditReport:
    window: Window
    as_of: dt.datetime
    routes: list[str]
    days: list[DayReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    cost: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "missing"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == "warning"]

    @property
    def exit_code(self) -> int:
        """1 if any event is missing; warnings never fail the check."""
        return 1 if self.missing else 0

    def as_json(self) -> dict[str, Any]:
        """Everything, uncapped; dates as ISO 8601."""
        data: dict[str, Any] = json.loads(json.dumps({
            "window": asdict(self.window), "as_of": self.as_of, "routes": self.routes,
            "days": [asdict(d) for d in self.days], "missing": [asdict(f) for f in self.missing],
            "warnings": [asdict(f) for f in self.warnings], "cost": self.cost,
            "exit_code": self.exit_code}, default=lambda v: v.isoformat()))
        return data


def expected_processor(event: LoggedEvent, registry: Registry) -> Match | None:
    """The processor ``/process`` would hand this scraper event to, or None.

    Mirrors ``processors.envelope._skip`` for v1 events (failed run, no file)
    and then the registry; ``tests/test_audit.py`` checks the two agree.
    A ``no_data`` run with a file is processed, so it is expected.
    """
    if event.status == "failed" or not event.gcs_path:
        return None
    return registry.resolve(Event(event.execution_id, "v1", event.gcs_path,
                                  scraper_name=event.name, status=event.status))


def _publish_reason(e: LoggedEvent) -> str:
    if e.set_aside:
        return f"set aside: {e.last_error or 'no error recorded'}"
    if e.attempts:
        return f"not published: {e.attempts} failed attempt(s), last error: {e.last_error}"
    return "not published: no journal entry and the flag is not set"


def _judge(route: str, e: LoggedEvent, match: Match | None, done_by: set[str],
           young: bool) -> Finding | None:
    day = e.triggered_at.astimezone(dt.UTC).date()

    def found(step: Step, kind: Kind, reason: str) -> Finding:
        return Finding(route, day, e.execution_id, step, kind, reason)

    if not (e.journaled or e.flagged):
        if young and not e.set_aside:
            return found("publish", "warning", "pending: not published yet (within --grace)")
        return found("publish", "missing", _publish_reason(e))
    if match is not None and match.processor not in done_by:
        if young:
            return found("process", "warning", "pending: not processed yet (within --grace)")
        others = f"; recorded by {', '.join(sorted(done_by))} instead" if done_by else ""
        return found("process", "missing", f"published, but {match.processor} has no ledger "
                     f"record (routed by {match.by} {match.key!r}){others}")
    if e.journaled and not e.flagged:
        return found("flag", "warning", "journaled as published; flag not folded yet")
    return None


def run_audit(source: AuditSource, routes: Iterable[Route], window: Window, now: dt.datetime,
              registry: Registry | None = None, grace: dt.timedelta = GRACE) -> AuditReport:
    """Audit ``routes`` over ``window``: one ``events`` call per route, one ``processed``."""
    registry = registry or Registry()
    routes = list(routes)
    report = AuditReport(window, now, [r.name for r in routes])
    ledger: dict[str, set[str]] | None = None
    for route in routes:
        scraper_events = name_column(route) == "scraper_name"
        if scraper_events and ledger is None:
            ledger = source.processed(window, registry.processors)
        days = {d: DayReport(route.name, d) for d in window.days()}
        for day in days.values():
            day.expected = day.processed = 0 if scraper_events else None
        for e in source.events(route, window):
            day = days[e.triggered_at.astimezone(dt.UTC).date()]
            day.logged += 1
            day.journaled += e.journaled
            day.flagged += e.flagged
            match = expected_processor(e, registry) if scraper_events else None
            done_by = (ledger or {}).get(e.execution_id, set())
            if match is not None and day.expected is not None and day.processed is not None:
                day.expected += 1
                day.processed += match.processor in done_by
            finding = _judge(route.name, e, match, done_by, e.triggered_at > now - grace)
            if finding is not None:
                report.findings.append(finding)
                day.missing += finding.kind == "missing"
                day.warnings += finding.kind == "warning"
        report.days.extend(days.values())
    report.cost = dict(source.cost)
    return report


# -- BigQuery -----------------------------------------------------------------------------

def events_statement(project: str, route: Route, journal: TableSpec, window: Window,
                     margin: dt.timedelta = JOURNAL_MARGIN) -> Statement:
    """The route's log rows of the window, each with its journal state."""
    log, jpart = route.table, journal.partition_column
    part = log.partition_column
    start, end = window.bounds()
    sql = f"""WITH entries AS (
  SELECT id AS execution_id, je.outcome, je.recorded_at, je.error
  FROM {table_ref(project, journal)} AS je, UNNEST(je.execution_ids) AS id
  WHERE je.{jpart} >= @since AND je.{jpart} < @journal_until AND je.route = @route
),
journal AS (
  SELECT execution_id, LOGICAL_OR(outcome = 'published') AS journaled,
    LOGICAL_OR(outcome = 'set_aside') AS set_aside, COUNTIF(outcome = 'failed') AS attempts
  FROM entries
  GROUP BY execution_id
),
{LATEST_ERRORS_CTE}
SELECT l.execution_id, l.{part} AS triggered_at, l.{name_column(route)} AS name, l.status,
  l.gcs_path, IFNULL(l.published, FALSE) AS flagged, IFNULL(j.journaled, FALSE) AS journaled,
  IFNULL(j.set_aside, FALSE) AS set_aside, IFNULL(j.attempts, 0) AS attempts,
  e.error AS last_error
FROM {table_ref(project, log)} AS l
LEFT JOIN journal AS j ON j.execution_id = l.execution_id
LEFT JOIN errors AS e ON e.execution_id = l.execution_id AND e.n = 1
WHERE l.{part} >= @since AND l.{part} < @until
ORDER BY l.{part}, l.execution_id"""
    return Statement(sql, (Param("since", "TIMESTAMP", start), Param("until", "TIMESTAMP", end),
                           Param("journal_until", "TIMESTAMP", end + margin),
                           Param("route", "STRING", route.name)))


def processed_statement(project: str, ledger: TableSpec, window: Window,
                        processors: Collection[str]) -> Statement:
    """(execution_id, processor) pairs the ledger holds around the window."""
    part = ledger.partition_column
    sql = f"""SELECT execution_id, processor
FROM {table_ref(project, ledger)}
WHERE {part} BETWEEN @lo AND @hi AND processor IN UNNEST(@processors)
GROUP BY execution_id, processor"""
    return Statement(sql, (Param("lo", "DATE", window.since - LOOKUP_WINDOW),
                           Param("hi", "DATE", window.until + LOOKUP_WINDOW),
                           Param("processors", "STRING", sorted(processors), array=True)))


class BigQueryAuditSource:
    """:class:`AuditSource` on BigQuery; counts its jobs and bytes in ``cost``."""

    def __init__(self, client: bigquery.Client, project: str | None = None,
                 journal: TableSpec = OUTBOX_JOURNAL, ledger: TableSpec = PROCESSED_EVENTS,
                 max_bytes_billed: int | None = 10 * 1024**3) -> None:
        self.client, self.journal, self.ledger = client, journal, ledger
        self.project = project or client.project
        self.max_bytes_billed = max_bytes_billed
        self.cost = {"queries": 0, "bytes_processed": 0}

    @transient_retry
    def _rows(self, stmt: Statement, doing: str) -> list[dict[str, Any]]:
        config = bigquery.QueryJobConfig(query_parameters=query_params(stmt),
                                         labels={"component": "outbox-audit"})
        if self.max_bytes_billed is not None:  # None would be sent as the string 'None'
            config.maximum_bytes_billed = self.max_bytes_billed
        try:
            job = self.client.query(stmt.sql, job_config=config)
            rows = [dict(r.items()) for r in job.result()]
        except (gexc.GoogleAPICallError, ConnectionError, TimeoutError) as exc:
            raise translate(exc, doing) from exc
        self.cost["queries"] += 1
        self.cost["bytes_processed"] += job.total_bytes_processed or 0
        return rows

    def events(self, route: Route, window: Window) -> list[LoggedEvent]:
        stmt = events_statement(self.project, route, self.journal, window)
        return [LoggedEvent(**r) for r in self._rows(stmt, f"read {route.table.name}")]

    def processed(self, window: Window, processors: Collection[str]) -> dict[str, set[str]]:
        stmt = processed_statement(self.project, self.ledger, window, processors)
        out: dict[str, set[str]] = {}
        for r in self._rows(stmt, "read the processed-events ledger"):
            out.setdefault(r["execution_id"], set()).add(r["processor"])
        return out


# -- in memory ----------------------------------------------------------------------------

class InMemoryAuditSource:
    """:class:`AuditSource` over :class:`~outbox.testing.InMemoryOutboxStore`s (by route
    name) and :class:`~processors.testing.InMemoryLedger`, with the same bounds."""

    def __init__(self, stores: Mapping[str, InMemoryOutboxStore],
                 ledger: InMemoryLedger | None = None) -> None:
        self.stores, self.ledger = stores, ledger
        self.cost = {"queries": 0}

    def events(self, route: Route, window: Window) -> list[LoggedEvent]:
        self.cost["queries"] += 1
        store, (start, end) = self.stores[route.name], window.bounds()
        state: dict[str, dict[str, Any]] = {}
        for entry, _at in sorted(store.journal, key=lambda j: j[1]):
            if start <= entry.triggered_at < end + JOURNAL_MARGIN:
                s = state.setdefault(entry.execution_id, {"journaled": False, "set_aside": False,
                                                          "attempts": 0, "last_error": None})
                s["journaled"] |= entry.outcome == "published"
                s["set_aside"] |= entry.outcome == "set_aside"
                s["attempts"] += entry.outcome == "failed"
                s["last_error"] = entry.error or s["last_error"]
        rows = sorted((r for r in store.rows if start <= r["triggered_at"] < end),
                      key=lambda r: (r["triggered_at"], r["execution_id"]))
        return [LoggedEvent(r["execution_id"], r["triggered_at"], r.get(name_column(route)),
                            r.get("status"), r.get("gcs_path"), bool(r.get("published")),
                            **state.get(r["execution_id"], {"journaled": False}))
                for r in rows]

    def processed(self, window: Window, processors: Collection[str]) -> dict[str, set[str]]:
        self.cost["queries"] += 1
        lo, hi = window.since - LOOKUP_WINDOW, window.until + LOOKUP_WINDOW
        out: dict[str, set[str]] = {}
        for r in self.ledger.rows if self.ledger else []:
            if lo <= r["event_date"] <= hi and r["processor"] in processors:
                out.setdefault(r["execution_id"], set()).add(r["processor"])
        return out
