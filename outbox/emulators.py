"""Start and stop the local BigQuery and Pub/Sub emulators.

Each emulator runs as a subprocess in a process group of its own and is stopped
by signalling the whole group: ``gcloud`` runs the Pub/Sub emulator as a Java
child that outlives a killed ``gcloud`` and keeps the port. Output goes to a
log file whose tail is quoted when start-up fails.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Self, TypedDict, Unpack

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
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a server could bind ``port`` on 127.0.0.1 now (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _http_ok(url: str, expect: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and (expect is None or expect in resp.read())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors
        return False


def _strip_scheme(host: str) -> str:
    return host.strip().split("://", 1)[-1].rstrip("/")


def bigquery_from_env() -> tuple[str, str] | None:
    """``(rest, grpc)`` as ``host:port`` from BIGQUERY_EMULATOR_HOST, or None if unset.

    The gRPC endpoint is BIGQUERY_EMULATOR_GRPC_HOST, else port 9060 on the REST host.
    A scheme (``http://``) on either variable is dropped.
    """
    rest = _strip_scheme(os.environ.get("BIGQUERY_EMULATOR_HOST", ""))
    if not rest:
        return None
    grpc = _strip_scheme(os.environ.get("BIGQUERY_EMULATOR_GRPC_HOST", ""))
    return rest, grpc or f"{rest.rsplit(':', 1)[0]}:{_DEFAULT_GRPC_PORT}"


def pubsub_from_env() -> str | None:
    """``host:port`` from PUBSUB_EMULATOR_HOST, or None if unset."""
    return _strip_scheme(os.environ.get("PUBSUB_EMULATOR_HOST", "")) or None


class EmulatorOptions(TypedDict, total=False):
    log_dir: str | Path | None  # default: <tmp>/outbox-emulators
    startup_timeout: float  # seconds to wait for readiness (default 60)
    stop_timeout: float  # seconds between SIGTERM and SIGKILL (default 10)


class _Emulator:
    """Shared lifecycle: spawn in a new session, poll for readiness, signal the group."""

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
        self.log_dir = Path(log_dir or Path(tempfile.gettempdir()) / "outbox-emulators")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None  # of the last successful start
        self._proc: subprocess.Popen[bytes] | None = None
        self._argv: list[str] = []
        self._starts = 0

    ports: tuple[int, ...] = ()  # set by subclasses; the first one names the log file

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _check_prerequisites(self) -> None:
        """Raise EmulatorUnavailable when something the emulator needs is missing."""

    def _cleanup(self) -> None:
        """Remove per-run state once the process group is gone."""

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
            env.pop(var, None)
        return env

    @property
    def pid(self) -> int | None:
        """Pid of the launched process, which is also its process-group id."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch and wait until the emulator answers; EmulatorUnavailable otherwise."""
        if self.is_running():
            return self
        if self._proc is not None:  # leader died on its own: end what is left of its group
            self.stop()
        self._check_prerequisites()
        self._wait_ports_free()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}-{self.ports[0]}.log"
        self._argv = self._command()
        began = time.monotonic()
        with open(self.log_path, "ab" if self._starts else "wb") as log:
            self._proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._child_env(),
            )
        self._starts += 1
        atexit.register(self.stop)
        while not self._ready():
            code = self._proc.poll()
            if code is not None:
                self._fail(f"exited with status {code} during start-up")
            if time.monotonic() - began > self.startup_timeout:
                self._fail(f"not ready after {self.startup_timeout:g} s")
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL it after ``stop_timeout``."""
        if self._proc is not None and not self._signal_group(signal.SIGTERM):
            self._signal_group(signal.SIGKILL)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, like a crash (for chaos tests)."""
        if self._proc is not None:
            self._signal_group(signal.SIGKILL)
        self._forget()

    def restart(self) -> Self:
        """Stop if running, then start again on the same port(s)."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(log is empty)"

    def _forget(self) -> None:
        self._proc = None
        atexit.unregister(self.stop)
        self._cleanup()

    def _signal_group(self, sig: signal.Signals) -> bool:
        """Signal the group; True once its leader is reaped and no member is left."""
        assert self._proc is not None
        pgid = self._proc.pid  # start_new_session: the child leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            leader_gone = self._proc.poll() is not None
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                if leader_gone:
                    return True
            time.sleep(0.05)
        return False

    def _wait_ports_free(self) -> None:
        deadline = time.monotonic() + self.stop_timeout
        while busy := [p for p in self.ports if not port_is_free(p)]:
            if time.monotonic() > deadline:
                raise EmulatorUnavailable(f"{self.name} emulator: port(s) {busy} in use")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        tail = self.log_tail()
        self.stop()
        raise EmulatorUnavailable(
            f"{self.name} emulator {what}; command: {' '.join(self._argv)}\n"
            f"last lines of {self.log_path}:\n{tail}"
        )


class BigQueryEmulator(_Emulator):
    """bqemulator (REST + gRPC), run through :mod:`outbox.bqemulator_launcher`."""

    name = "bigquery"

    def __init__(
        self,
        project: str = "test-project",
        *,
        rest_port: int | None = None,
        grpc_port: int | None = None,
        **options: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(project, **options)
        self.rest_port = rest_port or free_port()
        self.grpc_port = grpc_port or free_port()
        while self.grpc_port == self.rest_port:
            self.grpc_port = free_port()
        self.ports = (self.rest_port, self.grpc_port)

    @property
    def rest_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{_LOOPBACK}:{self.grpc_port}"

    def env(self) -> dict[str, str]:
        """Variables that let :func:`bigquery_from_env` find this emulator.

        Note: google-cloud-bigquery itself reads BIGQUERY_EMULATOR_HOST as a full
        base URL (with ``http://``); pass ``ClientOptions(api_endpoint=rest_url)``.
        """
        return {
            "BIGQUERY_EMULATOR_HOST": _strip_scheme(self.rest_url),
            "BIGQUERY_EMULATOR_GRPC_HOST": self.grpc_endpoint,
        }

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "outbox.bqemulator_launcher", "start",
            "--rest-host", _LOOPBACK, "--rest-port", str(self.rest_port),
            "--grpc-host", _LOOPBACK, "--grpc-port", str(self.grpc_port),
            "--project", self.project, "--ephemeral", "--no-admin", "--log-level", "warning",
        ]  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        env = super()._child_env()  # let `-m outbox.…` import from any working directory
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env

    def _ready(self) -> bool:
        return _http_ok(f"{self.rest_url}/bigquery/v2/projects/{self.project}/datasets")


class PubSubEmulator(_Emulator):
    """Google's Pub/Sub emulator, via ``gcloud beta emulators pubsub start``."""

    name = "pubsub"

    def __init__(
        self,
        project: str = "test-project",
        *,
        port: int | None = None,
        **options: Unpack[EmulatorOptions],
    ) -> None:
        super().__init__(project, **options)
        self.port = port or free_port()
        self.ports = (self.port,)
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
                f"the Pub/Sub emulator needs {' and '.join(missing)} on PATH; {PUBSUB_INSTALL_HINT}"
            )

    def _command(self) -> list[str]:
        self._data_dir = tempfile.mkdtemp(prefix="outbox-pubsub-")  # no state shared across runs
        return [
            "gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={self.host}",
            f"--project={self.project}", f"--data-dir={self._data_dir}", "--quiet",
        ]  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        env = super()._child_env()
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
        env["CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK"] = "1"
        return env

    def _ready(self) -> bool:
        return _http_ok(f"http://{self.host}/", expect=b"Ok")

    def _cleanup(self) -> None:
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
