"""Immutable value classes without dataclasses: a cached `pull` (and `images`) would spend more on importing
dataclasses (inspect, ast, dis, copy: ~10 ms here) than on its own work. A subclass names its FIELDS (and
DEFAULTS for the trailing ones); it gets a dataclass(frozen=True)'s constructor (positional or keyword), equality
and hash over the fields, repr, immutability and copy/pickle support."""


class Record:
    __slots__ = ()
    FIELDS: tuple = ()
    DEFAULTS: tuple = ()  # values of the last len(DEFAULTS) fields when not given

    def __init__(self, *args, **kwargs):
        fields = self.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, got {len(args)}")
        first_default = len(fields) - len(self.DEFAULTS)
        for index, name in enumerate(fields):
            if index < len(args):
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
                value = args[index]
            elif name in kwargs:
                value = kwargs.pop(name)
            elif index >= first_default:
                value = self.DEFAULTS[index - first_default]
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}() got unexpected arguments {sorted(kwargs)}")

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}: a {type(self).__name__} is immutable")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}: a {type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def _key(self) -> tuple:
        """What equality and the hash compare: every field (a subclass may leave some out)."""
        return self._values()

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):  # copy and pickle
        return (self.__class__, self._values())

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({fields})"
