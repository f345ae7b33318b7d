"""Start ``bqemulator`` without DuckDB's ``spatial`` extension.

bqemulator loads DuckDB's ``spatial`` extension at start-up (it backs the
GEOGRAPHY type and the ``ST_*`` functions) and downloads it when it is not
cached. The machines this project is built and tested on have no internet, so
the download fails and the emulator refuses to start. The outbox uses no
GEOGRAPHY column or function, so skipping that one load loses nothing we need.

This module is the one place the shim lives: it replaces
``DuckDBEngine._load_spatial`` with a no-op and then runs bqemulator's own CLI.
Usage is the same as the ``bqemulator`` command::

    python -m outbox.bqemulator_launcher start --rest-port 9050 --grpc-port 9060
"""

from __future__ import annotations

import sys

from bqemulator import cli
from bqemulator.storage import engine


def _skip_spatial(self: engine.DuckDBEngine) -> None:
    """No-op stand-in for ``DuckDBEngine._load_spatial`` (no GEOGRAPHY here)."""


def main(argv: list[str] | None = None) -> None:
    """Patch out the spatial load, then run ``bqemulator`` with ``argv``."""
    engine.DuckDBEngine._load_spatial = _skip_spatial
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="bqemulator")


if __name__ == "__main__":
    main()
