"""Property tests: over random fault schedules, no row is lost and none is flagged unsent.

A hypothesis state machine drives two relays on one in-memory store and publisher,
with a fake clock. Faults are injected between runs; "interleave" runs relay B (or a
scraper append) from inside relay A's publish call, so that A's poll and publish
happen before B's run and A's journal append after it. When the faults stop, a few
runs of relay A must publish and flag every row that was ever appended.

Profiles: 200 examples by default, 1,000 with CI=true. They apply to this test only
(``settings.get_profile``), not globally, so other modules keep their settings.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from outbox.ports import Message, PublishOutcome
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.testing import (
    InMemoryOutboxStore,
    InMemoryPublisher,
    PublisherFaults,
    SimulatedCrash,
    StoreFaults,
)
from relay import Relay, RelayConfig

settings.register_profile(
    "relay-properties", max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("relay-properties-ci", settings.get_profile("relay-properties"),
                          max_examples=1000, print_blob=True)
PROFILE = ("relay-properties-ci" if os.environ.get("CI", "").strip().lower() == "true"
           else "relay-properties")

T0 = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
BUFFER = dt.timedelta(minutes=30)
AGES = (dt.timedelta(0), dt.timedelta(minutes=5), dt.timedelta(hours=2), dt.timedelta(days=4))
"""How far back an appended row's ``triggered_at`` lies; 4 days is past the lookback."""
INTERLEAVINGS = ("relay_b_before_send", "relay_b_after_send", "append")
EPOCH = T0 - dt.timedelta(days=30)  # before any triggered_at


class Tap:
    """Wraps the publisher: counts messages (the double's 1-based index) and can run
    a hook once, before or after the next call's messages are sent. The hook runs
    outside the double's lock, so nothing re-enters it."""

    def __init__(self, inner: InMemoryPublisher, offered: list[int]) -> None:
        self.inner = inner
        self.offered = offered
        self.hook: tuple[bool, Callable[[], None]] | None = None

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        hook, self.hook = self.hook, None
        if hook is not None and hook[0]:
            hook[1]()
        self.offered[0] += len(messages)
        out = self.inner.publish(topic, messages)
        if hook is not None and not hook[0]:
            hook[1]()
        return out

    def close(self) -> None:
        self.inner.close()


class RelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = [T0]
        self.store = InMemoryOutboxStore(clock=lambda: self.now[0], faults=StoreFaults(),
                                         columns=SCRAPER_COMPLETE.columns)
        self.pub = InMemoryPublisher(faults=PublisherFaults())
        self.offered = [0]
        self.taps = {name: Tap(self.pub, self.offered) for name in "AB"}
        self.relays: dict[str, Relay] = {}
        self.batch: dict[str, int] = {}
        self.max_attempts = 1
        self.appended: set[str] = set()
        self.rejected: set[str] = set()
        self.serial = 0
        self.risky = False
        """A crash after publish, a journal failure or an overlap was injected:
        duplicates are allowed (up to ``dupe_budget``)."""
        self.dupe_budget = 0

    # -- helpers ------------------------------------------------------------------------
    def _relay(self, name: str) -> Relay:
        return Relay(SCRAPER_COMPLETE, self.store, self.taps[name],
                     RelayConfig(batch_size=self.batch[name], max_attempts=self.max_attempts),
                     clock=lambda: self.now[0], monotonic=lambda: 0.0, sleep=lambda s: None)

    def _run(self, name: str, rebuild: bool) -> None:
        try:
            self.relays[name].run_once()
        except SimulatedCrash:
            if rebuild:  # the process died: a new relay object, which starts with a sweep
                self.relays[name] = self._relay(name)

    def _append(self, k: int, age: dt.timedelta) -> None:
        rows = scraper_rows(k, seed=self.serial, now=self.now[0] - age)
        for row in rows:
            self.serial += 1
            # Ids sort in reverse order of appending: a row appended while a relay pages
            # through the table can land before that relay's cursor.
            row["execution_id"] = f"r{99_999 - self.serial:05d}"
        self.store.append(rows)
        self.appended |= {r["execution_id"] for r in rows}

    def _risk(self, events: int = 1) -> None:
        # Each event repeats at most the batches in flight: the one being published,
        # the one being journaled and the one polled ahead.
        self.risky = True
        self.dupe_budget += events * 3 * max(self.batch.values())

    # -- rules --------------------------------------------------------------------------
    @initialize(batch_a=st.integers(1, 5), batch_b=st.integers(1, 5),
                max_attempts=st.integers(1, 3))
    def setup(self, batch_a: int, batch_b: int, max_attempts: int) -> None:
        self.batch = {"A": batch_a, "B": batch_b}
        self.max_attempts = max_attempts
        self.relays = {name: self._relay(name) for name in "AB"}

    @rule(k=st.integers(1, 6), age=st.sampled_from(AGES))
    def append(self, k: int, age: dt.timedelta) -> None:
        self._append(k, age)

    @rule(name=st.sampled_from("AB"), rebuild=st.booleans())
    def run(self, name: str, rebuild: bool) -> None:
        self._run(name, rebuild)

    @rule(how=st.sampled_from(INTERLEAVINGS), rebuild=st.booleans())
    def interleave(self, how: str, rebuild: bool) -> None:
        if how == "append":
            self.taps["A"].hook = (False, lambda: self._append(2, dt.timedelta(minutes=1)))
        else:
            self._risk()
            self.taps["A"].hook = (how.endswith("before_send"), lambda: self._run("B", rebuild))
        self._run("A", rebuild)
        self.taps["A"].hook = None

    @rule(offsets=st.sets(st.integers(1, 8), min_size=1, max_size=4))
    def fail_publishes(self, offsets: set[int]) -> None:
        self.pub.faults.fail_publishes |= {self.offered[0] + n for n in offsets}

    @rule(k=st.integers(1, 3))
    def publisher_unavailable(self, k: int) -> None:
        self.pub.faults.unavailable += k

    @rule()
    def crash_after_publish(self) -> None:
        self._risk()
        self.pub.faults.crash_after_publish += 1

    @precondition(lambda self: bool(self.appended))
    @rule(data=st.data())
    def reject_for_good(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.appended)), label="rejected key")
        self.rejected.add(key)
        self.pub.faults.reject_keys.add(key)

    @rule(k=st.integers(1, 3))
    def refuse_marks(self, k: int) -> None:
        self.store.faults.refuse_marks += k

    @rule(k=st.integers(1, 2))
    def fail_records(self, k: int) -> None:
        self._risk(k)
        self.store.faults.fail_records += k

    @rule()
    def crash_after_flag(self) -> None:
        # Not a risk by itself: a fold runs after every batch is journaled, and the direct
        # flag (the other statement that can crash here) runs only after a journal failure.
        self.store.faults.crash_after_flag += 1

    @rule(on=st.booleans())
    def streaming_buffer(self, on: bool) -> None:
        self.store.faults.streaming_buffer = BUFFER if on else None

    @rule(minutes=st.sampled_from((1, 10, 31, 90, 6 * 60, 2 * 24 * 60)))
    def advance_clock(self, minutes: int) -> None:
        self.now[0] += dt.timedelta(minutes=minutes)

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def flagged_only_if_sent_and_sent_only_if_appended(self) -> None:
        sent = set(self.pub.counts())
        flagged = self.store.published_ids()
        assert flagged <= sent, f"flagged but never sent: {sorted(flagged - sent)}"
        assert sent <= self.appended, f"sent but never appended: {sorted(sent - self.appended)}"
        journaled = {e.execution_id for e, _ in self.store.journal if e.outcome == "published"}
        assert journaled <= sent, f"journaled as published, never sent: {journaled - sent}"

    @invariant()
    def duplicates_are_bounded(self) -> None:
        counts = self.pub.counts()
        dupes = {k: n for k, n in counts.items() if n > 1}
        if not self.risky:
            assert not dupes, f"duplicates without crash, journal failure or overlap: {dupes}"
        assert sum(counts.values()) - len(counts) <= self.dupe_budget, dupes

    @invariant()
    def only_rejected_rows_are_set_aside(self) -> None:
        aside = {a.execution_id for a in self.store.set_aside(EPOCH)}
        assert aside <= self.rejected, f"set aside but never rejected: {aside - self.rejected}"

    # -- faults stop: everything is published and flagged ---------------------------------
    def teardown(self) -> None:
        if sys.exc_info()[0] is not None or not self.relays:
            return  # a step already failed (or never started): don't mask its error
        self.store.faults = StoreFaults()
        self.pub.faults = PublisherFaults(reject_keys=self.rejected)  # rejection is permanent
        relay = self.relays["A"]
        for _ in range(10):
            # Past the streaming buffer, and every run is a sweep: a row older than the
            # lookback is retried only by sweeps (every ``sweep_every``), by design.
            self.now[0] += relay.config.sweep_every
            s = relay.run_once()
            assert s.stopped == "drained", s
            if s.polled == 0 and s.folded == 0:
                break
        else:
            raise AssertionError("relay A did not settle within 10 runs")
        counts, flagged = self.pub.counts(), self.store.published_ids()
        aside = {a.execution_id for a in self.store.set_aside(EPOCH)}
        lost = {i for i in self.appended - self.rejected if not (counts.get(i) and i in flagged)}
        assert not lost, f"lost (never sent or never flagged): {sorted(lost)}"
        stuck = {i for i in self.rejected if i not in flagged and i not in aside}
        assert not stuck, f"rejected rows neither flagged nor set aside: {sorted(stuck)}"
        self.duplicates_are_bounded()  # the drain added none where none are allowed


TestRelayProperties = RelayMachine.TestCase
TestRelayProperties.settings = settings.get_profile(PROFILE)
