"""Deploy artifacts: the gcloud commands, the Dockerfile, the entrypoint.

None of them can run here (no Docker engine, no cloud project), so these
tests pin what can be checked offline: every flag, the nesting of deadlines,
shell syntax, and the Dockerfile's base, user and copied paths.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from outbox.errors import ConfigError
from outbox.infra_commands import relay_deploy_commands

ROOT = Path(__file__).resolve().parents[1]
PROJECT, REGION = "nba-props-prod", "us-central1"
IMAGE = "us-central1-docker.pkg.dev/nba-props-prod/nba/outbox:abc123"
RELAY_SA = "nba-outbox-relay@nba-props-prod.iam.gserviceaccount.com"
SCHED_SA = "nba-outbox-scheduler@nba-props-prod.iam.gserviceaccount.com"
URL_VAR = "https://nba-outbox-relay-${PROJECT_NUMBER}.us-central1.run.app"


def commands(**kw: object) -> list[str]:
    return relay_deploy_commands(PROJECT, REGION, IMAGE, RELAY_SA, SCHED_SA, **kw)  # type: ignore[arg-type]


def one(cmds: list[str], prefix: str) -> list[str]:
    found = [shlex.split(c) for c in cmds if c.startswith(prefix)]
    assert len(found) == 1, f"expected one {prefix!r} command in {cmds}"
    return found[0]


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)


def test_cloud_run_deploy_flags() -> None:
    argv = one(commands(), "gcloud run deploy")
    assert argv[:4] == ["gcloud", "run", "deploy", "nba-outbox-relay"]
    f = flags(argv)
    assert (f["image"], f["region"], f["service-account"], f["project"]) == (
        IMAGE, REGION, RELAY_SA, PROJECT)
    assert "--no-allow-unauthenticated" in argv
    assert (f["concurrency"], f["max-instances"], f["timeout"]) == ("1", "1", "120")
    env = dict(kv.split("=", 1) for kv in f["set-env-vars"].split(","))
    assert env == {"OUTBOX_PROJECT": PROJECT, "SERVICE": "relay",
                   "OUTBOX_RELAY_DEADLINE_SECONDS": "50", "OUTBOX_RELAY_AUDIENCE": URL_VAR,
                   "OUTBOX_RELAY_INVOKER": SCHED_SA}


def test_scheduler_job_signs_for_the_audience_the_service_checks() -> None:
    cmds = commands()
    argv = one(cmds, "gcloud scheduler jobs create http")
    assert argv[5] == "nba-outbox-relay-every-minute"
    f = flags(argv)
    assert f["schedule"] == "* * * * *"
    assert f["uri"] == URL_VAR + "/relay/run"
    assert f["http-method"] == "POST"
    assert f["oidc-service-account-email"] == SCHED_SA
    assert f["attempt-deadline"] == "180s"
    assert f["location"] == REGION
    env = flags(one(cmds, "gcloud run deploy"))["set-env-vars"]
    assert f"OUTBOX_RELAY_AUDIENCE={f['oidc-token-audience']}," in env


def test_iam_bindings() -> None:
    cmds = commands()
    invoker = flags(one(cmds, "gcloud run services add-iam-policy-binding"))
    assert (invoker["member"], invoker["role"]) == (f"serviceAccount:{SCHED_SA}",
                                                    "roles/run.invoker")
    bq = one(cmds, "bq add-iam-policy-binding")
    assert "--dataset" in bq and bq[-1] == f"{PROJECT}:nba_orchestration"
    assert flags(bq) == {"member": f"serviceAccount:{RELAY_SA}",
                         "role": "roles/bigquery.dataEditor"}
    project_roles = {flags(shlex.split(c))["role"] for c in cmds
                     if c.startswith("gcloud projects add-iam-policy-binding")}
    assert project_roles == {"roles/bigquery.jobUser", "roles/bigquery.readSessionUser"}
    topic = one(cmds, "gcloud pubsub topics add-iam-policy-binding")
    assert topic[4] == "nba-scraper-complete"
    assert flags(topic)["role"] == "roles/pubsub.publisher"
    assert flags(topic)["member"] == f"serviceAccount:{RELAY_SA}"


def test_order_grants_before_deploy_and_deploy_before_trigger() -> None:
    cmds = commands()
    at = {p: next(i for i, c in enumerate(cmds) if c.startswith(p)) for p in (
        "PROJECT_NUMBER=", "bq add-iam", "gcloud pubsub topics", "gcloud run deploy",
        "gcloud run services add-iam", "gcloud scheduler")}
    assert list(at.values()) == sorted(at.values())


def test_known_project_number_gives_a_literal_url() -> None:
    cmds = commands(project_number="123456789012")
    assert not any(c.startswith("PROJECT_NUMBER=") for c in cmds)
    assert "$" not in "".join(cmds)
    f = flags(one(cmds, "gcloud scheduler"))
    assert f["oidc-token-audience"] == "https://nba-outbox-relay-123456789012.us-central1.run.app"


def test_longer_deadlines_stretch_the_outer_timeouts() -> None:
    f = flags(one(commands(deadline_s=300), "gcloud run deploy"))
    assert f["timeout"] == "370" and "OUTBOX_RELAY_DEADLINE_SECONDS=300" in f["set-env-vars"]
    assert flags(one(commands(deadline_s=300), "gcloud scheduler"))["attempt-deadline"] == "430s"
    assert flags(one(commands(deadline_s=3000), "gcloud scheduler"))["attempt-deadline"] == "1800s"


def test_custom_schedule_is_quoted() -> None:
    cmd = next(c for c in commands(schedule="*/5 * * * *") if c.startswith("gcloud scheduler"))
    assert "--schedule='*/5 * * * *'" in cmd


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_commands_are_valid_shell() -> None:
    script = "\n".join(commands()) + "\n"
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("kw", "message"), [
    ({"project": "Bad_Project"}, "project id"),
    ({"region": ""}, "region must not be empty"),
    ({"region": "us central1"}, "region"),
    ({"image": ""}, "image"),
    ({"image": "img; rm -rf /"}, "image"),
    ({"service_account": "not-an-email"}, "service_account"),
    ({"scheduler_sa": "x@y"}, "scheduler_sa"),
    ({"schedule": "* * * *"}, "5 fields"),
    ({"schedule": "* * * * * *"}, "5 fields"),
    ({"schedule": "* * * * $(id)"}, "5 fields"),
    ({"deadline_s": 0}, "1..3000"),
    ({"deadline_s": 3001}, "1..3000"),
    ({"deadline_s": True}, "1..3000"),
    ({"project_number": "12ab"}, "digits"),
])
def test_bad_inputs_raise_config_error(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"project": PROJECT, "region": REGION, "image": IMAGE,
                               "service_account": RELAY_SA, "scheduler_sa": SCHED_SA, **kw}
    with pytest.raises(ConfigError, match=message):
        relay_deploy_commands(**args)  # type: ignore[arg-type]


def test_print_script() -> None:
    script = ROOT / "deploy" / "print-relay-commands.py"
    base = [sys.executable, str(script), "--project", PROJECT, "--region", REGION, "--image",
            IMAGE, "--service-account", RELAY_SA, "--scheduler-sa", SCHED_SA]
    ok = subprocess.run(base, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[:2] == ["#!/usr/bin/env bash", "set -euo pipefail"]
    assert lines[2:] == commands()
    bad = subprocess.run([*base, "--deadline", "0"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "error: deadline_s" in bad.stderr and bad.stdout == ""


# -- Dockerfile and entrypoint ------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical = text.replace("\\\n", " ")
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_base_user_and_command() -> None:
    steps = dockerfile()
    assert [a for i, a in steps if i == "FROM"] == ["python:3.11-slim"]
    users = [a for i, a in steps if i == "USER"]
    assert users, "the image must switch to a non-root USER"
    name = users[-1].split(":")[0]
    assert name not in ("root", "0")
    assert steps[-1][0] == "CMD" and "nba-outbox-entrypoint" in steps[-1][1]
    assert any(i == "ENV" and "PORT=8080" in a for i, a in steps)
    installs = [a for i, a in steps if i == "RUN" and "pip install" in a]
    assert len(installs) == 1 and "pip install . " in installs[0] + " "
    assert "[" not in installs[0].split("pip install", 1)[1].split("&&")[0]  # no extras


def test_dockerfile_copies_only_existing_paths_and_no_secrets() -> None:
    for instruction, args in dockerfile():
        if instruction == "COPY":
            *sources, _dest = args.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} is missing"
        assert not any(s in args.upper() for s in ("SECRET", "PASSWORD", "CREDENTIALS",
                                                   "API_KEY", "TOKEN"))


def test_dockerignore_excludes_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", ".pytest_cache", ".hypothesis", ".mypy_cache"} <= ignored


def run_entrypoint(tmp_path: Path, service: str | None) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "gunicorn"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin", "PORT": "9090"}
    if service is not None:
        env["SERVICE"] = service
    return subprocess.run(["sh", str(ROOT / "deploy" / "entrypoint.sh")], env=env,
                          capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_entrypoint_runs_gunicorn_for_the_relay(tmp_path: Path) -> None:
    result = run_entrypoint(tmp_path, "relay")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "--bind", ":9090", "--workers", "1", "--threads", "4", "--timeout", "120",
        "relay.service:app_from_env()"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize(("service", "said"), [
    ("analytics", "unknown SERVICE 'analytics'"), (None, "SERVICE is not set")])
def test_entrypoint_refuses_other_services(tmp_path: Path, service: str | None,
                                           said: str) -> None:
    result = run_entrypoint(tmp_path, service)
    assert result.returncode == 64
    assert said in result.stderr and "known services: relay, scrapers, processors" in result.stderr
    assert result.stdout == ""
