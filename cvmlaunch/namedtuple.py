"""`NamedTuple` for class statements, as `typing.NamedTuple` makes them, without `typing`.

Importing `typing` costs ~3.5 ms, a fifteenth of a whole `cvmlaunch measure`, and its
NamedTuple compiles every string annotation into a ForwardRef that nothing here reads. The
class made here is the one typing makes: `collections.namedtuple` of the annotated fields,
their defaults, and the body's methods, constants and docstring. Type checkers see typing's.
"""

from __future__ import annotations

from collections import namedtuple

__all__ = ["NamedTuple"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    # What namedtuple defines itself, which a body may not replace (as typing refuses it).
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults"}
        | {"_make", "_replace", "_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _NamedTupleMeta(type):
        def __new__(mcs, name, bases, namespace):
            if not bases:  # NamedTuple itself
                return super().__new__(mcs, name, bases, namespace)
            if bases != (NamedTuple,):
                raise TypeError("a NamedTuple class can only inherit from NamedTuple")
            annotations = namespace.get("__annotations__", {})
            defaults = []
            for field in annotations:
                if field in namespace:
                    defaults.append(namespace[field])
                elif defaults:
                    raise TypeError(f"{name}: field {field} without a default follows one with")
            cls = namedtuple(name, annotations, defaults=defaults, module=namespace["__module__"])
            cls.__annotations__ = dict(annotations)
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in annotations:
                    setattr(cls, key, value)
            cls.__orig_bases__ = bases
            return cls

    class NamedTuple(metaclass=_NamedTupleMeta):
        """Base of a typed named tuple class (see the module's docstring)."""
