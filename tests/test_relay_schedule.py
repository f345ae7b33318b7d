"""``outbox relay schedule``: runs on an interval, never overlapping, stopping cleanly."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from outbox.cli import main
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.testing import InMemoryOutboxStore, InMemoryPublisher
from relay import Relay, RelayConfig
from relay.schedule import install_stop_handlers, run_schedule, stop_handler


class Recorder:
    """A fake run function that records when each run started and ended."""

    def __init__(self, seconds: float = 0.0, fail_first: int = 0) -> None:
        self.seconds = seconds
        self.fail_first = fail_first
        self.spans: list[tuple[float, float]] = []
        self.active = 0
        self.max_active = 0
        self.in_run = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        start = time.monotonic()
        self.in_run.set()
        try:
            time.sleep(self.seconds)
            if len(self.spans) < self.fail_first:
                raise RuntimeError("run failed")
        finally:
            with self._lock:
                self.active -= 1
                self.spans.append((start, time.monotonic()))

    def wait_for(self, runs: int, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while len(self.spans) < runs:
            assert time.monotonic() < end, f"only {len(self.spans)} runs"
            time.sleep(0.01)

    def assert_no_overlap(self) -> None:
        assert self.max_active == 1
        spans = sorted(self.spans)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end


def in_background(run_fn: Callable[[], Any], interval: float,
                  stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=run_schedule, args=(run_fn, interval, stop))
    thread.start()
    return thread


def test_runs_repeat_on_the_interval_without_overlapping() -> None:
    rec, stop = Recorder(seconds=0.02), threading.Event()
    thread = in_background(rec, 0.05, stop)
    rec.wait_for(5)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    rec.assert_no_overlap()
    assert len(rec.spans) >= 5


def test_a_run_longer_than_the_interval_delays_the_next_one_instead_of_overlapping() -> None:
    rec, stop = Recorder(seconds=0.15), threading.Event()
    thread = in_background(rec, 0.05, stop)
    rec.wait_for(4)
    stop.set()
    thread.join(5)
    rec.assert_no_overlap()


def test_stop_lets_the_current_run_finish_and_starts_no_other() -> None:
    release = threading.Event()
    rec, stop = Recorder(), threading.Event()

    def slow_run() -> None:
        rec.in_run.set()
        assert release.wait(5)
        rec()

    thread = in_background(slow_run, 0.05, stop)
    assert rec.in_run.wait(5)
    stop.set()
    time.sleep(0.6)  # longer than run_schedule's poll of the stop event
    assert thread.is_alive(), "must wait for the run in progress"
    release.set()
    thread.join(5)
    assert not thread.is_alive() and len(rec.spans) == 1


def test_a_failed_run_is_logged_and_the_schedule_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rec, stop = Recorder(fail_first=2), threading.Event()
    with caplog.at_level(logging.ERROR, logger="relay.schedule"):
        thread = in_background(rec, 0.05, stop)
        rec.wait_for(4)
        stop.set()
        thread.join(5)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 2
    assert failures[0].json_fields["error_class"] == "RuntimeError"  # type: ignore[attr-defined]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        run_schedule(lambda: None, 0, threading.Event())


def test_the_signal_handler_sets_the_stop_event(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    handle = stop_handler(stop)
    with caplog.at_level(logging.WARNING, logger="relay.schedule"):
        handle(signal.SIGTERM, None)
        handle(signal.SIGINT, None)
    assert stop.is_set()
    assert "finishing the current one" in caplog.records[0].getMessage()
    assert "already stopping" in caplog.records[1].getMessage()


def test_stop_handlers_are_installed_and_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = threading.Event()
    restore = install_stop_handlers(stop)
    try:
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(2)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before


CHILD = textwrap.dedent("""
    import sys, time
    from relay.schedule import schedule_relays

    marks = open(sys.argv[1], "a", buffering=1)

    def run():
        marks.write("start\\n")
        time.sleep(0.5)
        marks.write("end\\n")

    schedule_relays(run, 0.05)
    marks.write("exited\\n")
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_process_after_the_current_run(tmp_path: Path,
                                                          sig: signal.Signals) -> None:
    marks = tmp_path / "marks"
    marks.touch()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marks)],
                             cwd=Path(__file__).parents[1], stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while "start" not in marks.read_text():
            assert child.poll() is None and time.monotonic() < end
            time.sleep(0.02)
        child.send_signal(sig)
        assert child.wait(15) == 0, child.stderr.read() if child.stderr else ""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert marks.read_text().splitlines() == ["start", "end", "exited"]


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``outbox relay schedule`` with the in-memory doubles and one scheduled run."""
    monkeypatch.setenv("OUTBOX_PROJECT", "test-project")
    monkeypatch.setattr("outbox.logs.configure", lambda *a, **k: None)
    store = InMemoryOutboxStore(columns=SCRAPER_COMPLETE.columns)
    store.append(scraper_rows(5))
    pub = InMemoryPublisher()
    seen: dict[str, Any] = {"store": store, "pub": pub, "deadlines": []}
    relay = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig())
    original = relay.run_once

    def run_once(deadline: Any = None) -> Any:
        seen["deadlines"].append(deadline.total_seconds())
        return original(deadline)

    relay.run_once = run_once  # type: ignore[method-assign]

    def once(run_fn: Callable[[], Any], interval: float) -> None:
        seen["interval"] = interval
        seen["runs"] = run_fn()

    monkeypatch.setattr("relay.service.wired_relays", lambda s: (lambda n: relay, lambda: None))
    monkeypatch.setattr("relay.schedule.schedule_relays", once)
    return seen


def test_the_command_runs_the_relay_through_the_shared_runner(cli_env: dict[str, Any]) -> None:
    result = CliRunner().invoke(main, ["relay", "schedule", "--interval", "20",
                                       "--route", "scrapers"])
    assert result.exit_code == 0, result.output
    assert cli_env["interval"] == 20 and cli_env["deadlines"] == [pytest.approx(20, abs=0.1)]
    assert [s.published for s in cli_env["runs"]] == [5]
    result = CliRunner().invoke(main, ["relay", "schedule", "--interval", "120",
                                       "--route", "scrapers", "--deadline", "7"])
    assert result.exit_code == 0 and cli_env["deadlines"][-1] == pytest.approx(7, abs=0.1)
    result = CliRunner().invoke(main, ["relay", "schedule", "--interval", "120"])
    assert result.exit_code == 0 and cli_env["deadlines"][-1] == pytest.approx(50, abs=0.1)


@pytest.mark.parametrize(("args", "needle"), [
    (["--interval", "0"], "--interval"),
    (["--deadline", "0"], "--deadline"),
    (["--deadline", "4000"], "--deadline"),
    (["--route", "nope"], "unknown route 'nope'"),
])
def test_the_command_refuses_bad_options(cli_env: dict[str, Any], args: list[str],
                                         needle: str) -> None:
    result = CliRunner().invoke(main, ["relay", "schedule", *args])
    assert result.exit_code == 2 and needle in result.output
    assert "runs" not in cli_env
