"""SecretValue: the type a decrypted secret travels in, so that it never prints by accident."""

from __future__ import annotations


_MASK = "***"


class SecretValue:
    """Bytes that show as ``***`` in ``repr``, ``str`` and f-strings.

    The value comes out only through `reveal()` (or `reveal_text()`), so every place
    that uses it is explicit and greppable. Pickling is refused: a pickle is a copy
    of the value on disk or on a wire. Equality is constant-time and only holds
    between two SecretValues (``SecretValue(b"x") == b"x"`` is False), so a test
    or a comparison never reveals by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes | bytearray | memoryview):
        if isinstance(value, SecretValue):
            value = value._value
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("SecretValue wraps bytes; use SecretValue.from_text for a str")
        self._value = bytes(value)

    @classmethod
    def from_text(cls, text: str) -> SecretValue:
        """A SecretValue holding `text` encoded as UTF-8."""
        return cls(text.encode("utf-8"))

    def reveal(self) -> bytes:
        """The secret bytes, exactly as stored."""
        return self._value

    def reveal_text(self) -> str:
        """The secret decoded as UTF-8.

        Raises:
            ValueError: the value is not valid UTF-8 (the message holds no byte of it).
        """
        try:
            return self._value.decode("utf-8")
        except UnicodeDecodeError:
            # UnicodeDecodeError's message quotes the offending byte; never let it out.
            raise ValueError("secret value is not valid UTF-8") from None

    def is_utf8(self) -> bool:
        try:
            self._value.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        from kms_cli.crypto.primitives import equal  # constant time, without importing hashlib

        return equal(self._value, other._value)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]  # a hash is a function of the value: not offered

    def __repr__(self) -> str:
        return f"SecretValue({_MASK})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return format(_MASK, spec)

    def __reduce__(self):
        raise TypeError("a SecretValue cannot be pickled")

    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo) -> SecretValue:
        return self


def text_of(name: str, value: "str | bytes | SecretValue", fmt: str = "this format") -> str:
    """A value as UTF-8 text for a text format (dotenv, sh, json, github), or a UsageError naming
    `name`, never the value."""
    if isinstance(value, str):
        return value
    raw = value.reveal() if isinstance(value, SecretValue) else bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        from kms_cli.errors import UsageError

        raise UsageError(
            f"the value of {name} is not UTF-8 text and cannot be written as {fmt}",
            hint="kms-cli exec passes any bytes to a program; secret get prints them as stored",
        ) from None
