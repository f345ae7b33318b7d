"""Shared fixtures: the two emulators, and the CI rule that nothing may be skipped.

Tests that use an emulator are marked ``@pytest.mark.emulator``. When an emulator
cannot start, its tests are skipped on a workstation; in CI (``CI=true``) they
fail, and any skipped test fails the session, so CI never passes by not testing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import pytest

from outbox.emulators import BigQueryEmulator, PubSubEmulator, _Emulator
from outbox.errors import EmulatorUnavailable

pytest_plugins = ["pytester"]

TEST_PROJECT = "test-project"
E = TypeVar("E", bound=_Emulator)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def emulator_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it in CI, because an emulator could not start."""
    if in_ci():
        pytest.fail(f"emulator unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"emulator unavailable: {reason}")


def _start(emulator: E) -> E:
    try:
        return emulator.start()
    except EmulatorUnavailable as exc:
        emulator_unavailable(str(exc))


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    """A bqemulator for the whole session (project ``test-project``).

    Connect with ``ClientOptions(api_endpoint=bq_emulator.rest_url)`` and
    ``AnonymousCredentials()``; the Storage Write API is at ``grpc_endpoint``.
    """
    emulator = _start(BigQueryEmulator(TEST_PROJECT))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """Google's Pub/Sub emulator for the whole session (project ``test-project``).

    Sets ``PUBSUB_EMULATOR_HOST`` for the session, so plain
    ``pubsub_v1.PublisherClient()`` reaches it; restored afterwards.
    """
    emulator = _start(PubSubEmulator(TEST_PROJECT))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def start_emulator() -> Iterator[Callable[[E], E]]:
    """Start a private emulator (e.g. to kill or restart it); stopped after the test.

    Same skip/fail rule as the session fixtures.
    """
    started: list[_Emulator] = []

    def start(emulator: E) -> E:
        started.append(emulator)
        return _start(emulator)

    yield start
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def emulator_missing() -> Callable[[str], NoReturn]:
    """The same skip/fail rule, for a test whose emulators something else starts
    (``outbox chaos`` starts its own)."""
    return emulator_unavailable


FUZZ_MIN_REQUESTS = 10_000


@pytest.fixture(scope="module")
def enough_requests(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a fuzz module: with CI=true and all of its ``COUNTED_TESTS`` run, the requests
    its ``REQUESTS`` counter tallied must reach 10,000 (issue 7's volume)."""
    yield
    tally, counted = request.module.REQUESTS, request.module.COUNTED_TESTS
    if in_ci() and set(tally) >= counted:
        assert sum(tally.values()) >= FUZZ_MIN_REQUESTS, tally


# -- CI: a skipped test fails the session ---------------------------------------------


class _SkipGuard:
    """Collects skipped tests; with CI=true, lists them and fails the session."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def _note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):  # xfail is not a skip
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skipped.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if in_ci() and self.skipped and exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if in_ci() and self.skipped:
            terminalreporter.section("CI=true: skipped tests fail the run", red=True)
            for nodeid, reason in self.skipped:
                terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_SkipGuard(), "outbox-skip-guard")
