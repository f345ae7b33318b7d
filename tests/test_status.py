"""``outbox status``: figures from the store port, the rich table, the CLI's JSON."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from outbox import status as st
from outbox.cli import main
from outbox.errors import TransientError
from outbox.ports import JournalEntry
from outbox.testing import InMemoryOutboxStore

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


def _row(eid: str, at: dt.datetime) -> dict[str, Any]:
    return {"execution_id": eid, "scraper_name": "bdl_games_scraper", "status": "success",
            "triggered_at": at, "source": "CLOUD_RUN", "gcs_path": f"ball-dont-lie/{eid}.json",
            "data_summary": {"record_count": 3}}


def _entry(eid: str, at: dt.datetime, outcome: str, error: str | None = None) -> JournalEntry:
    return JournalEntry(eid, at, outcome, "run00001", None, error)  # type: ignore[arg-type]


def busy_store(clock: FakeClock) -> InMemoryOutboxStore:
    """Now is T0 + 3 h. Pending: p1 (4m 12s old), p2; published: 3 in the last hour,
    2 more earlier in the day, 1 two days ago; 1 journaled but unfolded; 1 set aside."""
    store = InMemoryOutboxStore(clock=clock)
    clock.now = T0
    old = [_row(f"old{i}", T0 - dt.timedelta(days=2)) for i in range(1)]
    day = [_row(f"day{i}", T0) for i in range(2)]
    hour = [_row(f"hr{i}", T0 + dt.timedelta(hours=2)) for i in range(3)]
    store.append(old + day + hour)
    clock.now = T0 - dt.timedelta(days=2) + dt.timedelta(minutes=1)
    store.record([_entry(r["execution_id"], r["triggered_at"], "published") for r in old])
    store.fold(T0 - dt.timedelta(days=3))  # flags only the old row: it alone is journaled
    clock.now = T0 + dt.timedelta(minutes=30)
    store.record([_entry(r["execution_id"], r["triggered_at"], "published") for r in day])
    clock.now = T0 + dt.timedelta(hours=2, minutes=30)
    store.record([_entry(r["execution_id"], r["triggered_at"], "published") for r in hour])
    now = T0 + dt.timedelta(hours=3)
    poison_at = now - dt.timedelta(hours=1)
    store.append([_row("poison01", poison_at)])
    store.record([_entry("poison01", poison_at, "failed", "rejected: InvalidArgument"),
                  _entry("poison01", poison_at, "set_aside", "message too large: " + "x" * 300)])
    clock.now = now - dt.timedelta(minutes=4, seconds=12)
    store.append([_row("p1", clock.now), _row("p2", now - dt.timedelta(minutes=1))])
    clock.now = now - dt.timedelta(minutes=2)
    store.record_run("abcd1234", "drained", {"route": "scrapers", "run_id": "abcd1234",
                                             "published": 3, "seconds": 1.25, "stopped": "drained"})
    clock.now = now
    return store


def test_gather_reports_the_stores_figures() -> None:
    clock = FakeClock(T0)
    store = busy_store(clock)
    s = st.gather(store, clock.now, dt.timedelta(days=3))

    assert s.route == "scrapers"
    assert s.backlog == 2
    assert s.oldest_pending_age_seconds == 252.0
    assert s.unfolded == 5  # journaled published, flag not folded yet
    assert (s.published_1h, s.published_24h) == (3, 5)
    assert [r.execution_id for r in s.set_aside] == ["poison01"]
    assert s.set_aside[0].attempts == 1
    assert s.last_run is not None
    assert (s.last_run.run_id, s.last_run.stopped, s.last_run.published) == (
        "abcd1234", "drained", 3)
    assert s.last_run_age_seconds == 120.0


def test_gather_on_an_empty_store() -> None:
    clock = FakeClock(T0)
    s = st.gather(InMemoryOutboxStore(clock=clock), T0, dt.timedelta(days=3))
    assert (s.backlog, s.oldest_pending, s.unfolded, s.published_1h, s.published_24h) == (
        0, None, 0, 0, 0)
    assert s.set_aside == () and s.last_run is None
    assert s.oldest_pending_age_seconds is None


def test_a_run_older_than_a_week_is_not_the_last_run() -> None:
    clock = FakeClock(T0)
    store = InMemoryOutboxStore(clock=clock)
    store.record_run("old00001", "drained", {"published": 1})
    clock.advance(days=8)
    assert st.gather(store, clock.now, dt.timedelta(days=3)).last_run is None


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "0s"), (59.9, "59s"), (252, "4m 12s"), (3600, "1h 00m"),
    (7505, "2h 05m"), (90_000, "1d 01h"),
])
def test_humanise(seconds: float | None, text: str) -> None:
    assert st.humanise(seconds) == text


def test_age_colours() -> None:
    assert st.age_style(300) == ""
    assert st.age_style(301) == "yellow"
    assert st.age_style(1800) == "yellow"
    assert st.age_style(1801) == "red"


def test_stopped_colours() -> None:
    assert [st.stopped_style(s) for s in (None, "drained", "deadline", "lease_held",
                                          "publisher_unavailable", "error: boom")] == [
        "", "", "", "yellow", "red", "red"]


def _render(statuses: list[st.RouteStatus]) -> str:
    out = io.StringIO()
    st.render(statuses, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_rendered_tables_hold_the_numbers() -> None:
    clock = FakeClock(T0)
    text = _render([st.gather(busy_store(clock), clock.now, dt.timedelta(days=3))])
    row = next(line for line in text.splitlines() if "scrapers" in line)
    cells = re.split(r"\s{2,}", row.strip())
    assert cells == ["scrapers", "2", "4m 12s", "5", "3", "5", "1", "2m 00s ago", "drained",
                     "3", "1.2"]
    assert "set-aside rows: 1" in text
    assert "poison01" in text
    assert "message too large: xxx" in text
    assert "x" * 100 not in text  # the error is truncated to about 80 characters


def test_colours_mark_old_backlog_and_set_aside() -> None:
    clock = FakeClock(T0)
    store = busy_store(clock)
    clock.advance(minutes=40)
    out = io.StringIO()
    st.render([st.gather(store, clock.now, dt.timedelta(days=3))],
              Console(file=out, width=200, force_terminal=True, color_system="standard"))
    ansi = out.getvalue()
    assert "\x1b[31m44m 12s" in ansi  # red: older than 30 minutes
    assert re.search(r"\x1b\[31m1 *\x1b\[0m", ansi)  # set aside > 0 is red
    assert re.search(r"\x1b\[31m2 *\x1b\[0m", ansi)  # so is the backlog behind that age


def test_no_set_aside_table_when_there_are_none() -> None:
    clock = FakeClock(T0)
    text = _render([st.gather(InMemoryOutboxStore(clock=clock), T0, dt.timedelta(days=3))])
    assert "set-aside rows" not in text
    assert "none in 7d" in text


def test_cli_json_uses_the_injected_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    store = busy_store(clock)
    other = InMemoryOutboxStore(route="processors", clock=clock)
    seen: dict[str, Any] = {}

    def fake_stores(settings: Any, routes: list[str] | None = None) -> dict[str, Any]:
        seen["project"], seen["routes"] = settings.project, routes
        return {"scrapers": store, "processors": other}

    monkeypatch.setattr(st, "stores_for", fake_stores)
    monkeypatch.setattr(st, "utcnow", clock)
    result = CliRunner().invoke(main, ["--project", "test-project", "status", "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)  # nothing but JSON on stdout
    assert seen == {"project": "test-project", "routes": None}
    first, second = data["routes"]
    assert first["route"] == "scrapers"
    assert first["backlog"] == 2
    assert first["oldest_pending_age_seconds"] == 252.0
    assert first["oldest_pending"] == (clock.now - dt.timedelta(seconds=252)).isoformat()
    assert (first["published_1h"], first["published_24h"], first["unfolded"]) == (3, 5, 5)
    assert first["set_aside_count"] == 1
    assert first["set_aside"][0]["execution_id"] == "poison01"
    assert first["last_run"]["run_id"] == "abcd1234"
    assert first["last_run"]["finished_at"] == (clock.now - dt.timedelta(minutes=2)).isoformat()
    assert first["last_run"]["age_seconds"] == 120.0
    assert first["last_run"]["summary"]["published"] == 3
    assert first["lookback_seconds"] == 3 * 86_400
    assert second["route"] == "processors" and second["backlog"] == 0
    assert second["last_run"] is None


def test_cli_passes_routes_and_prints_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(T0)
    store = busy_store(clock)
    seen: dict[str, Any] = {}

    def fake_stores(settings: Any, routes: list[str] | None = None) -> dict[str, Any]:
        seen["routes"] = routes
        return {"scrapers": store}

    monkeypatch.setattr(st, "stores_for", fake_stores)
    monkeypatch.setattr(st, "utcnow", clock)
    monkeypatch.setattr("outbox.cli.console", Console(width=200))  # CliRunner's is 80 wide
    result = CliRunner().invoke(
        main, ["--project", "test-project", "status", "--route", "scrapers", "--lookback", "1d"])
    assert result.exit_code == 0, result.output
    assert seen["routes"] == ["scrapers"]
    assert "4m 12s" in result.output and "poison01" in result.output


def test_cli_store_error_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Any, routes: list[str] | None = None) -> dict[str, Any]:
        raise TransientError("BigQuery unreachable")

    monkeypatch.setattr(st, "stores_for", broken)
    result = CliRunner().invoke(main, ["--project", "test-project", "status", "--json"])
    assert result.exit_code == 1
    assert "error:" in result.output and "BigQuery unreachable" in result.output


def test_unknown_route_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("outbox.wiring.Wiring.build", lambda settings: pytest.fail("built"))
    result = CliRunner().invoke(main, ["--project", "test-project", "status", "--route", "nope"])
    assert result.exit_code == 1
    assert "unknown route 'nope'" in result.output
