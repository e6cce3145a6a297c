"""Record: a small immutable value class, cheaper to define and build than a NamedTuple or a dataclass.

Both of those cost cold-start time (typing's NamedTuple machinery, dataclasses' code
generation); the command table and the algorithm registries build about 150 records
on every start. A subclass lists its fields in `__slots__` and the defaults of the
optional ones in `_defaults`; fields are given positionally or by name.
"""

from __future__ import annotations


class Record:
    __slots__ = ()
    _defaults: dict = {}

    def __init__(self, *args, **kwargs):
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} fields")
        setter = object.__setattr__
        for name, value in zip(names, args):
            setter(self, name, value)
        defaults = self._defaults
        for name in names[len(args):]:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in defaults:
                setter(self, name, defaults[name])
            else:
                raise TypeError(f"{type(self).__name__} needs the field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__} has no field {sorted(kwargs)[0]!r}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} records are immutable")

    def __eq__(self, other):
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"
