"""What the benchmarks share around their measurements: the console they print
to, the machine facts and JSON file they write, and the ``--sizes`` they read."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console


def wide_console(piped_width: int, honour_columns: bool = False) -> Console:
    """A console ``piped_width`` columns wide when stdout is not a terminal (rich
    would use 80 and truncate the tables); with ``honour_columns``, ``$COLUMNS``
    wins over that width when it is set."""
    own = sys.stdout.isatty() or (honour_columns and "COLUMNS" in os.environ)
    return Console(width=None if own else piped_width)


def machine_info(memory_digits: int | None = None) -> dict[str, Any]:
    """Cores, Python version and memory (GiB, rounded to ``memory_digits``; a whole
    number by default), the ``machine`` entry of every benchmark's JSON."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "memory_gib": round(memory, memory_digits)}


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (this process by default) in MiB, from /proc."""
    pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_json(out: Path, result: dict[str, Any]) -> None:
    """``result`` as indented JSON at ``out`` (dates and the like as strings)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))


def save_and_report(result: dict[str, Any], out: Path | None,
                    report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Write ``result`` to ``out`` (if given), then print it with ``report``."""
    if out is not None:
        write_json(out, result)
    report(result)
    return result


def parse_sizes(value: str, minimum: int) -> tuple[int, ...]:
    """``"1000,100_000"`` as ``(1000, 100000)``; every size at least ``minimum``."""
    try:
        sizes = tuple(int(v.strip().replace("_", "")) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of row counts, got {value!r}") from None
    if not sizes:
        raise click.BadParameter("give at least one size")
    if min(sizes) < minimum:
        raise click.BadParameter(f"each size must be at least {minimum:,}")
    return sizes


def sizes_callback(minimum: int) -> Callable[[click.Context, click.Parameter, str],
                                             tuple[int, ...]]:
    """A click callback for a comma-separated sizes option (see :func:`parse_sizes`)."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
        return parse_sizes(value, minimum)

    return callback
