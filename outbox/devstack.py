"""``outbox dev``: the whole pipeline on one machine, with no cloud account.

So that a developer can watch rows flow from the log table to Pub/Sub before
deploying anything, this runs the real store, publisher and ``Relay`` against the
local emulators (those named by BIGQUERY_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, else
its own), with a writer of realistic rows and a live view. Writer, relay loop and a
subscriber share a :class:`DevState` under a lock. The relay is a plain loop, not a
scheduler: one run at a time by construction, and the final drain comes after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from rich.console import Console
from rich.live import Live
from rich.table import Table

from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator, bigquery_from_env, pubsub_from_env
from outbox.errors import OutboxError, TransientError
from outbox.pubsub_admin import ensure_topics
from outbox.samples import scraper_row
from outbox.schema import OUTBOX_JOURNAL
from outbox.wiring import Settings, Wiring
from relay import Relay, RelayConfig, RunSummary

DEV_PROJECT = "local-project"
DRAIN_DEADLINE = dt.timedelta(seconds=60)
MAX_ROWS_PER_APPEND = 1000
NONE = "-"


@dataclasses.dataclass
class DevState:
    """What the live view shows; :func:`run_dev` returns the final one."""

    session: str = ""  # prefix of every execution_id this run writes
    subscription: str = ""
    phase: str = "starting"
    elapsed: float = 0.0
    written: int = 0
    published: int = 0
    pending: int | None = None
    oldest_pending_age: float | None = None
    received: int = 0
    runs: int = 0
    last_run: RunSummary | None = None
    errors: int = 0
    last_error: str | None = None


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}m {seconds:04.1f}s" if minutes else f"{seconds:.1f}s"


def render(state: DevState) -> Table:
    """The live view of ``state``. Pure."""
    table = Table(show_header=False, title_justify="left",
                  title=f"outbox dev · session {state.session} · {state.phase}")
    table.add_row("elapsed", _seconds(state.elapsed))
    table.add_row("rows written", str(state.written))
    table.add_row("published", str(state.published))
    table.add_row("pending", NONE if state.pending is None else str(state.pending))
    table.add_row("oldest pending", _seconds(state.oldest_pending_age))
    table.add_row(f"received on {state.subscription}", str(state.received))
    table.add_row("relay runs", str(state.runs))
    table.add_section()
    for name in ("polled", "published", "failed", "set_aside", "folded", "seconds", "stopped"):
        value = NONE if state.last_run is None else str(getattr(state.last_run, name))
        table.add_row(f"last run: {name.replace('_', ' ')}", value)
    if state.errors:
        table.add_section()
        table.add_row("[red]errors[/]", f"[red]{state.errors}, last: {state.last_error}[/]")
    return table


class _DevRun:
    def __init__(self, wiring: Wiring, interval: float, rows_per_second: float) -> None:
        self.route = wiring.settings.route("scrapers")
        self.interval, self.rate = interval, rows_per_second
        self.writer_store, self.relay_store = wiring.store(self.route), wiring.store(self.route)
        self.publisher = wiring.publisher()
        self.relay = Relay(self.route, self.relay_store, self.publisher,
                           RelayConfig(deadline=dt.timedelta(seconds=max(interval, 5.0))))
        self.subscriber = pubsub_v1.SubscriberClient()
        project = wiring.settings.project
        self.sub_path = self.subscriber.subscription_path(project, f"{self.route.topic}-dev")
        with contextlib.suppress(gexc.AlreadyExists):
            self.subscriber.create_subscription(request={
                "name": self.sub_path, "topic": f"projects/{project}/topics/{self.route.topic}"})
        self.state = DevState(session=uuid.uuid4().hex[:8],
                              subscription=self.sub_path.rsplit("/", 1)[-1])
        self.lock = threading.Lock()
        # bqemulator shares one DuckDB connection between its gRPC write thread and its
        # event loop: an append while a read session or query runs can deadlock it (seen
        # here). Real BigQuery has no such limit; this only keeps writer and relay apart.
        self.emulator_lock = threading.Lock()
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.started = time.monotonic()

    def snapshot(self) -> DevState:
        with self.lock:
            return dataclasses.replace(self.state, elapsed=time.monotonic() - self.started)

    def _note_error(self, exc: BaseException) -> None:
        with self.lock:
            self.state.errors += 1
            self.state.last_error = f"{type(exc).__name__}: {exc}"[:160]

    def _guarded(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # re-raised by run_dev on the main thread
                self.fatal = exc
                self.stop.set()
        return run

    def _write_loop(self) -> None:
        rng, sent, began = random.Random(), 0, time.monotonic()
        while not self.stop.wait(min(0.2, 1.0 / self.rate)):
            due = min(int((time.monotonic() - began) * self.rate) - sent, MAX_ROWS_PER_APPEND)
            if due <= 0:
                continue
            rows = [scraper_row(rng, execution_id=f"{self.state.session}-{sent + i:07d}")
                    for i in range(due)]
            try:
                with self.emulator_lock:
                    self.writer_store.append(rows)
            except TransientError as exc:
                self._note_error(exc)
                continue
            sent += due
            with self.lock:
                self.state.written = sent

    def _record(self, summary: RunSummary) -> None:
        with self.lock:
            self.state.runs += 1
            self.state.last_run = summary
            self.state.published += summary.published
            self.state.pending = summary.backlog
            self.state.oldest_pending_age = summary.oldest_pending_age_seconds

    def _relay_loop(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            with self.emulator_lock:
                summary = self.relay.run_once()
            self._record(summary)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _pull(self, timeout: float) -> int:
        try:
            response = self.subscriber.pull(
                request={"subscription": self.sub_path, "max_messages": 1000}, timeout=timeout)
        except gexc.DeadlineExceeded:
            return 0
        if ack_ids := [m.ack_id for m in response.received_messages]:
            self.subscriber.acknowledge(
                request={"subscription": self.sub_path, "ack_ids": ack_ids})
        with self.lock:
            self.state.received += len(ack_ids)
        return len(ack_ids)

    def _receive_loop(self) -> None:
        while not self.stop.is_set():
            try:
                if not self._pull(timeout=1.0):
                    self.stop.wait(0.2)
            except gexc.GoogleAPICallError as exc:
                self._note_error(exc)
                self.stop.wait(1.0)

    def start(self) -> list[threading.Thread]:
        with self.lock:
            self.started, self.state.phase = time.monotonic(), "running"
        loops = {"writer": self._write_loop, "relay": self._relay_loop,
                 "subscriber": self._receive_loop}
        threads = [threading.Thread(target=self._guarded(loop), name=f"dev-{name}", daemon=True)
                   for name, loop in loops.items()]
        for thread in threads:
            thread.start()
        return threads

    def drain(self) -> None:
        """Relay what is left, count what remains, wait for the dev subscription."""
        with self.lock:
            self.state.phase = "draining"
        self._record(self.relay.run_once(DRAIN_DEADLINE))
        left = self.relay_store.poll(dt.datetime.now(dt.UTC) - self.relay.config.lookback, 1)
        with self.lock:
            self.state.pending = left.backlog
            self.state.oldest_pending_age = None if left.oldest is None else (
                dt.datetime.now(dt.UTC) - left.oldest).total_seconds()
        give_up = time.monotonic() + 10.0
        while (s := self.snapshot()).received < s.published and time.monotonic() < give_up:
            self._pull(timeout=2.0)
        with self.lock:
            self.state.phase = "stopped"


@contextlib.contextmanager
def _dev_environment(pubsub_host: str) -> Iterator[None]:
    """PUBSUB_EMULATOR_HOST for the clients; SIGTERM stops like Ctrl-C. Both restored."""
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = pubsub_host
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        if before is not None:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


def run_dev(*, interval: float, rows_per_second: float, duration: dt.timedelta | None,
            console: Console) -> DevState:
    """Write, relay and receive until Ctrl-C (or SIGTERM) or ``duration``; drain; return
    the final state. Raises EmulatorUnavailable if an emulator cannot start."""
    project = os.environ.get("OUTBOX_PROJECT") or DEV_PROJECT
    with contextlib.ExitStack() as stack:
        if (pubsub := pubsub_from_env()) is None:  # first: it is the one with prerequisites
            console.print("starting the Pub/Sub emulator…")
            pubsub = stack.enter_context(PubSubEmulator(project)).host
        if (bq := bigquery_from_env()) is None:
            console.print("starting the BigQuery emulator (bqemulator)…")
            env = stack.enter_context(BigQueryEmulator(project)).env()
            bq = env["BIGQUERY_EMULATOR_HOST"], env["BIGQUERY_EMULATOR_GRPC_HOST"]
        stack.enter_context(_dev_environment(pubsub))
        console.print(f"project {project}: BigQuery at {bq[0]} (gRPC {bq[1]}), Pub/Sub at {pubsub}")
        # from_env keeps OUTBOX_WRITE_MODE / OUTBOX_READ_MODE; the endpoints are ours.
        settings = dataclasses.replace(Settings.from_env(project), bigquery_emulator=bq[0],
                                       bigquery_emulator_grpc=bq[1], pubsub_emulator=pubsub)
        wiring = Wiring.build(settings)
        routes = settings.routes
        ensure_tables(wiring.bigquery, project, [*(r.table for r in routes), OUTBOX_JOURNAL])
        ensure_topics(project, sorted({r.topic for r in routes}))
        dev = _DevRun(wiring, interval, rows_per_second)
        stack.callback(dev.subscriber.close)
        stack.callback(dev.publisher.close)
        stop_at = time.monotonic() + (duration.total_seconds() if duration else float("inf"))
        with Live(console=console, refresh_per_second=2,
                  get_renderable=lambda: render(dev.snapshot())):
            threads = dev.start()
            try:
                while not dev.stop.is_set() and time.monotonic() < stop_at:
                    time.sleep(0.1)
            except KeyboardInterrupt:
                pass
            finally:
                dev.stop.set()
                until = time.monotonic() + DRAIN_DEADLINE.total_seconds()
                for thread in threads:
                    thread.join(timeout=max(0.0, until - time.monotonic()))
            if dev.fatal is not None:
                raise dev.fatal
            if stuck := [t.name for t in threads if t.is_alive()]:
                raise OutboxError(f"{', '.join(stuck)} still busy after "
                                  f"{DRAIN_DEADLINE}: is an emulator hung? Not draining.")
            dev.drain()
        if not console.is_terminal:
            console.line()  # rich ends the last frame with a newline only on terminals
        final = dev.snapshot()
        colour = "green" if final.pending == 0 else "yellow"
        console.print(
            f"[{colour}]outbox dev stopped after {_seconds(final.elapsed)}:[/] "
            f"{final.written} rows written, {final.published} published in {final.runs} relay "
            f"runs, {final.received} received on {final.subscription}, {final.pending} pending",
            highlight=False)
        return final
