"""The emulator plumbing: start on free ports, answer, stop cleanly, restart, explain failures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outbox import emulators
from outbox.emulators import (
    BigQueryEmulator,
    PubSubEmulator,
    bigquery_from_env,
    free_port,
    port_is_free,
    pubsub_from_env,
)
from outbox.errors import EmulatorUnavailable

StartEmulator = Callable[[Any], Any]
REPO = Path(__file__).resolve().parent.parent


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append((int(entry.name), comm))
    return members


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def bq_client(emulator: BigQueryEmulator) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=emulator.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=emulator.rest_url),
    )


# -- the session fixtures ---------------------------------------------------------------


@pytest.mark.emulator
def test_bigquery_emulator_answers_the_official_client(bq_emulator: BigQueryEmulator) -> None:
    assert bq_emulator.is_running()
    assert bq_emulator.rest_port != bq_emulator.grpc_port
    assert not port_is_free(bq_emulator.rest_port)
    assert not port_is_free(bq_emulator.grpc_port)
    assert bq_emulator.rest_url == f"http://127.0.0.1:{bq_emulator.rest_port}"
    assert bq_emulator.env() == {
        "BIGQUERY_EMULATOR_HOST": f"127.0.0.1:{bq_emulator.rest_port}",
        "BIGQUERY_EMULATOR_GRPC_HOST": f"127.0.0.1:{bq_emulator.grpc_port}",
    }
    rows = list(bq_client(bq_emulator).query("SELECT 41 + 1 AS answer").result())
    assert [row["answer"] for row in rows] == [42]


@pytest.mark.emulator
def test_pubsub_emulator_answers_the_official_client(pubsub_emulator: PubSubEmulator) -> None:
    from google.cloud import pubsub_v1

    assert pubsub_emulator.is_running()
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator.host
    assert pubsub_emulator.env() == {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_emulator.port}"}
    assert pubsub_from_env() == pubsub_emulator.host

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(pubsub_emulator.project, "emulator-smoke")
    sub = subscriber.subscription_path(pubsub_emulator.project, "emulator-smoke-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    publisher.publish(topic, b"hello", kind="smoke").result(timeout=30)
    response = subscriber.pull(subscription=sub, max_messages=1, timeout=30)
    assert [m.message.data for m in response.received_messages] == [b"hello"]
    subscriber.close()


# -- lifecycle on private instances -----------------------------------------------------


@pytest.mark.emulator
def test_pubsub_stop_ends_the_java_child_and_frees_the_port(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator: PubSubEmulator = start_emulator(PubSubEmulator("lifecycle", log_dir=tmp_path))
    pgid = emulator.pid
    assert pgid is not None
    assert any(comm == "java" for _, comm in group_members(pgid)), group_members(pgid)
    assert emulator.log_path is not None and emulator.log_path.parent == tmp_path

    emulator.stop()

    assert not emulator.is_running() and emulator.pid is None
    assert group_members(pgid) == []
    assert port_is_free(emulator.port)


@pytest.mark.emulator
def test_killing_only_gcloud_leaves_java_and_start_cleans_it_up(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    emulator: PubSubEmulator = start_emulator(PubSubEmulator("orphan", log_dir=tmp_path))
    pgid = emulator.pid
    assert pgid is not None
    os.kill(pgid, signal.SIGKILL)  # what a naive Popen.kill() does
    assert wait_until(lambda: not emulator.is_running())
    time.sleep(0.5)
    orphans = group_members(pgid)
    assert [comm for _, comm in orphans] == ["java"]
    assert not port_is_free(emulator.port), "the orphaned Java emulator still holds the port"

    emulator.start()  # ends the orphaned group first, then starts afresh on the same port

    assert group_members(pgid) == []
    assert emulator.is_running() and emulator.pid != pgid
    emulator.stop()
    assert port_is_free(emulator.port)


@pytest.mark.emulator
def test_bigquery_stop_frees_both_ports(start_emulator: StartEmulator, tmp_path: Path) -> None:
    emulator: BigQueryEmulator = start_emulator(BigQueryEmulator("lifecycle", log_dir=tmp_path))
    pgid = emulator.pid
    assert pgid is not None

    emulator.stop()

    assert group_members(pgid) == []
    assert port_is_free(emulator.rest_port) and port_is_free(emulator.grpc_port)


@pytest.mark.emulator
@pytest.mark.parametrize("crash", [False, True], ids=["restart", "kill-then-restart"])
def test_restart_on_the_same_ports(
    start_emulator: StartEmulator, tmp_path: Path, crash: bool
) -> None:
    bq: BigQueryEmulator = start_emulator(BigQueryEmulator("restart", log_dir=tmp_path))
    ps: PubSubEmulator = start_emulator(PubSubEmulator("restart", log_dir=tmp_path))
    before = {"bq": (bq.pid, bq.rest_port, bq.grpc_port), "ps": (ps.pid, ps.port)}
    client = bq_client(bq)
    client.create_dataset("before_restart")
    if crash:
        bq.kill()
        ps.kill()
        assert not bq.is_running() and not ps.is_running()
        assert port_is_free(bq.rest_port) and port_is_free(ps.port)

    bq.restart()
    ps.restart()

    assert (bq.rest_port, bq.grpc_port) == before["bq"][1:] and ps.port == before["ps"][1]
    assert bq.pid != before["bq"][0] and ps.pid != before["ps"][0]
    # --ephemeral: a restarted bqemulator starts empty, and answers on the same URL.
    assert [d.dataset_id for d in bq_client(bq).list_datasets()] == []
    assert emulators._http_ok(f"http://{ps.host}/", expect=b"Ok")


# -- failures explain themselves (no emulator needed) -----------------------------------


@pytest.mark.parametrize("missing", ["gcloud", "java"])
def test_missing_binary_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == missing else real_which(cmd))
    with pytest.raises(EmulatorUnavailable) as info:
        PubSubEmulator().start()
    message = str(info.value)
    assert f"needs {missing} on PATH" in message
    assert "apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator" in message
    assert "gcloud components install pubsub-emulator" in message
    assert "apt-get install default-jre-headless" in message


def test_missing_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda cmd: None)
    with pytest.raises(EmulatorUnavailable, match="needs gcloud and java on PATH"):
        PubSubEmulator().start()


class _Crashing(BigQueryEmulator):
    def _command(self) -> list[str]:
        script = "import sys; print('cannot open duckdb: boom'); sys.exit(3)"
        return [sys.executable, "-c", script]


class _Silent(BigQueryEmulator):
    def _command(self) -> list[str]:
        return [sys.executable, "-c", "import time; print('hanging'); time.sleep(60)"]


def test_crash_at_start_quotes_the_log(tmp_path: Path) -> None:
    with pytest.raises(EmulatorUnavailable) as info:
        _Crashing(log_dir=tmp_path).start()
    assert "exited with status 3" in str(info.value)
    assert "cannot open duckdb: boom" in str(info.value)


def test_timeout_stops_the_process_and_quotes_the_log(tmp_path: Path) -> None:
    emulator = _Silent(log_dir=tmp_path, startup_timeout=1.0)
    with pytest.raises(EmulatorUnavailable, match=r"not ready after 1 s[\s\S]*hanging"):
        emulator.start()
    assert not emulator.is_running()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536 and port_is_free(port)


def test_endpoints_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BIGQUERY_EMULATOR_HOST", "BIGQUERY_EMULATOR_GRPC_HOST", "PUBSUB_EMULATOR_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert bigquery_from_env() is None and pubsub_from_env() is None

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9050")
    assert bigquery_from_env() == ("127.0.0.1:9050", "127.0.0.1:9060")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://localhost:19050/")
    monkeypatch.setenv("BIGQUERY_EMULATOR_GRPC_HOST", "localhost:19060")
    assert bigquery_from_env() == ("localhost:19050", "localhost:19060")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "localhost:8085")
    assert pubsub_from_env() == "localhost:8085"


# -- the CI rule in conftest: a skipped test fails the session --------------------------

_SKIPPING_TESTS = textwrap.dedent(
    """
    import pytest

    def test_runs():
        pass

    def test_skipped():
        pytest.skip("no emulator here")

    @pytest.mark.xfail(reason="known")
    def test_xfail():
        raise AssertionError
    """
)


@pytest.mark.parametrize("ci", ["true", ""])
def test_skips_fail_the_session_only_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_sample=_SKIPPING_TESTS)
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-p", "no:bqemulator", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    if ci:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            ["*CI=true: skipped tests fail the run*", "SKIPPED *test_skipped*no emulator here"]
        )
    else:
        assert result.ret == pytest.ExitCode.OK
        assert "skipped tests fail the run" not in result.stdout.str()


def test_unavailable_emulator_fails_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        test_sample="""
        import shutil
        import pytest
        from outbox import emulators

        @pytest.fixture(autouse=True)
        def no_gcloud(monkeypatch):
            monkeypatch.setattr(shutil, "which", lambda cmd: None)

        @pytest.mark.emulator
        def test_needs_pubsub(start_emulator):
            start_emulator(emulators.PubSubEmulator())
        """
    )
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest_subprocess("-p", "no:bqemulator", "-p", "no:cacheprovider")
    ci.assert_outcomes(failed=1)
    ci.stdout.fnmatch_lines(["*emulator unavailable in CI*install the Google Cloud CLI*"])

    monkeypatch.setenv("CI", "false")
    local = pytester.runpytest_subprocess("-p", "no:bqemulator", "-p", "no:cacheprovider")
    local.assert_outcomes(skipped=1)
    assert local.ret == pytest.ExitCode.OK


def test_launcher_hands_argv_to_bqemulator() -> None:
    """The shimmed launcher is bqemulator's own CLI (here: ``start --help``, no server)."""
    out = subprocess.run(
        [sys.executable, "-m", "outbox.bqemulator_launcher", "start", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert "--rest-port" in out.stdout
