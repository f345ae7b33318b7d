"""Run the relay on an interval, in-process: ``outbox relay schedule``.

For where there is no Cloud Scheduler (a VM, a long-running container, a
laptop). It calls the same :class:`~relay.service.RelayRunner` as the HTTP
trigger, so runs log and count the same way.

Why APScheduler with ``max_instances=1`` and ``coalesce=True``: a run that
outlasts the interval must delay the next one, never overlap it, and the
ticks it missed collapse into one run instead of a burst.

Why shutdown waits: ``run_once`` returns within its deadline, and its pipeline
journals what it published before returning. Stopping mid-run would not lose
rows (they stay pending) but would publish them twice, so SIGTERM/SIGINT stop
new runs and let the current one finish. Mind the platform's grace period
(Cloud Run: 10 s after SIGTERM): keep the deadline within it.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("relay.schedule")
JOB_ID = "relay"


def _guarded(run_fn: Callable[[], Any]) -> Callable[[], None]:
    """One run; an exception is logged and the schedule goes on.

    The runner has already logged the failure with its route; APScheduler
    would otherwise print a second, unstructured traceback.
    """

    def job() -> None:
        try:
            run_fn()
        except Exception as exc:
            log.error("scheduled relay run failed; the next one follows on schedule",
                      extra={"json_fields": {"error": str(exc),
                                             "error_class": type(exc).__name__}})

    return job


def run_schedule(run_fn: Callable[[], Any], interval: float, stop_event: threading.Event,
                 misfire_grace_time: float | None = None) -> None:
    """Call ``run_fn`` now and every ``interval`` seconds until ``stop_event`` is set.

    Returns once the run in progress (if any) has finished. Runs never
    overlap. ``misfire_grace_time`` (default: one interval, at least 1 s) is
    how late a tick may still start.
    """
    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    grace = misfire_grace_time if misfire_grace_time is not None else max(interval, 1.0)
    scheduler = BackgroundScheduler(timezone=dt.UTC)
    scheduler.add_job(
        _guarded(run_fn), "interval", seconds=interval, id=JOB_ID,
        next_run_time=dt.datetime.now(dt.UTC), max_instances=1, coalesce=True,
        misfire_grace_time=max(1, round(grace)),
    )
    scheduler.start()
    log.info("relay schedule started", extra={"json_fields": {"interval_seconds": interval}})
    try:
        while not stop_event.wait(0.5):
            pass
    finally:
        log.info("relay schedule stopping; waiting for the current run to finish")
        scheduler.shutdown(wait=True)
        log.info("relay schedule stopped")


def stop_handler(stop_event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that asks the schedule to stop (see :func:`run_schedule`)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        already = stop_event.is_set()
        stop_event.set()
        log.warning("signal received; %s", "already stopping" if already else
                    "no new runs, finishing the current one",
                    extra={"json_fields": {"signal": signal.Signals(signum).name}})

    return handle


def install_stop_handlers(stop_event: threading.Event,
                          signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
                          ) -> Callable[[], None]:
    """Install :func:`stop_handler` for ``signals``; returns a function restoring the old ones.

    Must be called from the main thread (Python delivers signals there).
    """
    handler = stop_handler(stop_event)
    previous = {s: signal.signal(s, handler) for s in signals}

    def restore() -> None:
        for s, old in previous.items():
            signal.signal(s, old)

    return restore


def schedule_relays(run_fn: Callable[[], Any], interval: float) -> None:
    """``run_schedule`` until SIGTERM or SIGINT: what ``outbox relay schedule`` does."""
    stop = threading.Event()
    restore = install_stop_handlers(stop)
    try:
        run_schedule(run_fn, interval, stop)
    finally:
        restore()
