"""`outbox dev`: the live view, and the whole local pipeline on the emulators."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from rich.console import Console

from outbox.devstack import DevState, render, run_dev
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.schema import OUTBOX_JOURNAL, PUBLISHED, SCRAPER_EXECUTION_LOG
from relay import RunSummary


def _text(state: DevState) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render(state))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def _line(text: str, label: str) -> list[str]:
    """The cells of the table line whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no line {label!r} in\n{text}")


def test_render_shows_totals_backlog_and_the_last_run() -> None:
    run = RunSummary(route="scrapers", run_id="abc", polled=12, published=11, failed=1,
                     set_aside=0, folded=11, seconds=0.25, stopped="drained")
    state = DevState(session="s1", subscription="nba-scraper-complete-dev", phase="running",
                     elapsed=75.5, written=40, published=33, pending=7, oldest_pending_age=2.5,
                     received=30, runs=4, last_run=run)
    text = _text(state)
    assert "outbox dev · session s1 · running" in text
    assert _line(text, "elapsed")[1] == "1m 15.5s"
    assert _line(text, "rows written")[1] == "40"
    assert _line(text, "published")[1] == "33"
    assert _line(text, "pending")[1] == "7"
    assert _line(text, "oldest pending")[1] == "2.5s"
    assert _line(text, "received on nba-scraper-complete-dev")[1] == "30"
    assert _line(text, "relay runs")[1] == "4"
    expected = {"polled": "12", "published": "11", "failed": "1", "set aside": "0",
                "folded": "11", "seconds": "0.25", "stopped": "drained"}
    for field, value in expected.items():
        assert _line(text, f"last run: {field}")[1] == value
    assert "errors" not in text


def test_render_before_the_first_run_and_with_errors() -> None:
    text = _text(DevState(session="s2", errors=2, last_error="TransientError: busy"))
    assert _line(text, "pending")[1] == "-"
    assert _line(text, "oldest pending")[1] == "-"
    assert _line(text, "last run: stopped")[1] == "-"
    assert "2, last: TransientError: busy" in text


@pytest.mark.emulator
def test_run_dev_publishes_every_row_it_writes(
    bq_emulator: BigQueryEmulator, pubsub_emulator: PubSubEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {**bq_emulator.env(), **pubsub_emulator.env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OUTBOX_PROJECT", bq_emulator.project)
    out = io.StringIO()

    state = run_dev(interval=0.5, rows_per_second=20, duration=dt.timedelta(seconds=4),
                    console=Console(file=out, width=120))

    assert state.phase == "stopped"
    assert state.errors == 0, state.last_error
    assert state.written >= 40  # ~20/s for 4 s, minus the first tick
    assert state.runs >= 2
    assert state.pending == 0
    assert state.published >= state.written
    assert state.received >= state.written
    assert "outbox dev stopped after" in out.getvalue()

    # Every row this session wrote is journaled as published and flagged by the fold.
    client = bigquery.Client(
        project=bq_emulator.project, credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bq_emulator.rest_url))
    params = [bigquery.ScalarQueryParameter("prefix", "STRING", f"{state.session}-")]
    window = "triggered_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 DAY)"

    def count(sql: str) -> int:
        job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        return int(next(iter(job.result()))[0])

    log = f"`{bq_emulator.project}.{SCRAPER_EXECUTION_LOG.dataset}.{SCRAPER_EXECUTION_LOG.name}`"
    journal = f"`{bq_emulator.project}.{OUTBOX_JOURNAL.dataset}.{OUTBOX_JOURNAL.name}`"
    mine = "STARTS_WITH(execution_id, @prefix)"
    assert count(f"SELECT COUNT(*) FROM {log} WHERE {window} AND {mine}") == state.written
    assert count(f"SELECT COUNT(DISTINCT id) FROM {journal}, UNNEST(execution_ids) AS id "
                 f"WHERE {window} AND STARTS_WITH(id, @prefix) AND outcome = 'published'"
                 ) == state.written
    assert count(f"SELECT COUNT(*) FROM {log} "
                 f"WHERE {window} AND {mine} AND {PUBLISHED} IS NOT TRUE") == 0
    # The environment run_dev was given is left as it was.
    assert bq_emulator.is_running() and pubsub_emulator.is_running()
