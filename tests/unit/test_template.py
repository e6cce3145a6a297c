"""inject templates: references found up front, values substituted, every other byte kept."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_cli import template
from kms_cli.errors import NotFoundError, UsageError
from kms_cli.secretvalue import SecretValue
from kms_cli.template import Reference

VALUES = {("db/password", None): b"p@ss\n'\"$x", ("db/password", 2): b"old", ("api", None): b"\xff\x00bin"}


def lookup(name, version):
    try:
        return SecretValue(VALUES[(name, version)])
    except KeyError:
        raise NotFoundError(f"secret {name} not found") from None


def test_render_replaces_references_with_and_without_spaces():
    tpl = b"a={{ kms://db/password }};b={{kms://db/password?version=2}};c={{\tkms://api  }}"
    assert template.render(tpl, lookup) == b"a=p@ss\n'\"$x;b=old;c=\xff\x00bin"


def test_references_in_order_distinct():
    tpl = b"{{ kms://b }} {{ kms://a?version=3 }} {{ kms://b }} {{kms://a}}"
    assert template.references(tpl) == [Reference("b", None), Reference("a", 3), Reference("a", None)]


def test_everything_else_passes_through_byte_for_byte():
    tpl = b"\xff\xfe{{ not a ref }} {{ vault://x }} { { kms://x } } {{{{ }}}}\r\n\x00${X}`y`\n"
    assert template.references(tpl) == []
    assert template.render(tpl, lookup) == tpl


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_without_references_are_unchanged(data):
    if b"kms://" in data:
        return
    assert template.render(data, lookup) == data


def test_lookup_called_once_per_reference_before_output():
    calls = []

    def counting(name, version):
        calls.append((name, version))
        return b"v"

    assert template.render(b"{{ kms://x }}{{ kms://x }}{{ kms://y }}", counting) == b"vvv"
    assert calls == [("x", None), ("y", None)]


def test_unknown_reference_fails_whole_render():
    with pytest.raises(NotFoundError) as exc:
        template.render(b"{{ kms://db/password }} {{ kms://missing }}", lookup)
    assert exc.value.exit_code == 3


@pytest.mark.parametrize(
    "tpl",
    [
        b"{{ kms:// }}",
        b"{{ kms://a//b }}",
        b"{{ kms://../etc }}",
        b"{{ kms:///abs }}",
        b"{{ kms://a?version=0 }}",
        b"{{ kms://a?version=x }}",
        b"{{ kms://a?v=1 }}",
        b"{{ kms://na me }}",
        b"line1\n{{ kms://unclosed",
        b"{{ kms://" + b"a" * 257 + b" }}",
    ],
)
def test_malformed_reference_is_a_usage_error(tpl):
    with pytest.raises(UsageError) as exc:
        template.references(tpl)
    assert exc.value.exit_code == 2
    assert "line" in exc.value.message


def test_malformed_error_gives_line():
    with pytest.raises(UsageError) as exc:
        template.render(b"a\nb\n{{ kms://a?version=-1 }}", lookup)
    assert "line 3" in exc.value.message
