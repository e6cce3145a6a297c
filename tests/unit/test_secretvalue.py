"""SecretValue never shows its bytes unless asked."""

import copy
import pickle

import pytest

from kms_cli.secretvalue import SecretValue


def test_repr_str_and_format_hide_the_value():
    s = SecretValue(b"hunter2")
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", f"{s:>10}", "%s" % s, str([s]), str({"k": s})):
        assert "hunter2" not in shown
        assert "***" in shown


def test_reveal_returns_exact_bytes():
    raw = bytes(range(256))
    assert SecretValue(raw).reveal() == raw
    assert SecretValue(bytearray(b"ab")).reveal() == b"ab"
    assert SecretValue(memoryview(b"ab")).reveal() == b"ab"
    assert SecretValue.from_text("héllo").reveal() == "héllo".encode()


def test_len_bool_and_equality():
    assert len(SecretValue(b"abc")) == 3
    assert not SecretValue(b"")
    assert SecretValue(b"x")
    assert SecretValue(b"abc") == SecretValue(b"abc")
    assert SecretValue(b"abc") != SecretValue(b"abd")
    assert SecretValue(b"abc") != b"abc"  # only SecretValues compare equal
    assert SecretValue(SecretValue(b"a")) == SecretValue(b"a")


def test_reveal_text_and_non_utf8():
    assert SecretValue(b"caf\xc3\xa9").reveal_text() == "café"
    bad = SecretValue(b"\xffsecret")
    assert not bad.is_utf8()
    with pytest.raises(ValueError) as exc:
        bad.reveal_text()
    assert "ff" not in str(exc.value) and "secret" not in str(exc.value).replace("secret value", "")


def test_rejects_str_and_pickle_and_hash():
    with pytest.raises(TypeError):
        SecretValue("text")
    with pytest.raises(TypeError):
        pickle.dumps(SecretValue(b"x"))
    with pytest.raises(TypeError):
        hash(SecretValue(b"x"))
    s = SecretValue(b"x")
    assert copy.copy(s) is s and copy.deepcopy(s) is s


def test_exception_messages_do_not_leak():
    s = SecretValue(b"topsecret")
    err = ValueError(f"bad value {s}")
    assert "topsecret" not in str(err)
