"""Hypothesis strategies shared by the unit properties and the black-box hostile-input tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Pieces of a config.toml: raw bytes, settings kms-cli reads, TOML syntax and what breaks it.
TOML_PIECES = st.one_of(
    st.binary(max_size=30),
    st.text(max_size=30).map(str.encode),
    st.sampled_from([b"vault = ", b"namespace = ", b"timeout = ", b"retries = ", b"no_color = ", b"unlock = ",
                     b'"x"', b"'x'", b'"app"', b'"env:KMS_CLI_MASTER_KEY"', b'"""', b"'''", b"1", b"1e400", b"nan",
                     b"true", b"[", b"]", b"{", b"}", b"[[a]]", b"[vault]", b"\n", b"\r\n", b"=", b"#", b"\xff",
                     b"\x00", b"\\u0000", b"1979-05-27", b"a.b = 1"]),
)


def toml_files(max_pieces: int):
    return st.lists(TOML_PIECES, max_size=max_pieces).map(b"".join)


def edits(max_size: int):
    """Up to `max_size` byte edits: (position, byte, replace|insert|delete|cut); see `garble`."""
    return st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                              st.sampled_from(["replace", "insert", "delete", "cut"])), min_size=1, max_size=max_size)


def garble(data: bytes, edits) -> bytes:
    """`data` with the edits applied; a replace always changes the byte it hits."""
    raw = bytearray(data)
    for pos, byte, kind in edits:
        at = pos % (len(raw) + 1)
        if kind == "insert":
            raw[at:at] = bytes([byte])
        elif kind == "cut":
            del raw[at:]
        elif raw:
            if kind == "replace":
                raw[at % len(raw)] = byte if raw[at % len(raw)] != byte else byte ^ 1
            else:
                del raw[at % len(raw)]
    return bytes(raw)
