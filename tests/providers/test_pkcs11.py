"""`pkcs11:` against SoftHSM2 with tokens initialised into a temp directory by the fixture."""

from __future__ import annotations

import pytest

from kms_cli.errors import NotFoundError, UnavailableError, UnlockError, UsageError
from kms_cli.providers import pkcs11 as p11
from kms_cli.providers.base import SourceOptions
from tests.providers.contract import CTX_A, ROOT, SourceContract
from tests.servers.softhsm import USER_PIN

pytestmark = pytest.mark.server


def uri(hsm, token="kms-cli", obj="root", pin="env:HSM_PIN", extra=""):
    return f"pkcs11:token={token};object={obj}{extra}?module-path={hsm.module}&pin-source={pin}"


def build(hsm, *, pin_value=USER_PIN, create_key=False, **kw):
    return p11.from_uri(uri(hsm, **kw), SourceOptions(environ={"HSM_PIN": pin_value}, create_key=create_key))


@pytest.fixture(scope="module")
def token(hsm):
    build(hsm, create_key=True).wrap(ROOT, CTX_A)  # creates the key object `root`
    return hsm


class TestPkcs11Contract(SourceContract):
    module = "kms_cli.providers.pkcs11"
    sdk_modules = ("pkcs11",)

    @pytest.fixture
    def source(self, token):
        return build(token)

    @pytest.fixture
    def denied(self, token):
        return build(token, pin_value="000000"), build(token).wrap(ROOT, CTX_A)


def test_created_key_is_a_non_extractable_sensitive_aes_256_token_key(token):
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    tok = pkcs11.lib(token.module).get_token(token_label="kms-cli")
    with tok.open(user_pin=USER_PIN) as session:
        key = session.get_key(object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label="root")
        assert key.key_length == 256
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.TOKEN] is True


def test_blob_layout_and_fresh_iv(token):
    source = build(token)
    one, two = source.wrap(ROOT, CTX_A), source.wrap(ROOT, CTX_A)
    assert one[0] == 1 and len(one) == 1 + 12 + 32 + 16
    assert one[1:13] != two[1:13]


def test_missing_key_is_not_found_with_hint(token):
    with pytest.raises(NotFoundError) as info:
        build(token, obj="absent").wrap(ROOT, CTX_A)
    assert "--create-key" in info.value.hint


def test_missing_token_is_not_found(token):
    with pytest.raises(NotFoundError, match="no pkcs11 token"):
        build(token, token="no-such-token").wrap(ROOT, CTX_A)


def test_create_key_on_another_token(token):
    source = build(token, token="other", obj="made-here", create_key=True)
    blob = source.wrap(ROOT, CTX_A)
    assert build(token, token="other", obj="made-here").unwrap(blob, CTX_A) == ROOT
    with pytest.raises(NotFoundError):  # same label, other token: no such key there
        build(token, obj="made-here").unwrap(blob, CTX_A)


def test_key_on_another_token_does_not_open(token):
    blob = build(token).wrap(ROOT, CTX_A)
    build(token, token="other", obj="root", create_key=True).wrap(ROOT, CTX_A)
    with pytest.raises(UnlockError, match="does not open"):
        build(token, token="other", obj="root").unwrap(blob, CTX_A)


def test_missing_module_is_unavailable(token):
    source = p11.from_uri(
        f"pkcs11:token=kms-cli;object=root?module-path=/nonexistent/libnone.so&pin-source=env:HSM_PIN",
        SourceOptions(environ={"HSM_PIN": USER_PIN}),
    )
    assert source.is_configured() is False
    with pytest.raises(UnavailableError):
        source.wrap(ROOT, CTX_A)


def test_pin_from_file(token, tmp_path):
    pin = tmp_path / "pin"
    pin.write_text(USER_PIN + "\n")
    source = p11.from_uri(uri(token, pin=f"file:{pin}"), SourceOptions(environ={"X": "1"}))
    assert source.is_configured()
    assert source.secret_env_vars() == []
    assert source.unwrap(source.wrap(ROOT, CTX_A), CTX_A) == ROOT


def test_unset_pin_variable(token):
    source = p11.from_uri(uri(token), SourceOptions(environ={"X": "1"}))
    assert source.is_configured() is False
    assert source.secret_env_vars() == ["HSM_PIN"]
    with pytest.raises(UsageError, match="HSM_PIN"):
        source.wrap(ROOT, CTX_A)


def test_parse_uri_percent_decoding_and_id():
    parsed = p11.parse_uri("pkcs11:token=My%20Token;id=%01%ff;type=secret-key?module-path=/x.so&pin-source=env:P")
    assert parsed.token == "My Token"
    assert parsed.key_id == b"\x01\xff"
    assert parsed.query == {"module-path": "/x.so", "pin-source": "env:P"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("pkcs11:token=t;object=o?module-path=/x.so&pin-value=1234", "pin-value"),
        ("pkcs11:object=o?module-path=/x.so", "token"),
        ("pkcs11:token=t?module-path=/x.so", "object"),
        ("pkcs11:token=t;object=o", "module-path"),
        ("pkcs11:token=t;object=o;type=private?module-path=/x.so", "secret-key"),
        ("pkcs11:token=t;object=o;color=red?module-path=/x.so", "unsupported"),
        ("pkcs11:token=t;token=u;object=o?module-path=/x.so", "twice"),
        ("pkcs11:token=t;object=o?module-path=/x.so&pin-source=|/bin/pin", "pin-source"),
        ("pkcs11:token=t;noequals?module-path=/x.so", "invalid"),
    ],
)
def test_parse_uri_errors(text, match):
    with pytest.raises(UsageError, match=match):
        p11.parse_uri(text)
