"""Who is acting: user, host, pid and the CI system named by its standard environment variables."""

from __future__ import annotations

import getpass
import os
import socket

# (variable that must be set, name reported); checked in order.
_CI_SYSTEMS = (
    ("GITHUB_ACTIONS", "github-actions"),
    ("GITLAB_CI", "gitlab-ci"),
    ("JENKINS_URL", "jenkins"),
    ("CIRCLECI", "circleci"),
    ("BUILDKITE", "buildkite"),
)


def ci_system(environ=None) -> str | None:
    env = os.environ if environ is None else environ
    for var, name in _CI_SYSTEMS:
        if env.get(var):
            return name
    return None


def current(environ=None) -> dict:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid(), "ci": ci_system(environ)}
