#!/usr/bin/env python3
"""Print the commands that deploy the relay on Cloud Run, as a bash script.

Why print rather than run: deploying touches IAM; a reviewer should read the
exact commands first. Save, read, then run:

    .venv/bin/python deploy/print-relay-commands.py --project my-project \
        --region us-central1 --image us-central1-docker.pkg.dev/my-project/nba/outbox:abc123 \
        --service-account nba-outbox-relay@my-project.iam.gserviceaccount.com \
        --scheduler-sa nba-outbox-scheduler@my-project.iam.gserviceaccount.com > relay.sh
    bash relay.sh

The commands come from ``outbox.infra_commands.relay_deploy_commands``; see
docs/deploy.md for what each one is for.
"""

from __future__ import annotations

import argparse
import sys

from outbox.errors import ConfigError
from outbox.infra_commands import relay_deploy_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True, help="Google Cloud project id")
    parser.add_argument("--region", required=True, help="e.g. us-central1")
    parser.add_argument("--image", required=True, help="the pushed image, ideally by tag or digest")
    parser.add_argument("--service-account", required=True, help="the relay's runtime identity")
    parser.add_argument("--scheduler-sa", required=True,
                        help="the identity Cloud Scheduler signs its OIDC token as")
    parser.add_argument("--schedule", default="* * * * *", help="cron, 5 fields (UTC)")
    parser.add_argument("--deadline", type=int, default=50, help="relay deadline, seconds")
    parser.add_argument("--project-number", default=None,
                        help="skip looking it up (the service URL contains it)")
    args = parser.parse_args(argv)
    try:
        commands = relay_deploy_commands(
            args.project, args.region, args.image, args.service_account, args.scheduler_sa,
            schedule=args.schedule, deadline_s=args.deadline, project_number=args.project_number)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("#!/usr/bin/env bash")
    print("set -euo pipefail")
    for command in commands:
        print(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
