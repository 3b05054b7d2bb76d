"""cvmlaunch.namedtuple.NamedTuple makes the class typing.NamedTuple makes, from the same body."""

from __future__ import annotations

import importlib
import pkgutil
import typing
from typing import Any

import pytest

import cvmlaunch
from cvmlaunch import namedtuple as ours

# Class bodies as they appear in the package: fields with and without defaults, a docstring
# or none, methods, properties, class methods, constants, a nested class.
BODIES = {
    "plain": "    a: int\n    b: str\n",
    "defaults": '    a: int\n    b: str = "x"\n    c: "bytes | None" = None\n',
    "all defaults": "    a: int = 1\n    b: int = 2\n",
    "documented": '    """Doc."""\n\n    a: int\n',
    "methods": (
        "    a: int\n    b: int = 3\n"
        "    LIMIT = 7\n"
        "    def total(self) -> int:\n        return self.a + self.b\n"
        "    @property\n    def twice(self) -> int:\n        return 2 * self.a\n"
        "    @classmethod\n    def make(cls, a: int) -> object:\n        return cls(a, a)\n"
        "    @staticmethod\n    def unit() -> int:\n        return 1\n"
        "    def __str__(self) -> str:\n        return f'<{self.a}>'\n"
        "    class Inner:\n        pass\n"
    ),
    "no fields": '    """Only a docstring."""\n',
}


def _both(body: str, name: str = "Record") -> tuple[Any, Any]:
    """The class typing makes from `body`, and the one ours makes."""
    made: list[Any] = []
    for base in (typing.NamedTuple, ours.NamedTuple):
        namespace = {"base": base, "__name__": "tests.records"}
        exec(f"from __future__ import annotations\nclass {name}(base):\n{body}", namespace)
        made.append(namespace[name])
    return made[0], made[1]


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_the_class_is_typings(body: str) -> None:
    theirs, mine = _both(body)
    assert mine.__mro__[1:] == theirs.__mro__[1:] == (tuple, object)
    for attribute in ("_fields", "_field_defaults", "__doc__", "__module__", "__qualname__"):
        assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
    assert list(mine.__annotations__) == list(theirs.__annotations__) == list(mine._fields)
    own = {k for k in vars(theirs) if k not in ("__annotations__", "__orig_bases__")}
    assert own == {k for k in vars(mine) if k not in ("__annotations__", "__orig_bases__")}
    for key in own - {"__new__", "__doc__", "__module__", "_make", "_replace", "_asdict"}:
        if not key.startswith("_") or key in ("__str__", "__repr__"):
            assert type(vars(mine)[key]) is type(vars(theirs)[key]), key
    values = tuple(range(1, 1 + len(mine._fields)))
    a, b = theirs(*values), mine(*values)
    assert (tuple(a), repr(a), str(a), a._asdict()) == (tuple(b), repr(b), str(b), b._asdict())
    assert a == b and hash(a) == hash(b)
    if "total" in own:
        assert (b.total(), b.twice, mine.make(4), mine.unit(), mine.LIMIT) == (3, 2, (4, 4), 1, 7)
        assert b._replace(b=5).total() == 6 and mine.Inner.__qualname__.endswith("Inner")
    if mine._field_defaults:
        assert theirs() == mine() if len(mine._field_defaults) == len(mine._fields) else True


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ("    a: int = 1\n    b: int\n", TypeError, "b"),
        ("    a: int\n    def _replace(self) -> None: ...\n", AttributeError, "_replace"),
        ("    a: int\n    _fields = ()\n", AttributeError, "_fields"),
        ("    _a: int\n", ValueError, "_a"),
    ],
)
def test_what_typing_refuses_is_refused(body: str, error: type[Exception], words: str) -> None:
    for base in (typing.NamedTuple, ours.NamedTuple):
        with pytest.raises(error, match=words):
            exec(f"class Record(base):\n{body}", {"base": base, "__name__": "tests.records"})


def test_a_class_made_in_a_function_is_named_as_typing_names_it() -> None:
    def made() -> tuple[type, type]:
        class Theirs(typing.NamedTuple):
            a: int

        class Mine(ours.NamedTuple):
            a: int

        return Theirs, Mine

    theirs, mine = made()
    assert mine.__qualname__ == theirs.__qualname__.replace("Theirs", "Mine")
    assert mine.__qualname__.endswith("made.<locals>.Mine")


def test_only_the_base_itself_is_inherited_from() -> None:
    with pytest.raises(TypeError, match="only inherit from NamedTuple"):
        exec("class Record(base, int):\n    a: int\n", {"base": ours.NamedTuple, "__name__": "x"})


def _records() -> list[Any]:
    """Every NamedTuple class the package defines."""
    found: list[Any] = []
    for info in pkgutil.walk_packages(cvmlaunch.__path__, "cvmlaunch."):
        if info.name == "cvmlaunch.__main__":  # runs the command line
            continue
        module = importlib.import_module(info.name)
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and value.__module__ == info.name
            and issubclass(value, tuple)
            and hasattr(value, "_fields")
        ]
    return found


def test_every_record_of_the_package_has_its_annotations_as_fields() -> None:
    records = _records()
    assert len(records) > 100
    for record in records:
        assert list(record.__annotations__) == list(record._fields), record
        assert record.__orig_bases__ == (ours.NamedTuple,), record
