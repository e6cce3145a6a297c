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


def test_manpage_is_dated_and_option_names_do_not_hyphenate():
    from kms_cli import __version__

    page = docs.manpage()
    th = page.splitlines()[0]
    assert th == f'.TH KMS\\-CLI 1 "{docs.RELEASE_DATES[__version__]}" "kms\\-cli {__version__}" "User Commands"'
    assert "\\fB\\%\\-\\-expiring\\-within\\fR" in page and "\\fB\\%\\-\\-rotate\\-every\\fR" in page
    assert "\\fB\\-\\-" not in page.replace("\\fB\\-\\-version\\fR", "").replace("\\fB\\-\\-help\\fR", "")


def test_manpage_has_every_example_and_the_algorithms():
    from kms_cli import algorithms
    from kms_cli.cli import spec

    page = docs.manpage()
    for c in spec.COMMANDS:
        for _, line in c.examples:
            assert docs._roff(line, words=False) in page
    for name in algorithms.ALGORITHMS:
        assert "\\%" + name.replace("-", "\\-") in page
    assert "KMS_CLI_VAULT" in page and "~/.local/share/kms\\-cli/vault.db" in page
