"""server/api.py: a request's repr never shows its body (plaintext, secret values) nor its token."""

from kms_cli.server.api import Forbidden, Request


def test_request_repr_hides_body_vault_and_token():
    r = Request("POST", "/v1/transit/encrypt/k", {"name": "k"}, {}, {"plaintext": "c2VjcmV0"}, "127.0.0.1:1",
                vault=object(), token="kms.sometoken")
    text = repr(r)
    assert "c2VjcmV0" not in text and "kms.sometoken" not in text and "/v1/transit/encrypt/k" in text


def test_authorize_without_a_token_is_forbidden():
    r = Request("GET", "/v1/secret/data/x", {}, {}, None, "127.0.0.1:1")
    try:
        r.authorize("secret.read", "x")
    except Forbidden as exc:
        assert exc.status == 403 and exc.message == "permission denied"
    else:
        raise AssertionError("no token must be refused")
