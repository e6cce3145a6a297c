"""contrib/systemd: the units run the due rotations daily, with commands the CLI accepts."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from kms_cli.cli.parse import parse

UNITS = Path(__file__).resolve().parents[2] / "contrib" / "systemd"


def _unit(name: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((UNITS / name).read_text())
    return cp


def test_the_service_runs_both_due_rotations_non_interactively():
    text = (UNITS / "kms-cli-rotate.service").read_text()
    runs = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]
    commands = []
    for run in runs:
        argv = shlex.split(run)
        assert argv[:2] == ["/usr/bin/env", "kms-cli"]
        parsed = parse(argv[2:])  # a command the CLI accepts, as written
        commands.append((tuple(parsed.cmd.path), parsed.params.get("due")))
    assert commands == [(("key", "rotate"), True), (("secret", "rotate"), True)]
    svc = _unit("kms-cli-rotate.service")
    assert svc.get("Service", "Type") == "oneshot" and svc.get("Service", "UMask") == "0077"


def test_the_timer_is_daily_and_catches_up():
    timer = _unit("kms-cli-rotate.timer")
    assert timer.get("Timer", "OnCalendar") == "daily" and timer.get("Timer", "Persistent") in ("true", "yes")
    assert timer.get("Install", "WantedBy") == "timers.target"


def test_the_serve_unit_runs_a_command_the_cli_accepts():
    """kms-cli-serve.service: serve with TLS files, reload by SIGHUP, stop by SIGTERM, no core dumps."""
    svc = _unit("kms-cli-serve.service")
    argv = shlex.split(svc.get("Service", "ExecStart"))
    assert argv[:2] == ["/usr/bin/env", "kms-cli"]
    parsed = parse(argv[2:])
    assert tuple(parsed.cmd.path) == ("serve",)
    assert parsed.params["tls_cert"].endswith("server.crt") and parsed.params["tls_key"].endswith("server.key")
    assert svc.get("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert svc.get("Service", "KillSignal") == "SIGTERM" and svc.get("Service", "LimitCORE") == "0"
    assert svc.get("Service", "UMask") == "0077"
