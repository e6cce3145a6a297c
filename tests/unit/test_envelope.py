import io

import pytest

from kms_cli import envelope
from kms_cli.errors import IntegrityError, UsageError


def _header(**kw):
    h = envelope.Header(suite=envelope.SUITE_COBBLESTONE, vault_id=bytes(range(16)), name="acme/k", version=3,
                        wrap=b"W" * 88)
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def test_round_trip_leaves_stream_at_payload():
    h = _header(ext={1: b"fp"})
    src = io.BytesIO(h.to_bytes() + b"PAYLOAD")
    got = envelope.read_header(src)
    assert (got.suite, got.vault_id, got.name, got.version, got.wrap, got.ext) == (
        h.suite, h.vault_id, h.name, h.version, h.wrap, h.ext)
    assert src.read() == b"PAYLOAD"


def test_rewrap_fields_are_outside_the_immutable_part():
    a, b = _header(), _header(version=4, wrap=b"X" * 90)
    assert a.immutable() == b.immutable()
    assert a.wrap_aad() != b.wrap_aad()


@pytest.mark.parametrize("cut", range(0, 40))
def test_truncated_header(cut):
    raw = _header().to_bytes()
    with pytest.raises(IntegrityError):
        envelope.read_header(io.BytesIO(raw[:cut]))


def test_bad_magic_and_versions():
    raw = bytearray(_header().to_bytes())
    for i, v in ((0, ord("X")), (7, 9), (8, 77)):
        bad = bytearray(raw)
        bad[i] = v
        with pytest.raises(IntegrityError):
            envelope.read_header(io.BytesIO(bytes(bad)))


def test_context_encoding_is_canonical_and_unambiguous():
    e = envelope.encode_context
    assert e([("b", "2"), ("a", "1")]) == e([("a", "1"), ("b", "2")])
    assert e([("a", "1=b")]) != e([("a=1", "b")])
    assert e([]) != e([("", "")])
    with pytest.raises(UsageError):
        e([("a", "1"), ("a", "2")])
