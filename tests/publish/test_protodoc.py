"""Protobuf text format and proto3 JSON documents (publish/protodoc.py), on a small schema of
their own; the go-sev-guest / go-tdx-guest documents are tested, against protobuf itself, in
test_gopolicy.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmlaunch.errors import ProfileError
from cvmlaunch.publish import protodoc
from cvmlaunch.publish.protodoc import Schema

SCHEMA = Schema(
    messages={
        "t.M": {
            "n": ("uint64", False),
            "flag": ("bool", False),
            "name": ("string", False),
            "blobs": ("bytes", True),
            "small": ("UInt32Value", False),
            "kind": ("t.Kind", False),
            "sub": ("t.S", False),
        },
        "t.S": {"x": ("uint32", False)},
    },
    enums={"t.Kind": ("KIND_ZERO", "KIND_ONE")},
)
TREE: dict[str, Any] = {
    "n": 1 << 40,
    "flag": True,
    "name": "naïve",
    "blobs": [b'"\\\n\x00\xff', b"ab"],
    "small": 7,
    "kind": "KIND_ONE",
    "sub": {"x": 3},
}


def from_text(lines: list[str]) -> dict[str, Any]:
    return protodoc.typed_text(protodoc.parse_text("\n".join(lines)), SCHEMA, "t.M")


def from_json(doc: dict[str, Any]) -> dict[str, Any]:
    return protodoc.typed_json(protodoc.load_json(json.dumps(doc)), SCHEMA, "t.M")


def test_text_is_written_in_schema_order_with_octal_escapes() -> None:
    assert protodoc.text_lines(TREE, SCHEMA, "t.M") == [
        "n: 1099511627776",
        "flag: true",
        'name: "na\\303\\257ve"',
        'blobs: "\\"\\\\\\n\\000\\377"',
        'blobs: "ab"',
        "small { value: 7 }",
        "kind: KIND_ONE",
        "sub {",
        "  x: 3",
        "}",
    ]
    assert from_text(protodoc.text_lines(TREE, SCHEMA, "t.M")) == TREE


def test_json_uses_json_names_base64_and_strings_for_64_bits() -> None:
    doc = protodoc.json_of(
        {"n": 5, "blobs": [b"\xff"], "small": 2, "sub": {"x": 1}}, SCHEMA, "t.M"
    )
    assert doc == {"n": "5", "blobs": ["/w=="], "small": 2, "sub": {"x": 1}}
    assert from_json(protodoc.json_of(TREE, SCHEMA, "t.M")) == TREE


def test_text_reads_what_protobuf_writes_too() -> None:
    text = (
        "# c\nn: 0x10 flag: t; blobs: ['a' \"b\", '\\x41\\101'] small < value: 010 > sub: {x: 1}"
    )
    assert protodoc.typed_text(protodoc.parse_text(text), SCHEMA, "t.M") == {
        "n": 16,
        "flag": True,
        "blobs": [b"ab", b"AA"],
        "small": 8,
        "sub": {"x": 1},
    }


def test_json_reads_proto_names_url_safe_base64_and_null() -> None:
    doc = {"n": 9, "blobs": ["-_8"], "small": None, "kind": 1}
    assert from_json(doc) == {"n": 9, "blobs": [b"\xfb\xff"], "kind": "KIND_ONE"}


@given(st.lists(st.binary(max_size=40), max_size=4))
def test_any_bytes_round_trip(blobs: list[bytes]) -> None:
    tree = {"blobs": blobs} if blobs else {}
    assert from_text(protodoc.text_lines(tree, SCHEMA, "t.M")) == tree
    assert from_json(protodoc.json_of(tree, SCHEMA, "t.M")) == tree


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1", "bogus: not a field of t.M"),
        ("small { bogus: 1 }", "small.bogus: not a field of UInt32ValueW"),
        ("n: 1 n: 2", "n: given 2 times (line 1); it takes one"),
        ("sub { x: 4294967296 }", "sub.x (textproto line 1): expected an integer 0..2^32-1"),
        ("kind: KIND_TWO", "kind (textproto line 1): expected one of KIND_ZERO, KIND_ONE"),
        ("name: '\\xff'", "name (textproto line 1): a string field holds invalid UTF-8"),
        ("\n\nsub { x: 1", "textproto line 3: expected a field name or '}', got the end"),
        ("'a\\nb': 1", "textproto line 1: expected a field name, got \"'a\\\\nb'\""),
        ("sub {" * 10, "textproto line 1: messages nested too deeply"),
    ],
)
def test_malformed_text_is_one_line_naming_where(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        protodoc.typed_text(protodoc.parse_text(text), SCHEMA, "t.M")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"n": 1, "n": 2}', "n: given twice"),
        ('{"n": true}', "n: expected an integer 0..2^64-1, got True"),
        ('{"blobs": "AA=="}', "blobs: expected a JSON list"),
        ('{"blobs": ["!"]}', "blobs[0]: not base64"),
        ('{"sub": []}', "sub: expected a JSON object (t.S)"),
        ('{"a\\u2028b": 1}', "a\\u2028b: not a field of t.M"),
        ('{"n": 1', "JSON line 1 column 8"),
    ],
)
def test_malformed_json_is_one_line_naming_where(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        protodoc.typed_json(protodoc.load_json(text), SCHEMA, "t.M")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and "\u2028" not in str(caught.value)
