"""Who is acting: user, host, pid and the CI system named by its standard environment variables."""

from __future__ import annotations

import os

# The calling process's pid when an agent process runs a command for it (its peer credentials).
PID: int | None = None

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
    env = os.environ if environ is None else environ
    user = env.get("LOGNAME") or env.get("USER") or env.get("LNAME") or env.get("USERNAME")  # as getpass does
    if not user:
        try:
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
        except (ImportError, KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    host = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "unknown")
    return {"user": user, "host": host, "pid": PID or os.getpid(), "ci": ci_system(environ)}
