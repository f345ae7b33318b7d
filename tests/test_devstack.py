"""`outbox dev`: the live view, the generated upstream it scrapes, and the whole local
pipeline on both emulators."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from rich.console import Console

from outbox.blobs import LocalBlobs
from outbox.devstack import DevOptions, raw_count_statement, run_dev
from outbox.devstack_service import TurnTakingWriter, outcome_of
from outbox.devstack_view import DevState, RouteState, render
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_row
from outbox.schema import PROCESSOR_EXECUTION_LOG, PUBLISHED, SCRAPER_EXECUTION_LOG
from outbox.testing import InMemoryOutboxStore
from processors.base import Event
from processors.raw import build_processors
from processors.raw.testing import InMemoryRawSink
from processors.registry import Registry
from scrapers.base import ScraperDeps
from scrapers.fixture_server import (
    EVENTS_PATH,
    NBA_TIME_ZONE,
    Faults,
    League,
    Seen,
    Upstream,
)
from scrapers.http import RetryPolicy
from scrapers.registry import REGISTRY

# -- the view -----------------------------------------------------------------------------


def _text(state: DevState, width: int = 140) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render(state))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def _line(text: str, label: str) -> list[str]:
    """The cells of the line whose first cell is ``label`` (cells: 2+ spaces apart)."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().split("  ") if c.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no line {label!r} in\n{text}")


def _running() -> DevState:
    return DevState(
        session="s1", phase="running", elapsed=75.5, upstream="http://127.0.0.1:1",
        storage="file:///tmp/raw", service="http://127.0.0.1:2/process", log_file=".dev/dev.log",
        scrape_cycles=7, last_scrape_date="2026-11-27",
        scraper_runs={"success": 12, "no_data": 6, "failed": 1},
        upstream_requests=90, upstream_retries=8,
        routes={"scrapers": RouteState("nba-scraper-complete", 19, 18, 1, 0.5, 30, "drained"),
                "processors": RouteState("nba-phase2-complete", 17, 15, 2, 1.25, 30, "drained")},
        deliveries={"processed": 16, "skipped": 1, "503": 2},
        raw_rows={"nba_raw.bdl_games": 24, "nba_raw.bdl_player_box_scores": 480},
        phase2_subscription="nba-phase2-complete-dev", phase2_received=15, dead_lettered=1)


def test_render_follows_an_event_from_scraper_to_phase_2() -> None:
    text = _text(_running())
    assert "outbox dev · session s1 · running · 1m 15.5s" in text
    assert _line(text, "scraper runs")[1] == "12 success · 6 no_data · 0 partial · 1 failed"
    assert _line(text, "cycles")[1] == "7 (last for 2026-11-27)"
    assert _line(text, "upstream requests")[1] == "90 (8 retried after a 500 or 429)"
    assert _line(text, "route")[1:] == ["scrapers → nba-scraper-complete",
                                        "processors → nba-phase2-complete"]
    assert _line(text, "log rows written")[1:] == ["19", "17"]
    assert _line(text, "published")[1:] == ["18", "15"]
    assert _line(text, "pending at last poll")[1:] == ["1", "2"]
    assert _line(text, "oldest pending then")[1:] == ["0.5s", "1.2s"]
    assert _line(text, "relay runs")[1:] == ["30 (drained)", "30 (drained)"]
    assert _line(text, "deliveries")[1] == (
        "16 processed · 0 duplicate · 1 skipped · 0 quarantined · 2 retried (503)")
    assert _line(text, "dead-lettered")[1] == "1"
    assert _line(text, "nba_raw.bdl_games")[1] == "24"
    assert _line(text, "nba_raw.bdl_player_box_scores")[1] == "480"
    assert _line(text, "received on nba-phase2-complete-dev")[1] == "15 phase-2 events"
    assert _line(text, "push endpoint")[1] == "http://127.0.0.1:2/process"
    assert "errors" not in text


def test_render_before_anything_ran_and_with_errors() -> None:
    state = DevState(session="s2", routes={"scrapers": RouteState("nba-scraper-complete")},
                     errors=2, last_error="TransientError: busy")
    text = _text(state)
    assert "· starting ·" in text
    assert _line(text, "scraper runs")[1] == "0 success · 0 no_data · 0 partial · 0 failed"
    assert _line(text, "pending at last poll")[1] == "-"
    assert _line(text, "oldest pending then")[1] == "-"
    assert _line(text, "relay runs")[1] == "0 (-)"
    assert _line(text, "nba_raw rows")[1] == "-"
    assert "errors: 2, last: TransientError: busy" in text


def test_render_lists_rarer_outcomes_only_once_they_happen() -> None:
    state = DevState(deliveries={"processed": 3, "ignored": 0, "500": 1, "duplicate": 2})
    assert _line(_text(state), "deliveries")[1] == (
        "3 processed · 2 duplicate · 0 skipped · 0 quarantined · 0 retried (503) · 1 failed (500)")


def test_render_is_pure() -> None:
    state = _running()
    before = json.dumps(state.__dict__, default=lambda o: o.__dict__, sort_keys=True)
    assert _text(state) == _text(state)
    assert json.dumps(state.__dict__, default=lambda o: o.__dict__, sort_keys=True) == before


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, {"outcome": "processed"}, "processed"),
    (200, {"outcome": "quarantined", "reason": "invalid_file"}, "quarantined"),
    (503, {"outcome": "retry"}, "503"),
    (500, {"outcome": "error"}, "500"),
    (502, None, "500"),
    (401, {"error": "no token"}, "401"),
])
def test_outcome_of_a_process_answer(status: int, body: Any, expected: str) -> None:
    assert outcome_of(status, body) == expected


def test_turn_taking_writer_appends_under_the_lock_and_counts() -> None:
    held: list[bool] = []

    class Lock:
        def __enter__(self) -> None:
            held.append(True)

        def __exit__(self, *_: object) -> None:
            held.append(False)

    store, counted = InMemoryOutboxStore(), []
    writer = TurnTakingWriter(store, Lock(), counted.append)
    writer.append([scraper_row(random.Random(1), execution_id="e1")])
    assert held == [True, False] and counted == [1] and len(store.rows) == 1
    assert writer.spec == store.spec


def test_raw_count_statement_filters_every_table_on_its_partition() -> None:
    stmt = raw_count_statement("local-project", dt.date(2026, 11, 24))
    assert stmt.sql.count("UNION ALL") == 2
    assert stmt.sql.count("WHERE `game_date` >= @since") + stmt.sql.count(
        "WHERE game_date >= @since") == 3
    assert stmt.param("since") == dt.date(2026, 11, 24)


# -- the generated league, through the real scrapers and processors -----------------------

SATURDAY = dt.date(2026, 11, 28)
EVENING = dt.datetime(2026, 11, 28, 20, 30, tzinfo=NBA_TIME_ZONE)
"""Some of Saturday's games are final, some live, some not started."""
FAST = RetryPolicy(base_wait=0.0, max_wait=0.0, max_retry_after=0.0, timeout=(2.0, 5.0))


def _scrape_and_process(league: League, day: dt.date,
                        tmp_path: Path) -> dict[str, tuple[str, str, int]]:
    """Every scraper for ``day``, then its file through the real processor (in memory).

    Returns, per scraper: (run status, processor status or "-", rows loaded)."""
    keys = {"BDL_API_KEY": "k1", "ODDS_API_KEY": "k2"}
    out: dict[str, tuple[str, str, int]] = {}
    with Upstream(league) as upstream:
        blobs = LocalBlobs(tmp_path)
        deps = ScraperDeps(InMemoryOutboxStore(), blobs, retry=FAST, sleep=lambda _: None,
                           env={"BDL_BASE_URL": upstream.url, "ODDS_API_BASE_URL": upstream.url,
                                **keys}, clock=lambda: EVENING.astimezone(dt.UTC))
        processors, registry = build_processors(InMemoryRawSink()), Registry()
        for name in REGISTRY.names:
            summary = REGISTRY.run(name, deps, {"date": day.isoformat()}).summary()
            if summary["gcs_path"] is None:
                out[name] = (summary["status"], "-", 0)
                continue
            event = Event(summary["execution_id"], "v1", summary["gcs_path"], name)
            match = registry.resolve(event)
            assert match is not None
            result = processors[match.processor].process(event, blobs.read(summary["gcs_path"]))
            assert result.records_failed == 0
            out[name] = (summary["status"], result.status, result.record_count)
    return out


def _league(**kwargs: Any) -> League:
    return League(seed=7, clock=lambda: EVENING.astimezone(dt.UTC),
                  api_keys={"bdl": "k1", "odds": "k2"}, **kwargs)


def test_generated_days_load_through_the_real_scrapers_and_processors(tmp_path: Path) -> None:
    today = _scrape_and_process(_league(), SATURDAY, tmp_path)
    assert {n: s[:2] for n, s in today.items()} == {
        "bdl_games_scraper": ("success", "success"),
        "bdl_player_box_scores_scraper": ("success", "success"),  # the early games
        "oddsa_player_props": ("success", "success"),  # the games not yet final
    }
    assert all(rows > 0 for _, _, rows in today.values())
    friday = _scrape_and_process(_league(), SATURDAY - dt.timedelta(days=1), tmp_path)
    assert friday["bdl_player_box_scores_scraper"][1] == "success"
    assert friday["oddsa_player_props"] == ("no_data", "no_data", 0)  # all final: not listed


def test_thursday_is_an_off_day(tmp_path: Path) -> None:
    thursday = dt.date(2026, 11, 26)
    assert League.is_off_day(thursday) and thursday.weekday() == 3
    assert set(_scrape_and_process(_league(), thursday, tmp_path).values()) == {
        ("no_data", "no_data", 0)}


def test_a_final_score_is_the_sum_of_its_box_score() -> None:
    league = _league()
    friday = SATURDAY - dt.timedelta(days=1)
    for game in league.games(friday):
        record = league.game_record(game, EVENING)
        lines = league.box_lines(game, EVENING)
        assert record["status"] == "Final"
        home = record["home_team"]["id"]
        assert record["home_team_score"] == sum(
            line["pts"] for line in lines if line["team"]["id"] == home) or (
            record["home_team_score"] - 1 == record["visitor_team_score"])
        assert record["home_team_score"] != record["visitor_team_score"]
        for line in lines:
            assert line["pts"] == 2 * (line["fgm"] - line["fg3m"]) + 3 * line["fg3m"] + line[
                "ftm"]
            assert line["fgm"] <= line["fga"] and line["fg3m"] <= line["fg3a"] <= line["fga"]


def test_pages_follow_the_cursor_and_the_keys_are_checked() -> None:
    league = _league()
    query = {"dates[]": "2026-11-27", "per_page": "100"}
    first = league(Seen("/v1/stats", query, {"Authorization": "k1"}))
    assert first is not None and first.status == 200
    cursor = first.body["meta"]["next_cursor"]
    assert len(first.body["data"]) == 100 and cursor == 100
    second = league(Seen("/v1/stats", {**query, "cursor": str(cursor)}, {"Authorization": "k1"}))
    assert second is not None and second.body["data"][0]["id"] != first.body["data"][0]["id"]
    refused = league(Seen("/v1/games", query, {}))
    assert refused is not None and refused.status == 401
    no_key = league(Seen(EVENTS_PATH, {"commenceTimeFrom": "x"}, {}))
    assert no_key is not None and no_key.status == 401
    assert league(Seen("/v2/other", {}, {})) is None


def test_faults_fall_on_the_requests_they_name(tmp_path: Path) -> None:
    faults = Faults(malformed_every=7, rate_limited_every=3, server_error_every=2,
                    retry_after="0")
    replies = [faults.reply(n) for n in range(1, 8)]
    assert [r.status if r else None for r in replies] == [None, 500, 429, 500, None, 429, 200]
    assert replies[2] is not None and replies[2].headers == {"Retry-After": "0"}
    league = _league(faults=Faults(rate_limited_every=2, retry_after="0"))
    with Upstream(league) as upstream:
        deps = ScraperDeps(InMemoryOutboxStore(), LocalBlobs(tmp_path), retry=FAST,
                           sleep=lambda _: None,
                           env={"BDL_BASE_URL": upstream.url, "BDL_API_KEY": "k1"})
        report = REGISTRY.run("bdl_player_box_scores_scraper", deps, {"date": "2026-11-27"})
    stats = report.row["data_summary"]["scraper_stats"]
    assert report.status == "success"  # page 1; then each further page after a 429
    assert stats["http_retries"] == stats["pages"] - 1 >= 1
    assert stats["http_requests"] == 2 * stats["pages"] - 1


# -- the whole stack on the emulators ---------------------------------------------------


@pytest.mark.emulator
def test_run_dev_moves_events_from_scrapers_to_nba_raw_and_phase_2(
    bq_emulator: BigQueryEmulator, pubsub_emulator: PubSubEmulator,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    for name, value in {**bq_emulator.env(), **pubsub_emulator.env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OUTBOX_PROJECT", bq_emulator.project)
    out = io.StringIO()
    options = DevOptions(interval=0.5, scrape_interval=1.0, days=2, storage=tmp_path / "raw",
                         log_file=tmp_path / "dev.log", duration=dt.timedelta(seconds=6))

    state = run_dev(options, Console(file=out, width=140))

    assert state.phase == "stopped"
    assert state.errors == 0, state.last_error
    scrapers, processors = state.routes["scrapers"], state.routes["processors"]
    runs = sum(state.scraper_runs.values())
    assert runs >= 3 and state.scraper_runs.get("success", 0) >= 1
    assert scrapers.written == runs and scrapers.published >= scrapers.written
    assert scrapers.pending == 0 and processors.pending == 0
    assert state.deliveries.get("processed", 0) >= 1
    assert state.delivered >= scrapers.published
    assert sum(state.raw_rows.values()) > 0, state.raw_rows
    assert processors.written >= 1 and processors.published >= processors.written
    assert state.phase2_received >= processors.published
    assert "outbox dev stopped after" in out.getvalue()
    assert any(tmp_path.joinpath("raw").rglob("*.json"))
    assert '"logger": "processors.service"' in (tmp_path / "dev.log").read_text()

    # Every row of the session is flagged published, and each processed one has a phase-2 row.
    client = bigquery.Client(
        project=bq_emulator.project, credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bq_emulator.rest_url))
    params = [bigquery.ScalarQueryParameter("by", "STRING", f"outbox dev {state.session}")]

    def count(sql: str) -> int:
        job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        return int(next(iter(job.result()))[0])

    window = "triggered_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)"
    log = f"`{bq_emulator.project}.{SCRAPER_EXECUTION_LOG.dataset}.{SCRAPER_EXECUTION_LOG.name}`"
    phase2 = (f"`{bq_emulator.project}.{PROCESSOR_EXECUTION_LOG.dataset}."
              f"{PROCESSOR_EXECUTION_LOG.name}`")
    mine = f"{window} AND triggered_by = @by"
    assert count(f"SELECT COUNT(*) FROM {log} WHERE {mine}") == scrapers.written
    assert count(f"SELECT COUNT(*) FROM {log} WHERE {mine} AND {PUBLISHED} IS NOT TRUE") == 0
    with_file = count(f"SELECT COUNT(*) FROM {log} WHERE {mine} AND gcs_path IS NOT NULL")
    assert with_file >= 1
    assert count(f"SELECT COUNT(DISTINCT p.source_execution_id) FROM {phase2} AS p "
                 f"JOIN {log} AS s ON p.source_execution_id = s.execution_id "
                 f"WHERE p.{window} AND s.{window} AND s.triggered_by = @by "
                 f"AND s.gcs_path IS NOT NULL") == with_file
    assert SCRAPER_COMPLETE.name in state.routes
    # The environment run_dev was given is left as it was.
    assert bq_emulator.is_running() and pubsub_emulator.is_running()
