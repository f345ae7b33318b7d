"""Pieces every ``outbox`` command shares: settings from the context, Ctrl-C handling."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from outbox.errors import ConfigError
from outbox.wiring import Settings


def window_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--since DATE --until DATE``: inclusive UTC days, as replay and audit take them."""
    for option in reversed((
        click.option("--since", type=click.DateTime(["%Y-%m-%d"]), required=True,
                     metavar="DATE", help="First UTC day of the window (YYYY-MM-DD), inclusive."),
        click.option("--until", type=click.DateTime(["%Y-%m-%d"]), required=True,
                     metavar="DATE", help="Last UTC day of the window (YYYY-MM-DD), inclusive."),
    )):
        command = option(command)
    return command


def settings_from_ctx(ctx: click.Context) -> Settings:
    """Settings from the environment; ``ctx.obj["routes"]`` may replace the routes
    (tests point a route at a table in their own dataset that way)."""
    obj: dict[str, Any] = ctx.obj or {}
    try:
        settings = Settings.from_env(obj.get("project"))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if obj.get("routes"):
        settings = dataclasses.replace(settings, routes=tuple(obj["routes"]))
    return settings


@contextmanager
def graceful_sigint(stop: threading.Event, say: Callable[[str], None]) -> Iterator[None]:
    """First Ctrl-C: finish the batch in flight, then stop. Second: stop at once.

    Why: replay and redrive must never leave a batch half-sent or half-acked.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        say("[yellow]stopping after the batch in flight (Ctrl-C again to abort)[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
