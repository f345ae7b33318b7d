"""``outbox audit``: in memory through the real relay and /process, its SQL, its
command, and once on bqemulator."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlglot
from click.testing import CliRunner, Result
from sqlglot import exp

from outbox import cli_audit
from outbox.audit import (
    GRACE,
    JOURNAL_MARGIN,
    AuditReport,
    AuditSource,
    InMemoryAuditSource,
    LoggedEvent,
    Window,
    events_statement,
    expected_processor,
    processed_statement,
    run_audit,
)
from outbox.blobs import InMemoryBlobs
from outbox.messages import encode_scraper_complete_v1
from outbox.routes import PHASE2_COMPLETE, ROUTES, SCRAPER_COMPLETE, Route
from outbox.rows import validate_row
from outbox.samples import SCRAPERS, scraper_row
from outbox.schema import OUTBOX_JOURNAL, PROCESSOR_EXECUTION_LOG, SCRAPER_EXECUTION_LOG
from outbox.testing import InMemoryLease, InMemoryOutboxStore, InMemoryPublisher, StoreFaults
from processors.dedupe import PROCESSED_EVENTS
from processors.envelope import Decoded, decode_push
from processors.registry import Registry
from processors.service import create_app
from processors.testing import FakeProcessor, InMemoryLedger, InMemoryQuarantine, push_body
from relay import Relay, RelayConfig

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
D1, D2, TODAY = dt.date(2026, 11, 26), dt.date(2026, 11, 27), NOW.date()
LATER = NOW + dt.timedelta(hours=1)
WINDOW = Window(D1, TODAY)


def at(day: dt.date, hour: int = 10) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


@dataclass
class Pipeline:
    """Scraper log -> relay -> /process -> ledger -> processor log -> relay, in memory
    unless given other stores (the emulator test passes BigQuery ones)."""

    clock: Callable[[], dt.datetime] = lambda: NOW
    blobs: InMemoryBlobs = field(default_factory=InMemoryBlobs)
    ledger: Any = field(default_factory=InMemoryLedger)
    scrapers: Any = None
    phase2: Any = None
    pub: InMemoryPublisher = field(default_factory=lambda: InMemoryPublisher(
        {SCRAPER_COMPLETE.topic, PHASE2_COMPLETE.topic}))
    routes: tuple[Route, ...] = (SCRAPER_COMPLETE, PHASE2_COMPLETE)
    pushed: int = 0

    def __post_init__(self) -> None:
        self.scrapers = self.scrapers or InMemoryOutboxStore(clock=self.clock)
        self.phase2 = self.phase2 or InMemoryOutboxStore(PROCESSOR_EXECUTION_LOG, "processors",
                                                         clock=self.clock)
        registry = Registry()
        self.app = create_app({n: FakeProcessor(n) for n in registry.processors}, registry,
                              self.ledger, self.blobs, self.phase2, InMemoryQuarantine(),
                              clock=self.clock).test_client()

    def log(self, eid: str, when: dt.datetime, scraper: str = "bdl_games_scraper",
            status: str = "success", path: str | None = "default") -> None:
        if path == "default":
            path = self.blobs.write(f"{SCRAPERS[scraper]}/{when.date()}/{eid}.json", b"{}")
        row = scraper_row(now=when, execution_id=eid, scraper_name=scraper, status=status,
                          triggered_at=when, gcs_path=path)
        if path is None:
            row.pop("gcs_path")
        self.scrapers.append([row])

    def relay(self, store: Any = None, **config: Any) -> None:
        store = store or self.scrapers
        route = self.routes[0] if store is self.scrapers else self.routes[1]
        Relay(route, store, self.pub, RelayConfig(**config), InMemoryLease(),
              clock=self.clock).run_once()

    def process(self, drop: frozenset[str] = frozenset()) -> None:
        """Push every scraper event published since the last call, except ``drop``."""
        for sent in self.pub.sent[self.pushed:]:
            if sent.topic == SCRAPER_COMPLETE.topic and sent.message.key not in drop:
                body = push_body(sent.message.data, sent.message.attributes,
                                 message_id=sent.message_id)
                assert self.app.post("/process", data=body).status_code == 200
        self.pushed = len(self.pub.sent)

    def source(self) -> InMemoryAuditSource:
        return InMemoryAuditSource({"scrapers": self.scrapers, "processors": self.phase2},
                                   self.ledger)

    def audit(self, now: dt.datetime = LATER) -> AuditReport:
        return run_audit(self.source(), ROUTES, WINDOW, now)

    def everything(self, drop: frozenset[str] = frozenset()) -> None:
        self.relay()
        self.process(drop)
        self.relay(self.phase2)


def day(report: AuditReport, route: str, on: dt.date) -> dict[str, Any]:
    d = next(d for d in report.days if d.route == route and d.day == on)
    return {k: getattr(d, k) for k in ("logged", "journaled", "flagged", "expected",
                                       "processed", "missing", "warnings")}


def listed(report: AuditReport) -> list[tuple[str, str, str]]:
    return [(f.execution_id, f.step, f.kind) for f in report.findings]


@pytest.fixture
def pipe() -> Pipeline:
    p = Pipeline()
    p.log("g1", at(D1))
    p.log("b1", at(D1, 11), "bdl_player_box_scores_scraper")
    p.log("o1", at(D2), "oddsa_player_props", status="partial")
    p.log("n1", at(D2, 11), status="no_data")
    return p


# -- in memory -----------------------------------------------------------------------------

def test_a_clean_window_has_nothing_missing(pipe: Pipeline) -> None:
    pipe.everything()
    report = pipe.audit()
    assert report.findings == [] and report.exit_code == 0
    assert day(report, "scrapers", D1) == {"logged": 2, "journaled": 2, "flagged": 2,
                                           "expected": 2, "processed": 2, "missing": 0,
                                           "warnings": 0}
    assert day(report, "scrapers", D2)["processed"] == 2, "no_data with a file is processed"
    assert day(report, "processors", TODAY) == {"logged": 4, "journaled": 4, "flagged": 4,
                                                "expected": None, "processed": None,
                                                "missing": 0, "warnings": 0}
    assert report.cost == {"queries": 3}, "one read per route, one of the ledger"


def test_a_row_the_relay_never_published_is_missing(pipe: Pipeline) -> None:
    pipe.everything()
    pipe.log("late", at(D2, 12))  # appended after the relay ran
    report = pipe.audit()
    assert listed(report) == [("late", "publish", "missing")]
    assert report.findings[0].reason == ("not published: no journal entry and the flag is "
                                         "not set")
    assert day(report, "scrapers", D2)["missing"] == 1 and report.exit_code == 1


def test_a_set_aside_row_is_missing_with_its_error(pipe: Pipeline) -> None:
    pipe.pub.faults.reject_keys = {"o1"}
    pipe.relay(max_attempts=1)
    pipe.process()
    pipe.relay(pipe.phase2)
    report = pipe.audit()
    assert listed(report) == [("o1", "publish", "missing")]
    assert report.findings[0].reason == "set aside: injected: rejected"


def test_failed_attempts_not_yet_set_aside_are_missing_with_the_last_error(
        pipe: Pipeline) -> None:
    pipe.pub.faults.reject_keys = {"o1"}
    pipe.everything()
    assert listed(pipe.audit()) == [("o1", "publish", "missing")]
    assert pipe.audit().findings[0].reason == ("not published: 1 failed attempt(s), last "
                                               "error: injected: rejected")


def test_journaled_but_unflagged_is_a_warning_only(pipe: Pipeline) -> None:
    pipe.scrapers.faults = StoreFaults(refuse_marks=10)  # every fold refused
    pipe.everything()
    report = pipe.audit()
    assert {f.kind for f in report.findings} == {"warning"} and report.exit_code == 0
    assert [(f.execution_id, f.step) for f in report.findings] == [
        ("g1", "flag"), ("b1", "flag"), ("o1", "flag"), ("n1", "flag")]
    assert day(report, "scrapers", D1)["flagged"] == 0
    assert day(report, "scrapers", D1)["journaled"] == 2


def test_flagged_without_a_journal_entry_counts_as_published(pipe: Pipeline) -> None:
    """The relay flags a batch directly when its journal append failed."""
    pipe.everything()
    pipe.scrapers.journal = [(e, t) for e, t in pipe.scrapers.journal
                             if e.execution_id != "g1"]
    report = pipe.audit()
    assert report.findings == [] and day(report, "scrapers", D1)["journaled"] == 1


def test_published_but_not_processed_is_missing(pipe: Pipeline) -> None:
    pipe.everything(drop=frozenset({"b1"}))
    report = pipe.audit()
    assert listed(report) == [("b1", "process", "missing")]
    assert report.findings[0].reason == (
        "published, but bdl_player_box_scores has no ledger record (routed by path "
        "'ball-dont-lie/player-box-scores')")
    assert day(report, "scrapers", D1)["processed"] == 1


def test_events_skipped_by_design_are_not_expected(pipe: Pipeline) -> None:
    pipe.log("f1", at(D1, 12), status="failed", path=None)  # a failed scraper run
    pipe.log("np", at(D1, 13), path=None)  # success without a file
    pipe.log("ev", at(D1, 14), "oddsa_events")  # odds-api/events: no processor
    pipe.everything()
    report = pipe.audit()
    assert report.findings == []
    d1 = day(report, "scrapers", D1)
    assert (d1["logged"], d1["expected"], d1["processed"]) == (5, 2, 2)


def test_recent_events_are_pending_warnings_not_losses(pipe: Pipeline) -> None:
    pipe.everything(drop=frozenset({"g1"}))
    pipe.log("fresh", NOW - dt.timedelta(minutes=1))
    report = pipe.audit(now=NOW)
    assert ("fresh", "publish", "warning") in listed(report)
    assert ("g1", "process", "missing") in listed(report)
    quiet = run_audit(pipe.source(), ROUTES, WINDOW, at(D1, 10) + GRACE / 2)
    assert ("g1", "process", "warning") in listed(quiet)


def test_the_journal_is_read_past_the_window_by_the_relays_lookback() -> None:
    assert RelayConfig().lookback == JOURNAL_MARGIN
    stmt = events_statement("p-proj", SCRAPER_COMPLETE, OUTBOX_JOURNAL, Window(D1, D2))
    assert stmt.param("journal_until") - stmt.param("until") == JOURNAL_MARGIN
    assert stmt.param("until") == at(D2, 0) + dt.timedelta(days=1)


# -- "expected" agrees with what /process does -----------------------------------------------

@pytest.mark.parametrize("status", ["success", "no_data", "partial", "failed"])
@pytest.mark.parametrize("scraper,path", [
    ("bdl_games_scraper", "gs://b/ball-dont-lie/games/2026-11-28/x.json"),
    ("bdl_games_scraper", "gs://b/elsewhere/x.json"),  # routed by scraper name
    ("oddsa_events", "gs://b/odds-api/events/x.json"),
    ("oddsa_events", "gs://b/ball-dont-lie/player-box-scores/x.json"),
    ("bdl_games_scraper", None),
])
def test_expected_matches_the_services_skip_and_routing(status: str, scraper: str,
                                                        path: str | None) -> None:
    row = validate_row(SCRAPER_EXECUTION_LOG, {**scraper_row(
        now=NOW, execution_id="e1", scraper_name=scraper, status=status), "gcs_path": path})
    message = encode_scraper_complete_v1(row)
    decoded = decode_push(push_body(message.data, message.attributes))
    assert isinstance(decoded, Decoded)
    service = None if decoded.skip else Registry().resolve(decoded.event)
    event = LoggedEvent("e1", NOW, scraper, status, path, True, True)
    assert expected_processor(event, Registry()) == service


# -- SQL --------------------------------------------------------------------------------------

PARTITIONS = {t.name: t.partition_column
              for t in (SCRAPER_EXECUTION_LOG, PROCESSOR_EXECUTION_LOG, OUTBOX_JOURNAL,
                        PROCESSED_EVENTS)}
STATEMENTS = [events_statement("p-proj", SCRAPER_COMPLETE, OUTBOX_JOURNAL, WINDOW),
              events_statement("p-proj", PHASE2_COMPLETE, OUTBOX_JOURNAL, WINDOW),
              processed_statement("p-proj", PROCESSED_EVENTS, WINDOW, Registry().processors)]


@pytest.mark.parametrize("stmt", STATEMENTS, ids=["scrapers", "processors", "ledger"])
def test_every_table_is_filtered_on_its_own_partition_column(stmt: Any) -> None:
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    tables = [t for t in tree.find_all(exp.Table) if t.args.get("db")]
    assert tables
    for table in tables:
        scope = table.find_ancestor(exp.Select)
        assert scope is not None
        where = scope.args.get("where")
        assert where is not None, table.sql()
        bounded = {c.name for c in where.find_all(exp.Column)}
        assert PARTITIONS[table.name] in bounded, (table.name, where.sql())
    literals = {lit.this for lit in tree.find_all(exp.Literal) if lit.is_string}
    assert literals <= {"published", "set_aside", "failed"}, literals
    assert all(f"@{p.name}" in stmt.sql for p in stmt.params)


def test_the_ledger_is_read_within_the_dedupes_own_window() -> None:
    stmt = STATEMENTS[2]
    assert (stmt.param("lo"), stmt.param("hi")) == (D1 - dt.timedelta(days=2),
                                                    TODAY + dt.timedelta(days=2))


# -- the command ------------------------------------------------------------------------------

def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch,
           source: AuditSource | None = None, obj: Any = None) -> Result:
    def refuse(settings: Any) -> AuditSource:
        raise AssertionError("no client may be built for a bad request")

    monkeypatch.setattr(cli_audit, "_connect", (lambda s: source) if source else refuse)
    monkeypatch.setattr(cli_audit, "utcnow", lambda: LATER)
    return CliRunner().invoke(cli_audit.audit, args, obj=obj or {"project": "test-project"})


def window(since: dt.date = D1, until: dt.date = TODAY) -> list[str]:
    return ["--since", str(since), "--until", str(until)]


def test_cli_clean_window_exits_0(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.everything()
    result = invoke(window(), monkeypatch, pipe.source())
    assert result.exit_code == 0, result.output
    assert "no event missing" in result.output and "route scrapers" in result.output


def test_cli_lists_missing_events_up_to_the_limit_and_counts_the_rest(
        pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.everything(drop=frozenset({"g1", "b1", "o1"}))
    result = invoke([*window(), "--limit-missing", "2"], monkeypatch, pipe.source())
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "missing events: 3" in text and "... and 1 more" in text
    assert "g1" in text and "b1" in text and "3 events missing" in text


def test_cli_json_has_everything(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe.scrapers.faults = StoreFaults(refuse_marks=10)
    pipe.everything(drop=frozenset({"g1", "b1", "o1"}))
    result = invoke([*window(), "--json", "--limit-missing", "0", "--route", "scrapers"],
                    monkeypatch, pipe.source())
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert [m["execution_id"] for m in data["missing"]] == ["g1", "b1", "o1"]
    assert [w["execution_id"] for w in data["warnings"]] == ["n1"]
    assert data["routes"] == ["scrapers"] and data["exit_code"] == 1
    assert data["as_of"] == LATER.isoformat() and data["window"]["since"] == str(D1)
    assert data["days"][0] == {"route": "scrapers", "day": str(D1), "logged": 2,
                               "journaled": 2, "flagged": 0, "expected": 2, "processed": 0,
                               "missing": 2, "warnings": 0}


@pytest.mark.parametrize("args,message", [
    (window(D2, D1), "is after --until"),
    (window(TODAY + dt.timedelta(days=1), TODAY + dt.timedelta(days=2)), "the window is empty"),
    (window(TODAY - dt.timedelta(days=90), TODAY), "beyond the 90-day retention"),
    (window(TODAY - dt.timedelta(days=120), TODAY - dt.timedelta(days=100)), "have expired"),
    ([*window(), "--route", "nope"], "unknown route 'nope'"),
    ([*window(), "--limit-missing", "-1"], "--limit-missing"),
    (["--since", "2026-13-01", "--until", str(D2)], "Invalid value for '--since'"),
    (["--until", str(D2)], "Missing option '--since'"),
])
def test_cli_bad_input_exits_2_before_any_client_is_built(
        monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    result = invoke(args, monkeypatch)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_cli_a_window_of_exactly_the_retention_is_accepted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = InMemoryAuditSource({"scrapers": InMemoryOutboxStore(),
                                 "processors": InMemoryOutboxStore(PROCESSOR_EXECUTION_LOG,
                                                                   "processors")})
    result = invoke(window(TODAY - dt.timedelta(days=89), TODAY), monkeypatch, empty)
    assert result.exit_code == 0, result.output


# -- on bqemulator ----------------------------------------------------------------------------

@pytest.mark.emulator
def test_audit_on_bqemulator_lists_exactly_the_unprocessed_event(
        bq_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.audit import BigQueryAuditSource
    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.bigquery_tables import ensure_tables
    from outbox.clock import utcnow
    from outbox.schema import OUTBOX_RUNS
    from outbox.wiring import Settings, Wiring
    from processors.dedupe import BigQueryLedger

    wiring = Wiring.build(Settings(
        project=bq_emulator.project, bigquery_emulator=bq_emulator.rest_url.removeprefix(
            "http://"), bigquery_emulator_grpc=bq_emulator.grpc_endpoint, read_mode="query"))
    dataset = f"audit_{uuid.uuid4().hex[:8]}"
    slog, plog, journal, runs, ledger_spec = (t.with_location(dataset) for t in (
        SCRAPER_EXECUTION_LOG, PROCESSOR_EXECUTION_LOG, OUTBOX_JOURNAL, OUTBOX_RUNS,
        PROCESSED_EVENTS))
    ensure_tables(wiring.bigquery, bq_emulator.project, [slog, plog, journal, runs,
                                                         ledger_spec])
    routes = tuple(Route(r.name, table, r.topic, r.encoder, r.columns)
                   for r, table in ((SCRAPER_COMPLETE, slog), (PHASE2_COMPLETE, plog)))
    stores = [BigQueryOutboxStore(wiring.bigquery, wiring.appender, r.table, r.name, journal,
                                  columns=r.columns) for r in routes]
    pipe = Pipeline(utcnow, ledger=BigQueryLedger(wiring.bigquery, wiring.appender,
                                                  spec=ledger_spec),
                    scrapers=stores[0], phase2=stores[1], routes=routes)
    today = utcnow().date()
    yesterday = today - dt.timedelta(days=1)
    pipe.log("aud-games", at(yesterday, 8))
    pipe.log("aud-boxes", at(yesterday, 9), "bdl_player_box_scores_scraper")
    pipe.log("aud-props", at(yesterday, 10), "oddsa_player_props")
    pipe.log("aud-failed", at(yesterday, 11), status="failed", path=None)
    pipe.log("aud-events", at(yesterday, 12), "oddsa_events")
    pipe.everything(drop=frozenset({"aud-props"}))
    assert len(pipe.pub.sent) == 7, "5 scraper events, 2 processor runs"
    pipe.log("aud-older", at(yesterday - dt.timedelta(days=1)))  # unpublished, outside

    obj = {"project": bq_emulator.project, "routes": routes}
    args = ["--since", str(yesterday), "--until", str(today), "--grace", "0"]
    monkeypatch.setattr(cli_audit, "_connect", lambda s: BigQueryAuditSource(
        wiring.bigquery, bq_emulator.project, journal, ledger_spec))
    shown = CliRunner().invoke(cli_audit.audit, args, obj=obj, terminal_width=120)
    print(shown.output)
    assert shown.exit_code == 1, shown.output
    result = CliRunner().invoke(cli_audit.audit, [*args, "--json"], obj=obj)
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert [(m["execution_id"], m["step"]) for m in data["missing"]] == [
        ("aud-props", "process")]
    assert data["warnings"] == []
    days = {(d["route"], d["day"]): d for d in data["days"]}
    assert days["scrapers", str(yesterday)] == {
        "route": "scrapers", "day": str(yesterday), "logged": 5, "journaled": 5, "flagged": 5,
        "expected": 3, "processed": 2, "missing": 1, "warnings": 0}
    assert days["processors", str(today)] | {"logged": 2, "journaled": 2, "flagged": 2,
                                             "missing": 0} == days["processors", str(today)]
    assert data["cost"]["queries"] == 3


def test_cli_a_failing_source_exits_1_with_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.errors import TransientError

    class Down(InMemoryAuditSource):
        def events(self, route: Route, window: Window) -> list[LoggedEvent]:
            raise TransientError("read scraper_execution_log: 503 backend error")

    result = invoke(window(), monkeypatch, Down({}))
    assert result.exit_code == 1 and "error: read scraper_execution_log: 503" in result.output
