"""The relay's HTTP service: the trigger, its input checks, metrics, OIDC and the run lock.

Against the in-memory doubles (fast), plus one run on the emulators.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient
from google.auth import crypt
from google.auth import jwt as google_jwt

from outbox.errors import ConfigError
from outbox.ports import Message, PublishOutcome
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.testing import InMemoryLease, InMemoryOutboxStore, InMemoryPublisher, PublisherFaults
from relay import Relay, RelayConfig, RunSummary
from relay.auth import OidcVerifier
from relay.metrics import RelayMetrics, cost_counters
from relay.service import (
    RelayBusy,
    RelayRunner,
    app_from_env,
    create_app,
    relay_config_from_env,
)

AUDIENCE = "https://relay-abc-uc.a.run.app/relay/run"
INVOKER = "scheduler@proj.iam.gserviceaccount.com"
KID = "test-key-1"


@dataclass
class Rig:
    client: FlaskClient
    store: InMemoryOutboxStore
    publisher: InMemoryPublisher
    metrics: RelayMetrics
    relay: Relay


def rig(n: int = 10, auth: OidcVerifier | None = None, publisher: Any = None,
        faults: PublisherFaults | None = None) -> Rig:
    store = InMemoryOutboxStore(columns=SCRAPER_COMPLETE.columns)
    store.append(scraper_rows(n))
    pub = publisher or InMemoryPublisher(faults=faults)
    relay = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig(batch_size=4), sleep=lambda s: None)
    metrics = RelayMetrics()
    app = create_app({"scrapers": relay}.__getitem__, metrics, auth=auth, routes=["scrapers"])
    return Rig(app.test_client(), store, getattr(pub, "inner", pub), metrics, relay)


def nothing_ran(r: Rig) -> bool:
    return r.publisher.sent == [] and r.store.jobs == 0


# -- the trigger ---------------------------------------------------------------------------


def test_trigger_drains_every_route_and_returns_the_summaries() -> None:
    r = rig(10)
    resp = r.client.post("/relay/run")
    assert resp.status_code == 200
    (run,) = resp.get_json()["runs"]
    assert run["route"] == "scrapers" and run["published"] == 10 and run["stopped"] == "drained"
    assert r.store.published_ids() == {row["execution_id"] for row in r.store.rows}
    assert set(r.publisher.counts().values()) == {1}
    assert r.client.post("/relay/run").get_json()["runs"][0]["published"] == 0


@pytest.mark.parametrize("how", ["query", "json", "octet-stream"])
def test_deadline_and_route_come_from_the_query_string_or_a_json_body(how: str) -> None:
    seen: list[dt.timedelta | None] = []

    class Fake:
        def run_once(self, deadline: dt.timedelta | None = None) -> RunSummary:
            seen.append(deadline)
            return RunSummary(route="scrapers", run_id="r1")

    client = create_app(lambda name: Fake(), RelayMetrics()).test_client()
    params = {"deadline": 7.5, "route": "scrapers"}
    if how == "query":
        resp = client.post("/relay/run", query_string=params)
    elif how == "json":
        resp = client.post("/relay/run", json=params)
    else:  # Cloud Scheduler's default content type
        resp = client.post("/relay/run", data=json.dumps(params),
                           content_type="application/octet-stream")
    assert resp.status_code == 200, resp.get_json()
    assert seen and 7 < seen[0].total_seconds() <= 7.5  # type: ignore[union-attr]


@pytest.mark.parametrize("deadline", ["-1", "0", "abc", "", "3601", "nan", "inf", "1e9"])
def test_a_bad_deadline_in_the_query_is_400_and_nothing_runs(deadline: str) -> None:
    r = rig(3)
    resp = r.client.post(f"/relay/run?deadline={deadline}")
    assert resp.status_code == 400
    assert "deadline" in resp.get_json()["error"]
    assert nothing_ran(r)


@pytest.mark.parametrize("body", [{"deadline": -5}, {"deadline": 0}, {"deadline": "soon"},
                                  {"deadline": True}, {"deadline": None}, {"deadline": [1]},
                                  {"deadline": 3600.5}])
def test_a_bad_deadline_in_the_body_is_400_and_nothing_runs(body: dict[str, Any]) -> None:
    r = rig(3)
    resp = r.client.post("/relay/run", json=body)
    assert resp.status_code == 400 and "deadline" in resp.get_json()["error"]
    assert nothing_ran(r)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"query_string": {"route": "nope"}}, "unknown route 'nope'"),
    ({"json": {"route": "nope"}}, "unknown route 'nope'"),
    ({"json": {"dedline": 5}}, "unknown parameter(s): dedline"),
    ({"data": "not json"}, "JSON object"),
    ({"json": [1, 2]}, "JSON object"),
])
def test_bad_input_is_400_naming_the_problem_and_nothing_runs(kwargs: dict[str, Any],
                                                              needle: str) -> None:
    r = rig(3)
    resp = r.client.post("/relay/run", **kwargs)
    assert resp.status_code == 400 and needle in resp.get_json()["error"]
    assert nothing_ran(r)


def test_set_aside_and_publisher_outage_are_in_a_200_summary() -> None:
    r = rig(4, faults=PublisherFaults(unavailable=10))
    resp = r.client.post("/relay/run")
    assert resp.status_code == 200
    assert resp.get_json()["runs"][0]["stopped"] == "publisher_unavailable"


def test_a_config_error_is_500_with_its_message(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(2, publisher=InMemoryPublisher(topics=()))
    resp = r.client.post("/relay/run")
    assert resp.status_code == 500
    body = resp.get_json()
    assert body["error"] == "Pub/Sub topic 'nba-scraper-complete' does not exist"
    assert body["route"] == "scrapers" and body["runs"] == []
    assert 'outbox_runs_total{route="scrapers",stopped="error"} 1.0' in metrics_text(r.client)


def test_an_unexpected_exception_is_500_and_logged_with_its_route(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def run_once(self, deadline: dt.timedelta | None = None) -> RunSummary:
            raise RuntimeError("boom")

    client = create_app(lambda name: Broken(), RelayMetrics()).test_client()
    with caplog.at_level(logging.INFO, logger="relay"):
        resp = client.post("/relay/run")
    assert resp.status_code == 500
    assert resp.get_json()["error"] == "RuntimeError: boom"
    (rec,) = [x for x in caplog.records if x.levelno == logging.ERROR]
    assert rec.json_fields["route"] == "scrapers" and rec.exc_info  # type: ignore[attr-defined]


def test_each_route_summary_is_one_info_log_line(caplog: pytest.LogCaptureFixture) -> None:
    r = rig(5)
    with caplog.at_level(logging.INFO, logger="relay"):
        r.client.post("/relay/run")
    (rec,) = [x for x in caplog.records if x.getMessage() == "relay run finished"]
    fields = rec.json_fields  # type: ignore[attr-defined]
    assert rec.levelno == logging.INFO
    assert fields["route"] == "scrapers" and fields["published"] == 5 and fields["run_id"]
    assert fields["bigquery_jobs"] >= 2  # the double counts polls and folds as jobs


def test_routes_share_one_deadline_and_a_spent_one_skips_the_rest() -> None:
    clock = [0.0]
    seen: list[tuple[str, float]] = []

    class Slow:
        def __init__(self, name: str) -> None:
            self.name = name

        def run_once(self, deadline: dt.timedelta | None = None) -> RunSummary:
            assert deadline is not None
            seen.append((self.name, deadline.total_seconds()))
            clock[0] += 4.0
            return RunSummary(route=self.name, run_id="r")

    runner = RelayRunner(Slow, ["a", "b"], RelayMetrics(), monotonic=lambda: clock[0])
    assert [s.route for s in runner.run(5.0)] == ["a", "b"]
    assert seen == [("a", 5.0), ("b", 1.0)]
    seen.clear()
    assert [s.route for s in runner.run(4.2)] == ["a"]  # 0.2 s left for b: not started
    assert [s.route for s in runner.run(9.0, ["b"])] == ["b"]


# -- RelayMetrics, read from its registry -------------------------------------------------


def sample(m: RelayMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {"route": "scrapers", **labels})


def test_metrics_observe_a_run() -> None:
    m = RelayMetrics(wall_clock=lambda: 1_700_000_000.0)
    summary = RunSummary(route="scrapers", run_id="r1", published=3, failed=2, set_aside=1,
                         backlog=40, oldest_pending_age_seconds=95.5, seconds=1.25,
                         publish_latencies=[0.004, 0.2, 0.2], publish_ages=[30.0, 31.0, 3000.0])
    m.observe(summary, jobs_delta=4, bytes_delta=10_485_760, sessions_delta=2)
    assert sample(m, "outbox_backlog_rows") == 40
    assert sample(m, "outbox_oldest_pending_age_seconds") == 95.5
    assert sample(m, "outbox_published_total") == 3
    assert sample(m, "outbox_publish_failed_total") == 2
    assert sample(m, "outbox_set_aside_total") == 1
    assert sample(m, "outbox_publish_latency_seconds_count") == 3
    assert sample(m, "outbox_publish_latency_seconds_bucket", le="0.01") == 1
    assert sample(m, "outbox_event_age_at_publish_seconds_bucket", le="60.0") == 2
    assert sample(m, "outbox_event_age_at_publish_seconds_bucket", le="3600.0") == 3
    assert sample(m, "outbox_bigquery_jobs_total") == 4
    assert sample(m, "outbox_bigquery_bytes_processed_total") == 10_485_760
    assert sample(m, "outbox_read_sessions_total") == 2
    assert sample(m, "outbox_last_run_duration_seconds") == 1.25
    assert sample(m, "outbox_last_run_timestamp_seconds") == 1_700_000_000.0
    assert sample(m, "outbox_runs_total", stopped="drained") == 1


@pytest.mark.parametrize(("stopped", "label"), [
    ("deadline", "deadline"), ("publisher_unavailable", "publisher_unavailable"),
    ("lease_held", "lease_held"), ("error: poll failed: quota", "error"), ("weird", "error")])
def test_metrics_keep_the_stopped_label_bounded(stopped: str, label: str) -> None:
    m = RelayMetrics()
    m.observe(RunSummary(route="scrapers", run_id="r", stopped=stopped))
    assert sample(m, "outbox_runs_total", stopped=label) == 1


def test_metrics_keep_the_last_measured_backlog_when_a_run_did_not_poll() -> None:
    m = RelayMetrics()
    m.observe(RunSummary(route="scrapers", run_id="r1", backlog=12, oldest_pending_age_seconds=9))
    for stopped in ("lease_held", "error: lease unavailable: boom"):
        m.observe(RunSummary(route="scrapers", run_id="r2", stopped=stopped))
    assert sample(m, "outbox_backlog_rows") == 12
    assert sample(m, "outbox_oldest_pending_age_seconds") == 9
    m.observe_error("scrapers", 0.5, jobs_delta=1)
    assert sample(m, "outbox_runs_total", stopped="error") == 2
    assert sample(m, "outbox_bigquery_jobs_total") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = RelayMetrics(), RelayMetrics()
    a.observe(RunSummary(route="scrapers", run_id="r", published=1))
    assert sample(a, "outbox_published_total") == 1
    assert sample(b, "outbox_published_total") is None


def test_cost_counters_read_what_a_store_counts() -> None:
    @dataclass
    class Stats:
        jobs: int = 3
        bytes_processed: int = 2048

    @dataclass
    class Reader:
        sessions: int = 5

    @dataclass
    class BigQueryLike:
        stats: Stats = field(default_factory=Stats)
        reader: Reader = field(default_factory=Reader)

    @dataclass
    class HasStore:
        store: Any

    assert cost_counters(HasStore(BigQueryLike())) == (3, 2048, 5)
    memory = InMemoryOutboxStore()
    memory.jobs = 7
    assert cost_counters(HasStore(memory)) == (7, 0, 0)
    assert cost_counters(object()) == (0, 0, 0)


def test_a_run_skipped_for_a_held_lease_is_200_and_keeps_the_backlog_gauge() -> None:
    r = rig(4)
    r.client.post("/relay/run")
    lease = InMemoryLease()
    assert lease.acquire("scrapers", "another-relay", dt.timedelta(minutes=5))
    r.relay.lease = lease
    r.store.append(scraper_rows(3, seed=1))
    resp = r.client.post("/relay/run")
    assert resp.status_code == 200 and resp.get_json()["runs"][0]["stopped"] == "lease_held"
    assert len(r.publisher.sent) == 4
    text = metrics_text(r.client)
    assert 'outbox_runs_total{route="scrapers",stopped="lease_held"} 1.0' in text
    assert 'outbox_backlog_rows{route="scrapers"} 4.0' in text


# -- health, metrics, JSON errors --------------------------------------------------------


def metrics_text(client: FlaskClient) -> str:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain; version=")
    return resp.get_data(as_text=True)


def test_health() -> None:
    resp = rig(0).client.get("/health")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_metrics_show_what_the_run_did() -> None:
    r = rig(10)
    r.client.post("/relay/run")
    text = metrics_text(r.client)
    for line in ('outbox_published_total{route="scrapers"} 10.0',
                 'outbox_backlog_rows{route="scrapers"} 10.0',
                 'outbox_runs_total{route="scrapers",stopped="drained"} 1.0',
                 'outbox_publish_latency_seconds_count{route="scrapers"} 10.0',
                 'outbox_event_age_at_publish_seconds_count{route="scrapers"} 10.0'):
        assert line in text
    r.client.post("/relay/run")
    assert 'outbox_backlog_rows{route="scrapers"} 0.0' in metrics_text(r.client)


def test_404_and_405_are_json() -> None:
    client = rig(0).client
    resp = client.get("/nope")
    assert resp.status_code == 404 and "error" in resp.get_json()
    resp = client.get("/relay/run")
    assert resp.status_code == 405 and "error" in resp.get_json()
    assert "POST" in resp.headers["Allow"]


# -- one run at a time per process ---------------------------------------------------------


@dataclass
class BlockingPublisher:
    inner: InMemoryPublisher = field(default_factory=InMemoryPublisher)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        self.entered.set()
        assert self.release.wait(10)
        return self.inner.publish(topic, messages)

    def close(self) -> None:
        return None


def test_a_concurrent_run_waits_up_to_its_deadline_then_gets_409() -> None:
    pub = BlockingPublisher()
    r = rig(3, publisher=pub)
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(
        resp=r.client.application.test_client().post("/relay/run?deadline=10")))
    thread.start()
    try:
        assert pub.entered.wait(5)
        t0 = time.monotonic()
        resp = r.client.post("/relay/run?deadline=0.3")
        assert resp.status_code == 409
        assert resp.get_json() == {"error": "a relay run is already in progress"}
        assert 0.25 <= time.monotonic() - t0 < 3
    finally:
        pub.release.set()
        thread.join(10)
    assert first["resp"].status_code == 200 and len(pub.inner.sent) == 3
    assert r.client.post("/relay/run").status_code == 200  # the lock was released


def test_the_runner_raises_busy_when_the_lock_stays_taken() -> None:
    runner = RelayRunner(lambda n: pytest.fail("must not run"), ["scrapers"], RelayMetrics())
    with runner.lock, pytest.raises(RelayBusy):
        runner.run(0.05)


# -- OIDC ----------------------------------------------------------------------------------


@dataclass
class Keys:
    signer: crypt.RSASigner
    other: crypt.RSASigner
    certs_url: str
    hits: list[str]


def _key_and_cert() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    """A key pair; its self-signed certificate served as Google serves its certs."""
    private, cert = _key_and_cert()
    other_private, _ = _key_and_cert()
    body = json.dumps({KID: cert.decode()}).encode()
    hits: list[str] = []

    class Certs(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Keys(crypt.RSASigner.from_string(private, key_id=KID),
                   crypt.RSASigner.from_string(other_private, key_id=KID),
                   f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs", hits)
    finally:
        server.shutdown()
        server.server_close()


def token(signer: crypt.RSASigner, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": INVOKER,
               "email_verified": True, "sub": "1234", "iat": now - 10, "exp": now + 3600,
               **claims}
    encoded: bytes = google_jwt.encode(signer, payload)
    return encoded.decode()


def verifier(keys: Keys) -> OidcVerifier:
    return OidcVerifier(AUDIENCE, INVOKER, certs_url=keys.certs_url)


def test_oidc_valid_token_runs(keys: Keys) -> None:
    r = rig(3, auth=verifier(keys))
    resp = r.client.post("/relay/run", headers={"Authorization": f"Bearer {token(keys.signer)}"})
    assert resp.status_code == 200 and resp.get_json()["runs"][0]["published"] == 3


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
def test_oidc_missing_token_is_401_and_nothing_runs(keys: Keys, header: str | None) -> None:
    r = rig(3, auth=verifier(keys))
    resp = r.client.post("/relay/run", headers={} if header is None else {"Authorization": header})
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "missing bearer token"}
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert nothing_ran(r)


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 3720}, "token expired"),
    ({"iat": int(time.time()) + 600, "exp": int(time.time()) + 4200}, "token not yet valid"),
    ({"aud": "https://someone-else.a.run.app"}, "wrong audience"),
    ({"iss": "https://evil.example.com"}, "wrong issuer"),
    ({"email": "intruder@proj.iam.gserviceaccount.com"}, "wrong email"),
    ({"email_verified": False}, "email not verified"),
    ({"email_verified": "yes"}, "email not verified"),
])
def test_oidc_bad_claims_are_403_naming_the_reason(keys: Keys, claims: dict[str, Any],
                                                   reason: str) -> None:
    r = rig(3, auth=verifier(keys))
    bearer = token(keys.signer, **claims)
    resp = r.client.post("/relay/run?deadline=5", headers={"Authorization": f"Bearer {bearer}"})
    assert resp.status_code == 403 and resp.get_json() == {"error": reason}
    assert bearer not in resp.get_data(as_text=True)
    assert nothing_ran(r)


@pytest.mark.parametrize("kind", ["other key", "garbage", "tampered"])
def test_oidc_bad_signature_or_format_is_403_and_never_echoes_the_token(
        keys: Keys, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(3, auth=verifier(keys))
    good = token(keys.signer)
    bearer = {"other key": token(keys.other), "garbage": "not.a-jwt",
              "tampered": good.rsplit(".", 1)[0] + ".AAAA" + good.rsplit(".", 1)[1][4:]}[kind]
    with caplog.at_level(logging.DEBUG):
        resp = r.client.post("/relay/run", headers={"Authorization": f"Bearer {bearer}"})
    assert resp.status_code == 403
    assert resp.get_json() == {"error": "invalid token (signature or format)"}
    assert bearer not in resp.get_data(as_text=True) and bearer not in caplog.text
    assert nothing_ran(r)


def test_oidc_certificates_are_cached(keys: Keys) -> None:
    auth = verifier(keys)
    before = len(keys.hits)
    for _ in range(3):
        auth.verify(f"Bearer {token(keys.signer)}")
    assert len(keys.hits) == before + 1


def test_oidc_unreachable_certificates_are_503_not_a_pass(keys: Keys) -> None:
    r = rig(3, auth=OidcVerifier(AUDIENCE, INVOKER, certs_url="http://127.0.0.1:9/certs"))
    resp = r.client.post("/relay/run", headers={"Authorization": f"Bearer {token(keys.signer)}"})
    assert resp.status_code == 503 and nothing_ran(r)


def test_oidc_is_off_unless_both_variables_are_set() -> None:
    assert OidcVerifier.from_env({}) is None
    auth = OidcVerifier.from_env({"OUTBOX_RELAY_AUDIENCE": AUDIENCE,
                                  "OUTBOX_RELAY_INVOKER": INVOKER})
    assert auth is not None and (auth.audience, auth.email) == (AUDIENCE, INVOKER)
    for half in ({"OUTBOX_RELAY_AUDIENCE": AUDIENCE}, {"OUTBOX_RELAY_INVOKER": INVOKER}):
        with pytest.raises(ConfigError, match="both"):
            OidcVerifier.from_env(half)


# -- app_from_env ----------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr("outbox.logs.configure", lambda *a, **k: None)
    for name in ("OUTBOX_RELAY_AUDIENCE", "OUTBOX_RELAY_INVOKER", "BIGQUERY_EMULATOR_HOST",
                 "OUTBOX_RELAY_DEADLINE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OUTBOX_PROJECT", "test-project")
    return monkeypatch


def test_app_from_env_boots_without_building_clients(env: pytest.MonkeyPatch) -> None:
    env.setattr("outbox.wiring.Wiring.build", lambda s: pytest.fail("built at boot"))
    client = app_from_env().test_client()
    assert client.get("/health").status_code == 200
    assert "outbox_runs_total" in client.get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize(("name", "value", "match"), [
    ("OUTBOX_RELAY_DEADLINE_SECONDS", "0", "OUTBOX_RELAY_DEADLINE_SECONDS"),
    ("OUTBOX_RELAY_AUDIENCE", AUDIENCE, "OUTBOX_RELAY_INVOKER"),
])
def test_app_from_env_refuses_a_bad_config_at_boot(env: pytest.MonkeyPatch, name: str,
                                                   value: str, match: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=match):
        app_from_env()


@pytest.mark.parametrize(("value", "ttl"), [("", None), ("8", 8.0), (" 90.5 ", 90.5)])
def test_the_lease_ttl_comes_from_the_environment(value: str, ttl: float | None) -> None:
    config = relay_config_from_env({"OUTBOX_RELAY_LEASE_TTL_SECONDS": value})
    assert (config.lease_ttl.total_seconds() if config.lease_ttl else None) == ttl


@pytest.mark.parametrize(("value", "size"), [("", 1000), ("10", 10), ("10000", 10000)])
def test_the_batch_size_comes_from_the_environment(value: str, size: int) -> None:
    assert relay_config_from_env({"OUTBOX_RELAY_BATCH_SIZE": value}).batch_size == size


@pytest.mark.parametrize(("name", "value"), [
    *[("OUTBOX_RELAY_LEASE_TTL_SECONDS", v) for v in ("0", "0.5", "soon", "nan", "inf", "3601")],
    *[("OUTBOX_RELAY_BATCH_SIZE", v) for v in ("0", "2.5", "many", "10001", "-1")],
])
def test_a_bad_relay_tunable_fails_the_boot(env: pytest.MonkeyPatch, name: str,
                                            value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} must be .*got '{value}'"):
        app_from_env()


# -- on the emulators ---------------------------------------------------------------------------


@pytest.mark.emulator
def test_trigger_publishes_rows_from_bigquery_to_pubsub(bq_emulator: Any,
                                                        pubsub_emulator: Any) -> None:
    from google.cloud import pubsub_v1

    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.bigquery_tables import ensure_tables
    from outbox.pubsub_admin import ensure_topics
    from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS
    from outbox.wiring import Settings, Wiring

    settings = Settings(project=bq_emulator.project,
                        bigquery_emulator=bq_emulator.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq_emulator.grpc_endpoint,
                        pubsub_emulator=pubsub_emulator.host)
    wiring = Wiring.build(settings)
    dataset = f"relay_service_{uuid.uuid4().hex[:10]}"
    log_spec = SCRAPER_COMPLETE.table.with_location(dataset)
    journal_spec = OUTBOX_JOURNAL.with_location(dataset)
    runs_spec = OUTBOX_RUNS.with_location(dataset)
    ensure_tables(wiring.bigquery, settings.project, [log_spec, journal_spec, runs_spec])
    route = replace(SCRAPER_COMPLETE, table=log_spec)
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log_spec, route.name,
                                journal_spec, runs_spec, columns=route.columns,
                                reader=wiring.reader)
    ensure_topics(settings.project, [route.topic])
    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.subscription_path(settings.project, f"relay-service-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        name=sub, topic=subscriber.topic_path(settings.project, route.topic))
    rows = scraper_rows(7, seed=random.randrange(1 << 30))
    store.append(rows)
    publisher = wiring.publisher()
    metrics = RelayMetrics()
    relay = Relay(route, store, publisher, RelayConfig(batch_size=3))
    client = create_app({"scrapers": relay}.__getitem__, metrics,
                        routes=["scrapers"]).test_client()
    try:
        resp = client.post("/relay/run", json={"deadline": 30})
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["runs"][0]["published"] == 7
        wanted, got = {r["execution_id"] for r in rows}, set[str]()
        deadline = time.monotonic() + 30
        while got != wanted and time.monotonic() < deadline:
            pulled = subscriber.pull(request={"subscription": sub, "max_messages": 100})
            got |= {m.message.attributes["execution_id"] for m in pulled.received_messages}
            if pulled.received_messages:
                subscriber.acknowledge(subscription=sub,
                                       ack_ids=[m.ack_id for m in pulled.received_messages])
        assert got == wanted
        assert client.post("/relay/run").get_json()["runs"][0]["published"] == 0
        text = metrics_text(client)
        assert 'outbox_published_total{route="scrapers"} 7.0' in text
        assert 'outbox_bigquery_jobs_total{route="scrapers"} 0.0' not in text
        assert 'outbox_read_sessions_total{route="scrapers"} 0.0' not in text
    finally:
        publisher.close()
        subscriber.delete_subscription(subscription=sub)
        subscriber.close()
