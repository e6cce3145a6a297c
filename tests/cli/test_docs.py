"""Shell completions and the man page: committed copies are current, and they work."""

import os
import shutil
import subprocess
import sys

import pytest

from kmshelp import ROOT
from kms_cli.cli import docs


@pytest.mark.parametrize("shell,name", sorted(docs.SHELLS.items()))
def test_completions_are_current(shell, name):
    committed = (ROOT / "completions" / name).read_text()
    assert committed == docs.completion_script(shell), "run scripts/gen-docs"


def test_manpage_is_current():
    assert (ROOT / "man" / "kms-cli.1").read_text() == docs.manpage(), "run scripts/gen-docs"


def test_manpage_documents_every_command():
    page = docs.manpage()
    from kms_cli.cli import spec

    for c in spec.COMMANDS:
        assert ".SS " + " ".join(c.path).replace("-", "\\-") in page


@pytest.mark.skipif(not shutil.which("man"), reason="man is not installed")
def test_man_renders():
    p = subprocess.run(["man", str(ROOT / "man" / "kms-cli.1")], capture_output=True, text=True,
                       env={**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"})
    assert p.returncode == 0, p.stderr
    assert "secret put" in p.stdout and "EXIT STATUS" in p.stdout


def test_bash_completion_answers(kms):
    env = dict(kms.env, _KMS_CLI_COMPLETE="complete_bash", COMP_WORDS="kms-cli secret ", COMP_CWORD="2")
    p = subprocess.run([sys.executable, "-m", "kms_cli"], env=env, capture_output=True, text=True)
    assert {"put", "get", "list"} <= set(p.stdout.split())


def test_install_completion(kms):
    r = kms("--install-completion", "bash", env={"SHELL": "/bin/bash"})
    assert r.code == 0, r.err
    assert "_KMS_CLI_COMPLETE" in (kms.tmp / "home" / ".bash_completions" / "kms-cli.sh").read_text()
