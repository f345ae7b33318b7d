"""OIDC on /process (tokens signed by a key the test makes) and ``app_from_env``."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_relay_service as relay_tests  # the relay's OIDC kit: a test key and a cert server

from outbox.errors import ConfigError
from outbox.oidc import OidcVerifier
from processors.registry import Registry
from processors.service import app_from_env, raw_processors
from processors.testing import FakeProcessor, push_body, v1_payload

keys = relay_tests.keys
AUDIENCE = "https://nba-processors-abc-uc.a.run.app/process"
PUSHER = "pubsub-push@proj.iam.gserviceaccount.com"


def bearer(keys: relay_tests.Keys, **claims: Any) -> dict[str, str]:
    token = relay_tests.token(keys.signer, **{"aud": AUDIENCE, "email": PUSHER, **claims})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_rig: Any, keys: relay_tests.Keys) -> Any:
    return make_rig(auth=OidcVerifier(AUDIENCE, PUSHER, certs_url=keys.certs_url))


def body(rig: Any) -> bytes:
    return push_body(v1_payload("a1", rig.uris["games"]))


def test_a_valid_push_token_is_processed(secured: Any, keys: relay_tests.Keys) -> None:
    resp = secured.post(body(secured), headers=bearer(keys))
    assert resp.status_code == 200 and resp.get_json()["outcome"] == "processed"
    assert secured.client.get("/health").get_json()["auth"] == "oidc"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic dXNlcjpwYXNz"])
def test_a_missing_token_is_401_and_nothing_is_read_or_written(secured: Any,
                                                              header: str | None) -> None:
    resp = secured.post(body(secured), headers={} if header is None else {"Authorization": header})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert secured.written() == (0, 0, 0) and secured.calls() == 0


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "https://relay.example/relay/run"}, "wrong audience"),
    ({"email": "someone@proj.iam.gserviceaccount.com"}, "wrong email"),
    ({"email_verified": False}, "email not verified"),
    ({"iss": "https://evil.example.com"}, "wrong issuer"),
])
def test_a_wrong_token_is_403(secured: Any, keys: relay_tests.Keys, claims: dict[str, Any],
                              reason: str) -> None:
    resp = secured.post(body(secured), headers=bearer(keys, **claims))
    assert resp.status_code == 403 and resp.get_json() == {"error": reason}
    assert secured.written() == (0, 0, 0) and secured.calls() == 0


def test_a_token_signed_by_another_key_is_403(secured: Any, keys: relay_tests.Keys) -> None:
    other = relay_tests.token(keys.other, aud=AUDIENCE, email=PUSHER)
    resp = secured.post(body(secured), headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 403 and secured.calls() == 0


# -- app_from_env ---------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for name in ("PROCESSOR_PUSH_AUDIENCE", "PROCESSOR_PUSH_INVOKER", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTBOX_PROJECT", "test-project")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9")  # never contacted at boot
    monkeypatch.setenv("OUTBOX_STORAGE", tmp_path.as_uri())
    yield monkeypatch
    root.handlers[:], root.level = handlers, level


def fake_raw_module(monkeypatch: pytest.MonkeyPatch, seen: list[Any]) -> None:
    """A stand-in for processors.raw: its two entry points, recording the sink."""
    raw = types.ModuleType("processors.raw")
    sink_module = types.ModuleType("processors.raw.bigquery_sink")

    def build_processors(sink: Any) -> dict[str, FakeProcessor]:
        seen.append(sink)
        names = ("bdl_games", "bdl_player_box_scores", "oddsa_player_points_props")
        return {n: FakeProcessor(n) for n in names}

    raw.build_processors = build_processors  # type: ignore[attr-defined]
    sink_module.BigQueryRawSink = lambda client, project: (client, project)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "processors.raw", raw)
    monkeypatch.setitem(sys.modules, "processors.raw.bigquery_sink", sink_module)


def test_app_from_env_wires_the_processors_lazily_imported(env: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    fake_raw_module(env, seen)
    env.setenv("PROCESSOR_PUSH_AUDIENCE", AUDIENCE)
    env.setenv("PROCESSOR_PUSH_INVOKER", PUSHER)
    health = app_from_env().test_client().get("/health").get_json()
    client, project = seen[0]
    assert project == "test-project" and client.project == "test-project"
    assert sorted(health["processors"]) == ["bdl_games", "bdl_player_box_scores",
                                            "oddsa_player_points_props"]
    assert health["auth"] == "oidc"
    deps = health["dependencies"]
    assert deps["ledger"]["backend"] == "bigquery:test-project.nba_orchestration.processed_events"
    assert deps["quarantine"]["backend"].endswith("nba_orchestration.processor_quarantine")
    assert deps["log_writer"]["backend"] == (
        "BigQueryOutboxStore:nba_orchestration.processor_execution_log")
    assert deps["blobs"]["backend"] == "LocalBlobs"


def test_app_from_env_serves_the_real_raw_processors(env: pytest.MonkeyPatch) -> None:
    health = app_from_env().test_client().get("/health").get_json()
    assert sorted(health["processors"]) == sorted(Registry().processors)


def test_without_processors_raw_the_service_refuses_to_start(env: pytest.MonkeyPatch) -> None:
    env.setitem(sys.modules, "processors.raw", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"processors\.raw is not installed"):
        app_from_env()
    for name in ("processors.raw", "processors.raw.bigquery_sink"):
        env.setitem(sys.modules, name, types.ModuleType(name))
    with pytest.raises(ConfigError, match="needs build_processors"):
        raw_processors()


def test_half_an_oidc_configuration_is_refused(env: pytest.MonkeyPatch) -> None:
    fake_raw_module(env, [])
    env.setenv("PROCESSOR_PUSH_AUDIENCE", AUDIENCE)
    with pytest.raises(ConfigError, match="PROCESSOR_PUSH_INVOKER"):
        app_from_env()
