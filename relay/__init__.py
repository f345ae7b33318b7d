"""The relay: moves unpublished log rows to Pub/Sub and flags them.

``Relay.run_once()`` is the one entry point that the scheduler, the HTTP
trigger, the CLI and the tests all call.
"""

from relay.cycle import Relay, RelayConfig, RunSummary

__all__ = ["Relay", "RelayConfig", "RunSummary"]
