import pytest

from kms_cli.errors import UsageError
from kms_cli.names import Namespace, validate


@pytest.mark.parametrize("name", ["a", "acme/prod/db-password", "A.b_c-d/e", "x" * 256])
def test_valid(name):
    assert validate(name) == name


@pytest.mark.parametrize("name", ["", "/a", "a/", "a//b", ".", "..", "a/../b", "a/./b", "sp ace", "é", "x" * 257, "a\\b"])
def test_invalid(name):
    with pytest.raises(UsageError):
        validate(name)


def test_namespace_mapping():
    ns = Namespace.parse("acme/prod/")
    assert ns.full("db") == "acme/prod/db"
    assert ns.relative("acme/prod/db") == "acme/prod/db"[len("acme/prod/"):]
    assert ns.contains("acme/prod/x") and not ns.contains("acme/production/x") and not ns.contains("acme/prod")
    with pytest.raises(UsageError):
        ns.full("../dev/db")
    assert Namespace.parse("").full("a/b") == "a/b"


