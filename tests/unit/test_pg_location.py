"""The PostgreSQL vault URI (kms_cli/store/postgres.Location, kms_cli/locations.canonical) under
hypothesis: any text is a Location or a one-line UsageError, and a password never shows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_cli.errors import UsageError
from kms_cli.locations import canonical, is_uri, same_vault

psycopg = pytest.importorskip("psycopg")
from kms_cli.store.postgres import Location, _glob_regex  # noqa: E402

SECRET = "Zq9secretpw"
parts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(user=parts, host=parts, port=st.one_of(st.none(), st.integers(-5, 70000)), db=parts,
       query=st.lists(st.tuples(parts, parts), max_size=4), scheme=st.sampled_from(["postgresql", "postgres"]),
       password=st.booleans())
def test_any_uri_parses_or_is_a_usage_error_and_never_shows_a_password(user, host, port, db, query, scheme,
                                                                          password):
    netloc = (user + (f":{SECRET}" if password else "") + "@" if user or password else "") + host
    if port is not None:
        netloc += f":{port}"
    q = "&".join(f"{k}={v}" for k, v in query)
    uri = f"{scheme}://{netloc}/{db}" + (f"?{q}" if q else "")
    try:
        loc = Location(uri)
    except UsageError as exc:
        assert SECRET not in exc.message and "\n" not in exc.message
        if password and not set(user) & set("/?#@[]%"):  # else the "password" is a path or a query
            assert "password" in exc.message
        return
    assert not password or set(user) & set("/?#@[]%")
    assert SECRET not in loc.shown and loc.shown == canonical(uri) and "?vault=" in loc.shown
    assert loc.schema and "vault" not in loc.params


@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_canonical_of_any_text_is_total(text):
    out = canonical(text)
    assert isinstance(out, str)
    if is_uri(text):
        assert same_vault(text, text)


def test_canonical_drops_credentials_and_parameters_but_keeps_the_vault():
    a = "postgres://kms@db:5432/secrets?sslmode=verify-full&vault=team"
    assert canonical(a) == "postgresql://kms@db:5432/secrets?vault=team"
    assert same_vault(a, "postgresql://kms@db:5432/secrets?vault=team&connect_timeout=3")
    assert not same_vault(a, "postgresql://kms@db:5432/secrets")  # another schema: kms
    assert canonical("postgresql://db/x") == "postgresql://db/x?vault=kms"


@given(st.text(alphabet="ab*?[]^.", max_size=8), st.text(alphabet="ab.", max_size=6))
def test_glob_translation_matches_fnmatch(pattern, name):
    import fnmatch
    import re

    if "[" in pattern or "]" in pattern:  # bracket sets: SQLite's GLOB and fnmatch differ on edge cases
        return
    assert bool(re.match(_glob_regex(pattern), name, re.S)) == fnmatch.fnmatchcase(name, pattern)


def test_a_password_in_a_place_no_parser_calls_one_is_not_echoed():
    """Found by the property above: `postgresql://?@:PW@/?=` puts the password in a query libpq
    quotes back in its error."""
    with pytest.raises(UsageError) as err:
        Location(f"postgresql://?@:{SECRET}@/?=")
    assert SECRET not in err.value.message
    with pytest.raises(UsageError) as err:
        Location("postgresql://h/db?bogus=1")
    assert '"bogus"' in err.value.message  # a parameter's name is still named
