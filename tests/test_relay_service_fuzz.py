"""Fuzzing ``POST /relay/run`` with hypothesis: arbitrary bodies, query strings and content
types, near-valid triggers with exactly one thing wrong, and other methods and paths.

Why: Cloud Scheduler is not the only caller an exposed trigger meets. Whatever arrives,
the answer must be a 4xx or a run (never a 5xx caused by the input, never an exception
escaping Flask), and a refused trigger must leave no trace: no relay run, no run record,
nothing published, although a row is always waiting to be published.

One app per test serves every example, on the in-memory doubles. More examples with
CI=true; the module then checks that at least 10,000 requests reached the endpoint.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.schema import PROCESSOR_EXECUTION_LOG, PUBLISHED
from outbox.testing import InMemoryOutboxStore, InMemoryPublisher
from relay import Relay, RelayConfig, RunSummary
from relay.metrics import RelayMetrics
from relay.service import MAX_DEADLINE, create_app

CI = os.environ.get("CI", "").strip().lower() == "true"
ENDPOINT = "/relay/run"
ROUTES = ("scrapers", "processors")


def fuzz(ci: int, local: int) -> settings:
    return settings(max_examples=ci if CI else local, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# -- the rig -----------------------------------------------------------------------------


@dataclass
class Counted:
    """The relay the app runs, counting its runs: a refused trigger must not reach it."""

    inner: Relay
    calls: list[str]

    def run_once(self, deadline: Any = None) -> RunSummary:
        self.calls.append(self.inner.route.name)
        return self.inner.run_once(deadline)


@dataclass(repr=False)  # hypothesis prints the fixtures of a failing example
class Rig:
    client: FlaskClient
    relays: dict[str, Relay]
    publisher: InMemoryPublisher
    calls: list[str] = field(default_factory=list)
    seeded: int = 0

    @property
    def scrapers(self) -> InMemoryOutboxStore:
        store = self.relays["scrapers"].store
        assert isinstance(store, InMemoryOutboxStore)
        return store

    def effects(self) -> tuple[int, int, int]:
        """(relay runs started, runs recorded, messages published)."""
        recorded = 0
        for relay in self.relays.values():
            assert isinstance(relay.store, InMemoryOutboxStore)
            recorded += len(relay.store.runs)
        return len(self.calls), recorded, len(self.publisher.sent)

    def keep_one_pending(self) -> None:
        """A row always waits, so "nothing published" means something; the store is
        renewed now and then so that polls stay cheap over thousands of runs."""
        if len(self.scrapers.rows) >= 50:
            self.relays["scrapers"].store = InMemoryOutboxStore(columns=SCRAPER_COMPLETE.columns)
        if all(row.get(PUBLISHED) for row in self.scrapers.rows):
            (row,) = scraper_rows(1, seed=self.seeded)
            row["execution_id"] = f"fuzz{self.seeded:08d}"
            self.scrapers.append([row])
            self.seeded += 1


@pytest.fixture
def rig() -> Rig:
    publisher = InMemoryPublisher()
    relays = {
        "scrapers": Relay(SCRAPER_COMPLETE, InMemoryOutboxStore(columns=SCRAPER_COMPLETE.columns),
                          publisher, RelayConfig(batch_size=4), sleep=lambda s: None),
        "processors": Relay(PHASE2_COMPLETE, InMemoryOutboxStore(
            PROCESSOR_EXECUTION_LOG, "processors", columns=PHASE2_COMPLETE.columns),
            publisher, RelayConfig(batch_size=4), sleep=lambda s: None),
    }
    calls: list[str] = []
    counted = {name: Counted(relay, calls) for name, relay in relays.items()}
    app = create_app(counted.__getitem__, RelayMetrics(), routes=list(ROUTES))
    app.config["PROPAGATE_EXCEPTIONS"] = True  # an exception fails the test, not a quiet 500
    return Rig(app.test_client(), relays, publisher, calls)


pytestmark = pytest.mark.usefixtures("enough_requests")  # tests/conftest.py
REQUESTS: Counter[str] = Counter()
"""Requests sent to ``POST /relay/run``, by test."""
COUNTED_TESTS = {"test_arbitrary_bodies_queries_and_content_types", "test_near_valid_triggers"}



def send(rig: Rig, test: str, method: str = "POST", path: str = ENDPOINT, *,
         query: str = "", body: bytes = b"", content_type: str | None = None) -> Any:
    """One request; checks what any request must satisfy, and returns the response."""
    rig.keep_one_pending()
    before = rig.effects()
    # A stream, not data=: the test client would replace an empty multipart body with a form.
    resp = rig.client.open(path, method=method, query_string=query,
                           input_stream=io.BytesIO(body), content_length=len(body),
                           content_type=content_type)
    after = rig.effects()
    triggered = method == "POST" and path == ENDPOINT
    if triggered:
        REQUESTS[test] += 1
    if currently_in_test_context():
        event(f"{method} {resp.status_code}")
    assert resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:500])
    if triggered and resp.status_code == 200:
        runs = resp.get_json()["runs"]
        started, recorded, _ = (a - b for a, b in zip(after, before, strict=True))
        assert started == recorded == len(runs), (before, after, runs)
        assert {run["route"] for run in runs} <= set(ROUTES)
    else:
        assert after == before, f"a refused request ({resp.status_code}) left a trace"
    if triggered:
        assert resp.is_json and isinstance(resp.get_json(), dict)
    return resp


# -- strategies --------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
NUMBERISH = ["0", "-0", "-1", "0.0001", "0.49", "0.5", "1", "50", "3600", "3600.0000001",
             "3601", "1e3", "1e400", "-1e400", "nan", "NaN", "inf", "-Infinity", "0x10",
             "1_0", " 5 ", "5s", "", " ", "\u0665", "\x00", "1,5", "\uff11"]
param_keys = (st.sampled_from(["deadline", "route", "Deadline", "ROUTE", "dedline", "scraper",
                               "deadline[]", ""]) | st.text(max_size=8))
param_values = st.sampled_from(NUMBERISH + list(ROUTES) + ["Scrapers", "scrapers "]) | st.text(
    max_size=12)
queries = (st.lists(st.tuples(param_keys, param_values), max_size=4).map(urlencode)
           | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20))
CONTENT_TYPES = [None, "application/json", "application/octet-stream", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16", "application/json; charset=bogus",
                 "*/*", "", "text/html"]
content_types = st.sampled_from(CONTENT_TYPES) | st.text(
    st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
SPECIAL_BODIES = [b'{"deadline": 1' + b"0" * 400 + b"}", b'{"deadline": NaN}',
                  b'{"deadline": -Infinity}', b'{"deadline": 1e400}', b'{"route": "\\ud800"}',
                  b'{"deadline": 5, "deadline": "x"}', b"\xef\xbb\xbf{}", b"{}", b"null",
                  b'"scrapers"', b"\x00", b"deadline=5&route=scrapers"]


def _encoded(value: Any, encoding: str) -> bytes:
    return json.dumps(value).encode(encoding)


def _nested(key: str, depth: int) -> bytes:
    """``{key: [[[...]]]}``, well-formed, as deep as the JSON parser allows and deeper."""
    return b'{"%s": %s%s}' % (key.encode(), b"[" * depth, b"]" * depth)


bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=80),
    st.sampled_from(SPECIAL_BODIES),
    st.integers(900, 60_000).flatmap(lambda n: st.sampled_from([b"[" * n, b'{"a":' * n])),
    st.builds(_nested, st.sampled_from(["deadline", "route", "x"]), st.integers(1, 1100)),
    st.builds(_encoded, json_values, st.sampled_from(["utf-8", "utf-16", "utf-32"])),
    st.dictionaries(param_keys, json_values | param_values, max_size=3).map(
        lambda d: json.dumps(d).encode()),
)


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[str, bytes, str | None, str | None]:
    """A valid trigger with at most one thing wrong: (query, body, content type, wrong).

    ``wrong`` names what the 400 must mention (None: the trigger is valid). Each
    parameter goes to the query string or the JSON body, as callers send either.
    """
    params: dict[str, Any] = {}
    if draw(st.booleans()):
        params["deadline"] = draw(st.floats(1, MAX_DEADLINE) | st.integers(1, int(MAX_DEADLINE)))
    if draw(st.booleans()):
        params["route"] = draw(st.sampled_from(ROUTES))
    wrong = draw(st.sampled_from([None, "deadline", "route", "unknown parameter"]))
    if wrong == "deadline":
        params["deadline"] = draw(bad_deadlines)
    elif wrong == "route":
        params["route"] = draw(st.text(max_size=12).map(_unknown)
                               | st.integers() | st.lists(st.text(max_size=3), max_size=2)
                               | st.booleans() | st.sampled_from(["Scrapers", " scrapers"]))
    elif wrong == "unknown parameter":
        params[draw(param_keys.map(_unknown))] = draw(json_values)
    in_query = {k: draw(st.booleans()) and _query_safe(v) for k, v in params.items()}
    query = urlencode({k: str(v) for k, v in params.items() if in_query[k]})
    body_params = {k: v for k, v in params.items() if not in_query[k]}
    send_body = bool(body_params) or draw(st.booleans())  # "{}" or nothing at all
    body = json.dumps(body_params).encode() if send_body else b""
    return query, body, draw(content_types), wrong


def _query_safe(value: Any) -> bool:
    """Only strings, and numbers whose ``str`` means the same, can go in a query string."""
    return isinstance(value, str) or (isinstance(value, int | float)
                                      and not isinstance(value, bool))


def _unknown(name: str) -> str:
    """``name``, changed if it is a route or a parameter. (Named functions rather than
    lambdas in strategies: hypothesis parses a lambda's source to describe it.)"""
    return name + "?" if name in (*ROUTES, "deadline", "route") else name


def _invalid_deadline(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return True
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return True
    return not (math.isfinite(seconds) and 0 < seconds <= MAX_DEADLINE)


bad_deadlines = st.one_of(
    st.floats(),
    st.integers(max_value=0), st.integers(min_value=int(MAX_DEADLINE) + 1),
    st.just(10**400), st.sampled_from(NUMBERISH), st.text(max_size=10), st.booleans(),
    st.none(), st.lists(st.integers(1, 5), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                       st.integers(), max_size=1),
).filter(_invalid_deadline)


# -- the tests ---------------------------------------------------------------------------


@fuzz(ci=2400, local=80)
@given(requests=st.lists(st.tuples(queries, bodies, content_types), min_size=1, max_size=5))
def test_arbitrary_bodies_queries_and_content_types(
        rig: Rig, requests: list[tuple[str, bytes, str | None]]) -> None:
    for query, body, content_type in requests:
        resp = send(rig, "test_arbitrary_bodies_queries_and_content_types", query=query,
                    body=body, content_type=content_type)
        assert resp.status_code in (200, 400), resp.get_json()


@fuzz(ci=2100, local=80)
@given(triggers=st.lists(near_valid(), min_size=1, max_size=5))
def test_near_valid_triggers(rig: Rig,
                             triggers: list[tuple[str, bytes, str | None, str | None]]) -> None:
    for query, body, content_type, wrong in triggers:
        resp = send(rig, "test_near_valid_triggers", query=query, body=body,
                    content_type=content_type)
        if wrong is None:
            assert resp.status_code == 200, resp.get_json()
            assert resp.get_json()["runs"], "a valid trigger ran no route"
        else:
            assert resp.status_code == 400, resp.get_json()
            assert wrong in resp.get_json()["error"]


METHODS = ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PURGE"]
ODD_PATHS = ["/relay/run/", "/relay", "/relay/", "/relay/runs", "/relay/run/scrapers",
             "//relay/run", "/Relay/Run", "/relay/run%00", "/relay/run%2F", "/relay/./run",
             "/relay/run;x", "/relay/run.json", "/health", "/metrics", "/"]
paths = st.sampled_from([ENDPOINT, *ODD_PATHS]) | st.text(max_size=12).map(
    lambda s: "/relay/" + quote(s, safe="/%;"))


@fuzz(ci=400, local=40)
@given(requests=st.lists(st.tuples(st.sampled_from(["POST", *METHODS]), paths, queries, bodies,
                                   content_types), min_size=1, max_size=5))
def test_other_methods_and_paths(
        rig: Rig, requests: list[tuple[str, str, str, bytes, str | None]]) -> None:
    """Only ``POST /relay/run`` may run the relay (``send`` checks that nothing else left
    a trace); other methods are 405, other paths 404 (308 where Werkzeug merges slashes)."""
    for method, path, query, body, content_type in requests:
        resp = send(rig, "test_other_methods_and_paths", method, path, query=query, body=body,
                    content_type=content_type)
        assert resp.status_code in expected_statuses(method, path), resp.get_data()[:200]


def expected_statuses(method: str, path: str) -> set[int]:
    if path == ENDPOINT:
        return {200, 400} if method == "POST" else {200} if method == "OPTIONS" else {405}
    if path in ("/health", "/metrics"):
        return {200} if method in ("GET", "HEAD", "OPTIONS") else {405}
    return {404, 308}


def test_regression_bad_bodies_and_huge_deadlines_are_400_not_500(rig: Rig) -> None:
    """Found by the fuzzer: an integer deadline beyond any float (OverflowError) and a
    body nested deeper than the JSON parser's stack (RecursionError) escaped as 500s."""
    for body in (b'{"deadline": 1' + b"0" * 400 + b"}", b"[" * 100_000, b'{"a":' * 5000):
        resp = send(rig, "regression", body=body, content_type="application/json")
        assert resp.status_code == 400, resp.get_json()
    resp = send(rig, "regression", body=b'{"deadline": 1' + b"0" * 400 + b"}")
    assert "deadline" in resp.get_json()["error"]
