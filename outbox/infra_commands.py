"""The exact ``gcloud``/``bq`` commands that deploy the relay on Cloud Run.

Why a pure function that returns strings instead of calling the Cloud APIs:
the deployment cannot be exercised here (no cloud project, no Docker engine),
so the next best thing is commands a human can read, review, paste, and that a
test pins flag by flag. ``deploy/print-relay-commands.py`` prints them.

The numbers nest, from the inside out, so no layer cuts off the one inside it:

- the relay's own deadline (``OUTBOX_RELAY_DEADLINE_SECONDS``, default 50 s):
  it stops taking new batches and returns;
- Cloud Run's request timeout (120 s, or deadline + 70 s if larger): room for
  the last batch, the journal append and the fold after the deadline;
- Cloud Scheduler's attempt deadline (180 s, its default, or timeout + 60 s,
  at most 1800 s, Scheduler's maximum): beyond it the attempt counts as
  finished while the request may still run, so the next tick could overlap;
  the relay's lease turns such an overlap into a skipped run.

``--concurrency=1`` gives each run an instance to itself and
``--max-instances=1`` keeps a second instance (and so an overlap) rare; the
lease covers what remains, such as a revision rollout.
"""

from __future__ import annotations

import re
import shlex

from outbox.errors import ConfigError
from outbox.routes import SCRAPER_COMPLETE
from outbox.schema import check_project

SERVICE_NAME = "nba-outbox-relay"
JOB_NAME = "nba-outbox-relay-every-minute"
DATASET = SCRAPER_COMPLETE.table.dataset
TOPIC = SCRAPER_COMPLETE.topic
MIN_REQUEST_TIMEOUT_S = 120
MIN_ATTEMPT_DEADLINE_S = 180
MAX_ATTEMPT_DEADLINE_S = 1800
PROJECT_NUMBER_VAR = "${PROJECT_NUMBER}"
APIS = ("run.googleapis.com", "cloudscheduler.googleapis.com", "bigquery.googleapis.com",
        "bigquerystorage.googleapis.com", "pubsub.googleapis.com")
RELAY_PROJECT_ROLES = ("roles/bigquery.jobUser", "roles/bigquery.readSessionUser")
"""Project-level only: jobs and read sessions are billed to, and created in, the project."""

REGION_RE = re.compile(r"^[a-z][a-z0-9-]*[0-9]$")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def request_timeout_s(deadline_s: int) -> int:
    return max(MIN_REQUEST_TIMEOUT_S, deadline_s + 70)


def attempt_deadline_s(deadline_s: int) -> int:
    return min(MAX_ATTEMPT_DEADLINE_S, max(MIN_ATTEMPT_DEADLINE_S,
                                           request_timeout_s(deadline_s) + 60))


def relay_service_url(region: str, project_number: str | None = None) -> str:
    """Cloud Run's deterministic URL, ``https://SERVICE-PROJECT_NUMBER.REGION.run.app``.

    Known before the first deploy, so the audience the service checks and the
    one the scheduler signs for are set in one pass. Without a project number
    it contains ``${PROJECT_NUMBER}``, which the first command sets in the shell.
    """
    number = project_number if project_number is not None else PROJECT_NUMBER_VAR
    return f"https://{SERVICE_NAME}-{number}.{region}.run.app"


def _validate(project: str, region: str, image: str, service_account: str,
              scheduler_sa: str, schedule: str, deadline_s: int,
              project_number: str | None) -> None:
    check_project(project)
    if not region.strip():
        raise ConfigError("region must not be empty (e.g. us-central1)")
    if not REGION_RE.match(region):
        raise ConfigError(f"region {region!r} is not a Google Cloud region such as us-central1")
    if not _IMAGE.match(image):
        raise ConfigError(f"image {image!r} is not an image reference such as "
                          f"us-central1-docker.pkg.dev/{project}/nba/outbox:TAG")
    for what, email in (("service_account", service_account), ("scheduler_sa", scheduler_sa)):
        if not EMAIL_RE.match(email):
            raise ConfigError(f"{what} {email!r} is not a service account email")
    fields = schedule.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ConfigError(f"schedule {schedule!r} must be a cron expression of 5 fields, "
                          "e.g. '* * * * *'")
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, int) \
            or not 1 <= deadline_s <= 3000:
        raise ConfigError(f"deadline_s must be a whole number of seconds in 1..3000, "
                          f"got {deadline_s!r}")
    if project_number is not None and not project_number.isdigit():
        raise ConfigError(f"project_number {project_number!r} must be digits only")


def relay_deploy_commands(
    project: str,
    region: str,
    image: str,
    service_account: str,
    scheduler_sa: str,
    schedule: str = "* * * * *",
    deadline_s: int = 50,
    project_number: str | None = None,
) -> list[str]:
    """Shell lines, in order, that deploy the relay and its every-minute trigger.

    Run them in one shell: without ``project_number`` the second line sets
    ``PROJECT_NUMBER``, which the service URL uses. Every command names the
    project and region, so none depends on the caller's gcloud configuration.
    Prerequisites (not here): both service accounts exist, the image is
    pushed, and ``outbox init`` created the dataset, tables and topic.
    Raises ConfigError for an input that would give a broken deployment.
    """
    _validate(project, region, image, service_account, scheduler_sa, schedule, deadline_s,
              project_number)
    q = shlex.quote
    url = relay_service_url(region, project_number)
    relay_member = f"serviceAccount:{service_account}"
    env = ",".join([
        f"OUTBOX_PROJECT={project}",
        "SERVICE=relay",
        f"OUTBOX_RELAY_DEADLINE_SECONDS={deadline_s}",
        f"OUTBOX_RELAY_AUDIENCE={url}",
        f"OUTBOX_RELAY_INVOKER={scheduler_sa}",
    ])
    commands = [f"gcloud services enable {' '.join(APIS)} --project={q(project)}"]
    if project_number is None:
        commands.append(f"PROJECT_NUMBER=\"$(gcloud projects describe {q(project)} "
                        f"--format='value(projectNumber)')\"")
    commands.append(
        f"bq add-iam-policy-binding --dataset --member={q(relay_member)} "
        f"--role=roles/bigquery.dataEditor {q(f'{project}:{DATASET}')}")
    commands += [
        f"gcloud projects add-iam-policy-binding {q(project)} --member={q(relay_member)} "
        f"--role={role} --condition=None"
        for role in RELAY_PROJECT_ROLES
    ]
    commands += [
        f"gcloud pubsub topics add-iam-policy-binding {q(TOPIC)} --project={q(project)} "
        f"--member={q(relay_member)} --role=roles/pubsub.publisher",
        f"gcloud run deploy {SERVICE_NAME} --project={q(project)} --region={q(region)} "
        f"--image={q(image)} --service-account={q(service_account)} "
        f"--no-allow-unauthenticated --concurrency=1 --max-instances=1 "
        f"--timeout={request_timeout_s(deadline_s)} --set-env-vars=\"{env}\"",
        f"gcloud run services add-iam-policy-binding {SERVICE_NAME} --project={q(project)} "
        f"--region={q(region)} --member={q(f'serviceAccount:{scheduler_sa}')} "
        f"--role=roles/run.invoker",
        f"gcloud scheduler jobs create http {JOB_NAME} --project={q(project)} "
        f"--location={q(region)} --schedule={q(schedule)} --time-zone=Etc/UTC "
        f"--uri=\"{url}/relay/run\" --http-method=POST "
        f"--oidc-service-account-email={q(scheduler_sa)} --oidc-token-audience=\"{url}\" "
        f"--attempt-deadline={attempt_deadline_s(deadline_s)}s",
    ]
    return commands
