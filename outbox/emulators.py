"""Start and stop the local BigQuery and Pub/Sub emulators.

Each emulator runs as a subprocess in a process group of its own and is
stopped by signalling the whole group: ``gcloud`` starts the Pub/Sub emulator
as a Java child that outlives a killed ``gcloud`` and keeps the port.
Output goes to a log file, whose tail is quoted when start-up fails.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from outbox.errors import EmulatorUnavailable

_LOOPBACK = "127.0.0.1"
_DEFAULT_GRPC_PORT = 9060
PUBSUB_INSTALL_HINT = (
    "install the Google Cloud CLI and its Pub/Sub emulator: "
    "`apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator` "
    "(or `gcloud components install pubsub-emulator`), "
    "and a Java runtime (`apt-get install default-jre-headless`)"
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if nothing listens on ``port`` and it can be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _http_ok(url: str, expect: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (local URL)
            return resp.status == 200 and (expect is None or expect in resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _strip_scheme(host: str) -> str:
    return host.split("://", 1)[-1].rstrip("/")


def bigquery_from_env() -> tuple[str, str] | None:
    """``(rest_host, grpc_host)`` from BIGQUERY_EMULATOR_HOST[/_GRPC_HOST], or None.

    Both are ``host:port``. Without BIGQUERY_EMULATOR_GRPC_HOST the gRPC
    endpoint is port 9060 on the REST host.
    """
    rest = os.environ.get("BIGQUERY_EMULATOR_HOST", "").strip()
    if not rest:
        return None
    rest = _strip_scheme(rest)
    grpc = _strip_scheme(os.environ.get("BIGQUERY_EMULATOR_GRPC_HOST", "").strip())
    if not grpc:
        grpc = f"{rest.rsplit(':', 1)[0]}:{_DEFAULT_GRPC_PORT}"
    return rest, grpc


def pubsub_from_env() -> str | None:
    """``host:port`` from PUBSUB_EMULATOR_HOST, or None when it is unset."""
    host = os.environ.get("PUBSUB_EMULATOR_HOST", "").strip()
    return _strip_scheme(host) if host else None


class _Emulator:
    """Common lifecycle: spawn in a new session, poll readiness, kill the group."""

    name = "emulator"

    def __init__(
        self,
        project: str,
        *,
        log_dir: str | Path | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.project = project
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        base = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "outbox-emulators"
        self.log_dir = base
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._argv: list[str] = []
        self._starts = 0

    # -- hooks for subclasses -------------------------------------------------
    def _ports(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _check_prerequisites(self) -> None:
        """Raise EmulatorUnavailable when something needed is not installed."""

    def _cleanup(self) -> None:
        """Remove per-run state after the process group is gone."""

    # -- lifecycle ------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.is_running():
            return self
        self._check_prerequisites()
        self._wait_ports_free()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}-{self._ports()[0]}.log"
        self._argv = self._command()
        began = time.monotonic()
        with open(self.log_path, "ab" if self._starts else "wb") as log:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env_for_child(),
            )
        self._starts += 1
        atexit.register(self.stop)
        deadline = began + self.startup_timeout
        while True:
            if self._ready():
                self.startup_seconds = time.monotonic() - began
                return self
            code = self._proc.poll()
            if code is not None:
                self.stop()
                self._fail(f"exited with status {code} during start-up")
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"not ready after {self.startup_timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL it after ``stop_timeout``."""
        if self._proc is not None:
            if not self._signal_group(signal.SIGTERM, self.stop_timeout):
                self._signal_group(signal.SIGKILL, self.stop_timeout)
            self._proc = None
        atexit.unregister(self.stop)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for chaos tests)."""
        if self._proc is not None:
            self._signal_group(signal.SIGKILL, self.stop_timeout)
            self._proc = None
        atexit.unregister(self.stop)
        self._cleanup()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port(s)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------
    def _env_for_child(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
            env.pop(var, None)
        return env

    def _signal_group(self, sig: signal.Signals, timeout: float) -> bool:
        """Send ``sig`` to the group; True once the leader is reaped and the group is empty."""
        assert self._proc is not None
        pgid = self._proc.pid  # session leader: pgid == pid
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            self._proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return self._proc.poll() is not None
            except PermissionError:
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _wait_ports_free(self) -> None:
        deadline = time.monotonic() + self.stop_timeout
        while not all(port_is_free(p) for p in self._ports()):
            if time.monotonic() > deadline:
                busy = [p for p in self._ports() if not port_is_free(p)]
                raise EmulatorUnavailable(f"{self.name} emulator: port(s) {busy} already in use")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(log is empty)"

    def _fail(self, what: str) -> None:
        raise EmulatorUnavailable(
            f"{self.name} emulator {what}; command: {' '.join(self._argv)}\n"
            f"log {self.log_path} (last lines):\n{self.log_tail()}"
        )


class BigQueryEmulator(_Emulator):
    """bqemulator (REST + gRPC) started through :mod:`outbox.bqemulator_launcher`."""

    name = "bigquery"

    def __init__(
        self,
        project: str = "test-project",
        *,
        rest_port: int | None = None,
        grpc_port: int | None = None,
        log_dir: str | Path | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            project, log_dir=log_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.rest_port = rest_port or free_port()
        self.grpc_port = grpc_port or free_port()
        while self.grpc_port == self.rest_port:
            self.grpc_port = free_port()

    @property
    def rest_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{_LOOPBACK}:{self.grpc_port}"

    def env(self) -> dict[str, str]:
        return {
            "BIGQUERY_EMULATOR_HOST": _strip_scheme(self.rest_url),
            "BIGQUERY_EMULATOR_GRPC_HOST": self.grpc_endpoint,
        }

    def _ports(self) -> tuple[int, ...]:
        return (self.rest_port, self.grpc_port)

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "outbox.bqemulator_launcher", "start",
            "--rest-host", _LOOPBACK, "--rest-port", str(self.rest_port),
            "--grpc-host", _LOOPBACK, "--grpc-port", str(self.grpc_port),
            "--project", self.project, "--ephemeral", "--no-admin",
            "--log-level", "warning",
        ]  # fmt: skip

    def _env_for_child(self) -> dict[str, str]:
        env = super()._env_for_child()  # make `-m outbox.…` work from any cwd
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env

    def _ready(self) -> bool:
        return _http_ok(f"{self.rest_url}/bigquery/v2/projects/{self.project}/datasets")


class PubSubEmulator(_Emulator):
    """Google's Pub/Sub emulator, through ``gcloud beta emulators pubsub start``."""

    name = "pubsub"

    def __init__(
        self,
        project: str = "test-project",
        *,
        port: int | None = None,
        log_dir: str | Path | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            project, log_dir=log_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.port = port or free_port()
        self._data_dir: str | None = None

    @property
    def host(self) -> str:
        return f"{_LOOPBACK}:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def _check_prerequisites(self) -> None:
        missing = [tool for tool in ("gcloud", "java") if shutil.which(tool) is None]
        if missing:
            raise EmulatorUnavailable(
                f"pubsub emulator needs {' and '.join(missing)} on PATH; {PUBSUB_INSTALL_HINT}"
            )

    def _command(self) -> list[str]:
        if self._data_dir is None:
            self._data_dir = tempfile.mkdtemp(prefix="outbox-pubsub-")
        return [
            "gcloud", "beta", "emulators", "pubsub", "start",
            f"--host-port={self.host}", f"--project={self.project}",
            f"--data-dir={self._data_dir}", "--quiet",
        ]  # fmt: skip

    def _env_for_child(self) -> dict[str, str]:
        env = super()._env_for_child()
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
        env["CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK"] = "1"
        return env

    def _ports(self) -> tuple[int, ...]:
        return (self.port,)

    def _ready(self) -> bool:
        return _http_ok(f"http://{self.host}/", expect=b"Ok")

    def _cleanup(self) -> None:
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
