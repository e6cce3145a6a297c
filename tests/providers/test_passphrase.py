"""`passphrase` through the source contract (cheap Argon2 parameters via the class), plus its own rules."""

from __future__ import annotations

import struct
import unicodedata

import pytest

from kms_cli.crypto.passphrase import Argon2Params
from kms_cli.errors import UnlockError, UsageError
from kms_cli.providers import passphrase
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, SourceContract

CHEAP = Argon2Params(memory_kib=64, time_cost=1, parallelism=1)


def build(secret: str | None = "correct horse", **options):
    """A source with cheap Argon2 parameters; short test passphrases are allowed unless a test
    says otherwise (the strength rules have their own tests below)."""
    environ = {"KMS_CLI_PASSPHRASE": secret} if secret is not None else {"UNRELATED": "1"}
    options.setdefault("allow_weak_passphrase", True)
    return passphrase.PassphraseSource(options=SourceOptions(environ=environ, **options), params=CHEAP)


class TestPassphraseContract(SourceContract):
    module = "kms_cli.providers.passphrase"
    sdk_modules = ("argon2",)

    @pytest.fixture
    def source(self):
        return build()

    @pytest.fixture
    def denied(self):
        return build("wrong horse"), build().wrap(ROOT, CTX_A)


def test_wrong_passphrase_message():
    blob = build().wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError, match="^wrong passphrase$"):
        build("nope").unwrap(blob, CTX_A)


def test_from_uri_uses_at_least_the_floor_parameters():
    source = passphrase.from_uri("passphrase", SourceOptions(environ={"KMS_CLI_PASSPHRASE": "pw"},
                                                             allow_weak_passphrase=True))
    assert source.params == Argon2Params()
    blob = source.wrap(ROOT, CTX_A)
    version, m, t, p = struct.unpack_from(">BIII", blob)
    assert (version, m, t, p) == (1, 64 * 1024, 3, 4)
    assert source.unwrap(blob, CTX_A) == ROOT


@pytest.mark.parametrize("uri", ["passphrase:x", "passphrases"])
def test_from_uri_rejects_other_forms(uri):
    with pytest.raises(UsageError):
        passphrase.from_uri(uri, SourceOptions())


def test_stored_parameters_are_used_to_unwrap():
    blob = passphrase.PassphraseSource(
        options=SourceOptions(environ={"KMS_CLI_PASSPHRASE": "pw"}, allow_weak_passphrase=True),
        params=Argon2Params(128, 2, 2)
    ).wrap(ROOT, CTX_A)
    assert build("pw").unwrap(blob, CTX_A) == ROOT  # the reader's own params do not matter


def test_tampered_parameters_do_not_open():
    blob = bytearray(build().wrap(ROOT, CTX_A))
    blob[8] ^= 0x01  # t
    with pytest.raises(UnlockError):
        build().unwrap(bytes(blob), CTX_A)


def test_implausible_parameters_are_refused_before_deriving():
    blob = build().wrap(ROOT, CTX_A)
    huge = struct.pack(">BIII", 1, 0xFFFFFFFF, 3, 4) + blob[13:]
    with pytest.raises(UnlockError, match="implausible"):
        build().unwrap(huge, CTX_A)


def test_unknown_version():
    blob = b"\x02" + build().wrap(ROOT, CTX_A)[1:]
    with pytest.raises(UnlockError, match="version"):
        build().unwrap(blob, CTX_A)


def test_file_beats_environment_beats_prompt(tmp_path):
    path = tmp_path / "pw"
    path.write_text("from file\r\n")
    asked = []

    def prompt(label, confirm):
        asked.append((label, confirm))
        return "from prompt"

    both = build("from env", passphrase_file=str(path), prompt=prompt)
    blob = both.wrap(ROOT, CTX_A)
    assert build("from file").unwrap(blob, CTX_A) == ROOT
    env_only = build("from env", prompt=prompt)
    assert build("from env").unwrap(env_only.wrap(ROOT, CTX_A), CTX_A) == ROOT
    assert asked == []


def test_prompt_confirms_only_when_sealing():
    asked = []

    def prompt(label, confirm):
        asked.append(confirm)
        return "typed"

    source = build(None, prompt=prompt)
    assert source.is_configured()
    blob = source.wrap(ROOT, CTX_A)
    assert source.unwrap(blob, CTX_A) == ROOT
    assert asked == [True, False]


def test_no_passphrase_anywhere_is_a_usage_error_with_hint():
    source = build(None)
    assert source.is_configured() is False
    with pytest.raises(UsageError) as info:
        source.wrap(ROOT, CTX_A)
    assert "KMS_CLI_PASSPHRASE" in info.value.hint


def test_unreadable_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        build(None, passphrase_file=str(tmp_path / "missing")).wrap(ROOT, CTX_A)


def test_empty_passphrase_is_refused(tmp_path):
    path = tmp_path / "pw"
    path.write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        build(None, passphrase_file=str(path)).wrap(ROOT, CTX_A)


def test_unicode_is_normalised():
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    assert build(decomposed).unwrap(build(composed).wrap(ROOT, CTX_A), CTX_A) == ROOT


def test_secret_env_var():
    assert build().secret_env_vars() == ["KMS_CLI_PASSPHRASE"]


STRONG = "correct horse battery staple"


@pytest.mark.parametrize("weak, why", [
    ("pw", "shorter than 12 characters"),
    ("elevenchars", "shorter than 12 characters"),
    ("passwordpassword", "too easy to guess"),
    ("aaaaaaaaaaaaaaaa", "too easy to guess"),
    ("qwertyuiopasdf", "too easy to guess"),
])
def test_a_weak_new_passphrase_is_refused_with_a_hint_naming_the_flag(weak, why):
    with pytest.raises(UsageError) as info:
        build(weak, allow_weak_passphrase=False).wrap(ROOT, CTX_A)
    assert info.value.exit_code == 2
    assert why in info.value.message
    assert "--allow-weak-passphrase" in info.value.hint
    assert weak not in info.value.message and weak not in info.value.hint


def test_the_strength_rule_applies_however_the_passphrase_arrives(tmp_path):
    path = tmp_path / "pw"
    path.write_text("hunter2\n")
    with pytest.raises(UsageError, match="shorter"):
        build(None, passphrase_file=str(path), allow_weak_passphrase=False).wrap(ROOT, CTX_A)
    with pytest.raises(UsageError, match="too easy"):
        build(None, prompt=lambda label, confirm: "password1234", allow_weak_passphrase=False).wrap(ROOT, CTX_A)


def test_a_strong_passphrase_or_the_flag_is_accepted():
    blob = build(STRONG, allow_weak_passphrase=False).wrap(ROOT, CTX_A)
    assert build(STRONG).unwrap(blob, CTX_A) == ROOT
    weak = build("pw", allow_weak_passphrase=True).wrap(ROOT, CTX_A)
    # opening a slot never judges the passphrase, whatever the option says
    assert build("pw", allow_weak_passphrase=False).unwrap(weak, CTX_A) == ROOT


def test_a_long_passphrase_is_judged_by_its_first_72_characters():
    long = STRONG + " " + "x" * 200
    blob = build(long, allow_weak_passphrase=False).wrap(ROOT, CTX_A)
    assert build(long).unwrap(blob, CTX_A) == ROOT


def test_zxcvbn_is_imported_only_to_judge_a_new_passphrase():
    import subprocess
    import sys

    code = ("import sys; from kms_cli.providers import passphrase as p; "
            "from kms_cli.providers.base import SourceOptions; from kms_cli.crypto.passphrase import Argon2Params; "
            "s = p.PassphraseSource(options=SourceOptions(environ={'KMS_CLI_PASSPHRASE': 'pw'}, "
            "allow_weak_passphrase=True), params=Argon2Params(64, 1, 1)); b = s.wrap(bytes(32), {}); "
            "s.unwrap(b, {}); print('zxcvbn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
