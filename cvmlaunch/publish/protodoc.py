"""Protocol buffer documents without a protobuf runtime: the text format (textproto) and
proto3 JSON (protojson), written from and read into plain trees checked against a `Schema`.

A tree is a dict {field: value} with a list for a repeated field; a value is an int, bool,
bytes, str (a string field, or an enum's value name) or the tree of a nested message. A
wrapper (UInt32Value, UInt64Value) holds its int. Reading is two steps, so that a caller can
look at a document before choosing its message: `parse_text` / `load_json` give the raw
document, `typed_text` / `typed_json` check it against the schema and give the tree.

Every malformed input is a one-line ProfileError naming where (`fail`), and a hostile one is
stopped by the bounds below.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.namedtuple import NamedTuple

# Bounds for the documents read here (verifier policies): their schemas nest four deep, and
# a list of 48-byte digests takes 3 tokens an entry.
MAX_DEPTH = 8
MAX_TOKENS = 1 << 18


class Schema(NamedTuple):
    """Messages and enums, from .proto files.

    messages: message -> {field: (kind, repeated)}, in field-number order (the order
    protobuf writes them in). A kind is a scalar type ("bool", "string", "bytes", "uint32",
    "uint64"), a wrapper ("UInt32Value"/"UInt64Value"), an enum or a message of the schema.
    enums: enum -> its value names, in number order from 0.
    """

    messages: Mapping[str, Mapping[str, tuple[str, bool]]]
    enums: Mapping[str, tuple[str, ...]]


_UINT_BITS = {"uint32": 32, "uint64": 64, "UInt32Value": 32, "UInt64Value": 64}
_WRAPPERS = ("UInt32Value", "UInt64Value")
# The wrappers' own messages, so that `typed_text` reads `vmpl { value: 0 }` like any message.
_WRAPPER_MESSAGES = {
    "UInt32ValueW": {"value": ("uint32", False)},
    "UInt64ValueW": {"value": ("uint64", False)},
}


def fail(where: str, reason: str) -> ProfileError:
    """A one-line error at `where`."""
    # A document's own names and values appear here: escaped, so the error stays one line.
    return ProfileError([FieldProblem(_printable(where), _printable(reason))])


def _printable(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: repr(m.group())[1:-1], text)


# ---- writing ---------------------------------------------------------------------------------


def text_lines(tree: Mapping[str, Any], schema: Schema, message: str) -> list[str]:
    """`tree`, a `message`, in protobuf text format: one line per field (a wrapper's on one
    line), two spaces of indent a level, bytes and strings quoted with octal escapes."""
    lines: list[str] = []
    _text_lines(tree, schema, message, 0, lines)
    return lines


def _text_lines(
    tree: Mapping[str, Any], schema: Schema, message: str, depth: int, lines: list[str]
) -> None:
    indent = "  " * depth
    for field, (kind, _) in schema.messages[message].items():
        if field not in tree:
            continue
        for value in tree[field] if isinstance(tree[field], list) else [tree[field]]:
            if kind in _WRAPPERS:
                lines.append(f"{indent}{field} {{ value: {value} }}")
            elif kind in schema.messages:
                lines.append(f"{indent}{field} {{")
                _text_lines(value, schema, kind, depth + 1, lines)
                lines.append(f"{indent}}}")
            else:
                lines.append(f"{indent}{field}: {_text_scalar(schema, kind, value)}")


def _text_scalar(schema: Schema, kind: str, value: Any) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind in schema.enums:
        return str(value)
    if kind in ("bytes", "string"):
        raw = value if isinstance(value, bytes) else str(value).encode()
        return f'"{"".join(_escaped(b) for b in raw)}"'
    return str(value)


def _escaped(byte: int) -> str:
    """One byte inside a quoted textproto string: printable ASCII as itself, else octal."""
    return _ESCAPES.get(byte, chr(byte) if 0x20 <= byte < 0x7F else f"\\{byte:03o}")


_ESCAPES = {0x22: '\\"', 0x27: "\\'", 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def _json_name(field: str) -> str:
    """proto3's JSON name: lowerCamelCase of the field name."""
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_of(tree: Mapping[str, Any], schema: Schema, message: str) -> dict[str, Any]:
    """`tree`, a `message`, as proto3 JSON (for json.dumps): JSON names, bytes in base64,
    64-bit integers as strings, wrappers as their value."""
    out: dict[str, Any] = {}
    for field, (kind, repeated) in schema.messages[message].items():
        if field in tree:
            value = tree[field]
            items = [_json_scalar(schema, kind, v) for v in (value if repeated else [value])]
            out[_json_name(field)] = items if repeated else items[0]
    return out


def _json_scalar(schema: Schema, kind: str, value: Any) -> Any:
    if kind in schema.messages:
        return json_of(value, schema, kind)
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind in ("uint64", "UInt64Value"):
        return str(value)  # proto3 JSON writes 64-bit integers as strings
    return value


# ---- reading: the raw document ---------------------------------------------------------------


def load_json(text: str) -> Any:
    """A JSON document, refusing a key given twice."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise fail(key, "given twice")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise fail(f"JSON line {e.lineno} column {e.colno}", e.msg) from None
    except ValueError as e:  # an integer of more digits than Python converts
        raise fail("document", str(e).split(";")[0]) from None
    except RecursionError:
        raise fail("document", "nested too deeply") from None


def parse_text(text: str) -> dict[str, Any]:
    """A textproto document as {field: [(line, value)]}, not yet checked against a schema
    (see _TextParser)."""
    return _TextParser(text).document()


class _TextParser:
    """Protobuf text format, the subset these messages need: fields `name: scalar`,
    `name { ... }` / `name < ... >` / `name: {...}`, lists `[a, b]`, decimal, hex and octal
    integers, identifiers, quoted strings with C escapes, `#` comments, `,`/`;` separators.
    Produces {field: [(line, value)]}, value an int, bytes, identifier str or such a dict."""

    _TOKEN = re.compile(
        r"""(?P<space>[ \t\r\f\v]+|\#[^\n]*)|(?P<newline>\n)
        |(?P<number>-?(?:0[xX][0-9A-Fa-f]+|[0-9]+)(?![\w.]))
        |(?P<ident>[A-Za-z_]\w*)
        |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
        |(?P<punct>[{}<>\[\]:,;])""",
        re.X,
    )

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        line, pos = 1, 0
        while pos < len(text):
            m = self._TOKEN.match(text, pos)
            if m is None:
                raise fail(f"textproto line {line}", f"unexpected {text[pos : pos + 10]!r}")
            kind = m.lastgroup or ""
            if len(self.tokens) > MAX_TOKENS:  # bounds the memory a hostile document takes
                raise fail(f"textproto line {line}", "too many tokens for a policy document")
            if kind == "newline":
                line += 1
            elif kind != "space":
                self.tokens.append((kind, m.group(), line))
            pos = m.end()
        self.pos = 0

    def document(self) -> dict[str, Any]:
        return self._fields(None, 0)

    def _peek(self) -> tuple[str, str, int]:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos]
        last = self.tokens[-1][2] if self.tokens else 1
        return ("end", "", last)

    def _take(self) -> tuple[str, str, int]:
        token = self._peek()
        if token[0] == "end":
            raise fail(f"textproto line {token[2]}", "the document ends early")
        self.pos += 1
        return token

    def _error(self, expected: str) -> ProfileError:
        kind, text, line = self._peek()
        got = "the end" if kind == "end" else repr(text[:20])
        return fail(f"textproto line {line}", f"expected {expected}, got {got}")

    def _fields(self, close: str | None, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise fail(f"textproto line {self._peek()[2]}", "messages nested too deeply")
        out: dict[str, list[tuple[int, Any]]] = {}
        while True:
            kind, text, line = self._peek()
            if kind == "end" and close is None:
                return out
            if kind == "punct" and text == close:
                self.pos += 1
                return out
            if kind != "ident":
                raise self._error(
                    "a field name" if close is None else f"a field name or {close!r}"
                )
            self.pos += 1
            values = out.setdefault(text, [])
            colon = self._peek()[:2] == ("punct", ":")
            self.pos += colon
            if self._peek()[:2] == ("punct", "["):
                self.pos += 1
                while self._peek()[:2] != ("punct", "]"):
                    values.append((line, self._value(depth)))
                    if self._peek()[:2] == ("punct", ","):
                        self.pos += 1
                    elif self._peek()[:2] != ("punct", "]"):
                        raise self._error("',' or ']'")
                self.pos += 1
            elif not colon and self._peek()[1] not in ("{", "<"):
                raise self._error("':' or '{'")
            else:
                values.append((line, self._value(depth)))
            if self._peek()[:2] in (("punct", ","), ("punct", ";")):
                self.pos += 1

    def _value(self, depth: int) -> Any:
        kind, text, line = self._take()
        if kind == "punct" and text in ("{", "<"):
            return self._fields("}" if text == "{" else ">", depth + 1)
        if kind == "number":
            try:  # a leading 0 is octal, as in C
                return int(text, 8 if re.fullmatch("-?0[0-7]+", text) else 0)
            except ValueError:
                raise fail(f"textproto line {line}", f"not an integer: {text[:40]!r}") from None
        if kind == "ident":
            return text
        if kind == "string":
            raw = _unescape(text[1:-1], line)
            while self._peek()[0] == "string":  # adjacent strings concatenate
                raw += _unescape(self._take()[1][1:-1], line)
            return raw
        self.pos -= 1
        raise self._error("a value")


_SIMPLE_ESCAPES = {
    "n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "f": 12, "v": 11, "?": 63,
    "\\": 92, "'": 39, '"': 34,
}  # fmt: skip


def _unescape(body: str, line: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif m := re.match(r"[0-7]{1,3}", body[i + 1 :]):
            if int(m.group(), 8) > 0xFF:
                raise fail(f"textproto line {line}", f"octal escape \\{m.group()} is over 255")
            out.append(int(m.group(), 8))
            i += 1 + m.end()
        elif m := re.match(r"[xX]([0-9A-Fa-f]{1,2})", body[i + 1 :]):
            out.append(int(m.group(1), 16))
            i += 1 + m.end()
        else:
            raise fail(f"textproto line {line}", f"unknown escape \\{nxt}")
    return bytes(out)


# ---- reading: checked against the schema -----------------------------------------------------


def _field(schema: Schema, message: str, name: str, path: str) -> tuple[str, bool]:
    fields = (
        _WRAPPER_MESSAGES[message] if message in _WRAPPER_MESSAGES else schema.messages[message]
    )
    if name not in fields:
        raise fail(f"{path}{name}", f"not a field of {message}")
    return fields[name]


def typed_text(
    raw: Mapping[str, list[tuple[int, Any]]], schema: Schema, message: str, path: str = ""
) -> dict[str, Any]:
    """`raw` (from `parse_text`) checked against `message`'s schema: its tree, {field: value,
    or a list if repeated}. `path` prefixes the field names in errors."""
    out: dict[str, Any] = {}
    for name, items in raw.items():
        kind, repeated = _field(schema, message, name, path)
        where = f"{path}{name}"
        if not repeated and len(items) > 1:
            raise fail(where, f"given {len(items)} times (line {items[1][0]}); it takes one")
        values = [_text_value(schema, kind, value, where, line) for line, value in items]
        out[name] = values if repeated else values[0]
    return out


def _text_value(schema: Schema, kind: str, value: Any, where: str, line: int) -> Any:
    at = f"{where} (textproto line {line})"
    if kind in schema.messages or kind in _WRAPPERS:
        block = _expect_type(value, dict, "a { ... } block", at)
        inner = typed_text(block, schema, kind + "W" if kind in _WRAPPERS else kind, where + ".")
        return inner.get("value", 0) if kind in _WRAPPERS else inner
    if kind == "bool":
        if value in ("true", "True", "t", 1):
            return True
        if value in ("false", "False", "f", 0):
            return False
        raise fail(at, f"expected true or false, got {value!r:.40}")
    if kind in schema.enums:
        return _enum(schema, kind, value, at)
    if kind in ("bytes", "string"):
        raw = _expect_type(value, bytes, "a quoted string", at)
        return raw if kind == "bytes" else _utf8(raw, at)
    return _uint(kind, value, at)


def _expect_type(value: Any, kind: type, what: str, where: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise fail(where, f"expected {what}, got {value!r:.40}")
    return value


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise fail(where, "a string field holds invalid UTF-8") from None


def _uint(kind: str, value: Any, where: str) -> int:
    bits = _UINT_BITS[kind]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits:
        return value
    raise fail(where, f"expected an integer 0..2^{bits}-1, got {value!r:.40}")


def _enum(schema: Schema, kind: str, value: Any, where: str) -> str:
    names = schema.enums[kind]
    if isinstance(value, str) and value in names:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    raise fail(where, f"expected one of {', '.join(names)}, got {value!r:.40}")


def typed_json(raw: Any, schema: Schema, message: str, path: str = "") -> dict[str, Any]:
    """`raw` (from `load_json`) checked against `message`'s schema: its tree, fields by
    their proto names (JSON or proto names accepted), null as absent."""
    if not isinstance(raw, dict):
        raise fail(path.rstrip(".") or "document", f"expected a JSON object ({message})")
    by_json = {_json_name(name): name for name in schema.messages[message]}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = by_json.get(str(key), str(key))
        kind, repeated = _field(schema, message, name, path)
        where = f"{path}{name}"
        if name in out:
            raise fail(where, "given twice (by its JSON and its proto name)")
        if value is None:  # proto3 JSON: null is the default
            continue
        if repeated:
            items = _expect_type(value, list, "a JSON list", where)
            out[name] = [
                _json_value(schema, kind, v, f"{where}[{i}]") for i, v in enumerate(items)
            ]
        else:
            out[name] = _json_value(schema, kind, value, where)
    return out


def _json_value(schema: Schema, kind: str, value: Any, where: str) -> Any:
    if kind in schema.messages:
        return typed_json(value, schema, kind, where + ".")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise fail(where, f"expected true or false, got {value!r:.40}")
    if kind == "string":
        return _expect_type(value, str, "a JSON string", where)
    if kind == "bytes":
        text = _expect_type(value, str, "a base64 string", where)
        try:  # proto3 JSON accepts standard and URL-safe base64, padded or not
            bare = text.rstrip("=").replace("-", "+").replace("_", "/")
            return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise fail(where, f"not base64: {text!r:.40}") from None
    if kind in schema.enums:
        return _enum(schema, kind, value, where)
    if isinstance(value, str) and re.fullmatch("[0-9]{1,20}", value):
        value = int(value)  # 64-bit integers come as strings; either is accepted
    return _uint(kind, value, where)
