"""go-sev-guest `check.Config` and go-tdx-guest `checkconfig.Config`: the documents their
`check` tools read (`-config FILE`, and `validate.PolicyToOptions` in a Go verifier), as
textproto (PublishOptions.text) or protojson, written and read without a protobuf runtime
(publish/protodoc.py).

What the documents can say, from the upstream protos and validate packages:

* SEV-SNP: one `measurement`, `host_data`, `report_data`, `family_id`, `image_id`, a `vmpl`
  wrapper, `minimum_guest_svn`, `minimum_tcb` / `minimum_launch_tcb` (TCB_VERSION words
  compared byte by byte) and lists of trusted ID / author key digests. `policy` is a bound
  (the most permissive policy allowed), not the exact value our audit compares.
* TDX: `td_quote_body_policy` with `mr_td` or a list `any_mr_td`, exactly four `rtmrs` (an
  empty entry is not checked, which is how an unclaimed RTMR3 is written), `td_attributes`
  and `xfam` as their 8 little-endian quote bytes, `mr_config_id`, `mr_owner`,
  `mr_owner_config`, `mr_seam`, `minimum_tee_tcb_svn`, `report_data`.

A matrix becomes one document when its configurations differ in one value the proto holds
a list of (a TD's MRTD; an SNP guest's trusted ID or author key digest), else a one-line
ProfileError says how many configurations differ and in what: publish one per configuration
(`publish --output-dir`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from itertools import product as cartesian
from typing import Any

from cvmlaunch.abi.snp_report import TCB_LAYOUTS, product_of_cpuid
from cvmlaunch.guest.spec import Technology
from cvmlaunch.publish import PublishOptions, Reference, json_document
from cvmlaunch.publish.protodoc import (
    Schema,
    fail,
    json_of,
    load_json,
    parse_text,
    text_lines,
    typed_json,
    typed_text,
)

MAX_DOCUMENT_SIZE = 4 << 20  # thousands of MRTDs; a policy is a few KiB

# ---- the schemas (from check.proto, sevsnp.proto, checkconfig.proto) ------------------------
# Message -> {field: (kind, repeated)}, in field-number order: the order Go writes them in.
# A kind is a scalar type, a wrapper ("UInt32Value"/"UInt64Value"), the enum, or a message.

_SEV_PRODUCT_NAMES = ("SEV_PRODUCT_UNKNOWN", "SEV_PRODUCT_MILAN", "SEV_PRODUCT_GENOA")
_ENUMS = {"SevProductName": (*_SEV_PRODUCT_NAMES, "SEV_PRODUCT_TURIN")}
_ONE, _MANY = False, True
_MESSAGES: dict[str, dict[str, tuple[str, bool]]] = {
    "check.Config": {
        "root_of_trust": ("check.RootOfTrust", _ONE),
        "policy": ("check.Policy", _ONE),
    },
    "check.RootOfTrust": {
        "product": ("string", _ONE),
        "cabundle_paths": ("string", _MANY),
        "cabundles": ("string", _MANY),
        "check_crl": ("bool", _ONE),
        "disallow_network": ("bool", _ONE),
        "product_line": ("string", _ONE),
    },
    "check.Policy": {
        "minimum_guest_svn": ("uint32", _ONE),
        "policy": ("uint64", _ONE),
        "family_id": ("bytes", _ONE),
        "image_id": ("bytes", _ONE),
        "vmpl": ("UInt32Value", _ONE),
        "minimum_tcb": ("uint64", _ONE),
        "minimum_launch_tcb": ("uint64", _ONE),
        "platform_info": ("UInt64Value", _ONE),
        "require_author_key": ("bool", _ONE),
        "report_data": ("bytes", _ONE),
        "measurement": ("bytes", _ONE),
        "host_data": ("bytes", _ONE),
        "report_id": ("bytes", _ONE),
        "report_id_ma": ("bytes", _ONE),
        "chip_id": ("bytes", _ONE),
        "minimum_build": ("uint32", _ONE),
        "minimum_version": ("string", _ONE),
        "permit_provisional_firmware": ("bool", _ONE),
        "require_id_block": ("bool", _ONE),
        "trusted_author_keys": ("bytes", _MANY),
        "trusted_author_key_hashes": ("bytes", _MANY),
        "trusted_id_keys": ("bytes", _MANY),
        "trusted_id_key_hashes": ("bytes", _MANY),
        "product": ("sevsnp.SevProduct", _ONE),
    },
    "sevsnp.SevProduct": {
        "name": ("SevProductName", _ONE),
        "stepping": ("uint32", _ONE),
        "machine_stepping": ("UInt32Value", _ONE),
    },
    "checkconfig.Config": {
        "policy": ("checkconfig.Policy", _ONE),
        "root_of_trust": ("checkconfig.RootOfTrust", _ONE),
    },
    "checkconfig.Policy": {
        "header_policy": ("checkconfig.HeaderPolicy", _ONE),
        "td_quote_body_policy": ("checkconfig.TDQuoteBodyPolicy", _ONE),
    },
    "checkconfig.HeaderPolicy": {
        "minimum_qe_svn": ("uint32", _ONE),
        "minimum_pce_svn": ("uint32", _ONE),
        "qe_vendor_id": ("bytes", _ONE),
    },
    "checkconfig.TDQuoteBodyPolicy": {
        "minimum_tee_tcb_svn": ("bytes", _ONE),
        "mr_seam": ("bytes", _ONE),
        "td_attributes": ("bytes", _ONE),
        "xfam": ("bytes", _ONE),
        "mr_td": ("bytes", _ONE),
        "mr_config_id": ("bytes", _ONE),
        "mr_owner": ("bytes", _ONE),
        "mr_owner_config": ("bytes", _ONE),
        "rtmrs": ("bytes", _MANY),
        "report_data": ("bytes", _ONE),
        "any_mr_td": ("bytes", _MANY),
        "enable_td_debug_check": ("bool", _ONE),
    },
    "checkconfig.RootOfTrust": {
        "cabundle_paths": ("string", _MANY),
        "cabundles": ("string", _MANY),
        "check_crl": ("bool", _ONE),
        "get_collateral": ("bool", _ONE),
    },
}
_SCHEMA = Schema(_MESSAGES, _ENUMS)
_ROOT = {Technology.SEV_SNP: "check.Config", Technology.TDX: "checkconfig.Config"}
_TOOL = {Technology.SEV_SNP: "go-sev-guest", Technology.TDX: "go-tdx-guest"}

# Byte lengths go-sev-guest / go-tdx-guest require (validate.checkOptionsLengths).
_SIZES = {
    "measurement": 48,
    "host_data": 32,
    "report_data": 64,
    "family_id": 16,
    "image_id": 16,
    "id_key_digest": 48,
    "author_key_digest": 48,
    "td_attributes": 8,
    "xfam": 8,
    "mrconfigid": 48,
    "mrowner": 48,
    "mrownerconfig": 48,
    "rtmr": 48,
    "mrseam": 48,
    "min_tee_tcb_svn": 16,
}
# Expectation -> its field of TDQuoteBodyPolicy, for the byte strings copied as they are.
_TD_BYTES = {
    "mrseam": "mr_seam",
    "mrconfigid": "mr_config_id",
    "mrowner": "mr_owner",
    "mrownerconfig": "mr_owner_config",
    "min_tee_tcb_svn": "minimum_tee_tcb_svn",
    "report_data": "report_data",
}
_SNP_BYTES = ("measurement", "host_data", "report_data", "family_id", "image_id")
_SNP_OTHER = ("policy", "vmpl", "min_guest_svn", "min_tcb", "id_key_digest", "author_key_digest")
_RTMRS = 4  # go-tdx-guest takes all four or none
# The values a proto list can hold for a matrix: the only field its documents may differ in.
_LISTS = {
    Technology.SEV_SNP: {
        "policy.trusted_id_key_hashes": "policy.trusted_id_key_hashes",
        "policy.trusted_author_key_hashes": "policy.trusted_author_key_hashes",
    },
    Technology.TDX: {"policy.td_quote_body_policy.mr_td": "policy.td_quote_body_policy.any_mr_td"},
}

# ---- writing ---------------------------------------------------------------------------------


def write(references: Sequence[Reference], options: PublishOptions) -> bytes:
    """One check.Config (SEV-SNP) or checkconfig.Config (TDX) document for `references`."""
    if not references:
        raise fail("references", "none given; nothing to publish")
    technology = references[0].technology
    if technology not in _ROOT:
        reason = f"go-sev-guest and go-tdx-guest check SEV-SNP and TDX guests, not {technology}"
        raise fail("technology", reason)
    if any(r.technology is not technology for r in references):
        raise fail("technology", "the references mix technologies; publish each on its own")
    trees = [_snp_tree(r) if technology is Technology.SEV_SNP else _td_tree(r) for r in references]
    tree = _merged(trees, technology)
    if not options.text:
        return (json.dumps(json_of(tree, _SCHEMA, _ROOT[technology]), indent=1) + "\n").encode()
    lines = _header(references, technology) + text_lines(tree, _SCHEMA, _ROOT[technology])
    return ("\n".join(lines) + "\n").encode()


def _value(expect: Mapping[str, Any], name: str, size: int | None = None) -> Any:
    """expect[name], checked to be bytes of `size` (after padding report data) or an int."""
    value = expect[name]
    if size is None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"expect.{name}", f"expected a non-negative integer, got {value!r}")
        return value
    if name == "report_data" and isinstance(value, bytes) and 0 < len(value) <= size:
        value = value.ljust(size, b"\0")  # as the audit compares it
    if not isinstance(value, bytes) or len(value) != size:
        raise fail(f"expect.{name}", f"expected {size} bytes, got {value!r:.80}")
    return value


def _unexpressed(reference: Reference, known: set[str]) -> None:
    """Refuse a claim the document cannot carry: leaving it out would weaken the check."""
    extra = sorted(set(reference.expect) - known)
    if extra:
        tool = _TOOL[reference.technology]
        raise fail(f"expect.{extra[0]}", f"{tool}'s policy has no field for this claim")


def _snp_tree(reference: Reference) -> dict[str, Any]:
    expect = reference.expect
    # allow_debug is carried by the policy's DEBUG bit: go-sev-guest's `policy` is a bound.
    _unexpressed(reference, {*_SNP_BYTES, *_SNP_OTHER, "allow_debug"})
    policy: dict[str, Any] = {}
    for name in _SNP_BYTES:
        if name in expect:
            policy[name] = _value(expect, name, _SIZES[name])
    if "policy" not in expect:
        # PolicyToOptions refuses a zero policy (its reserved bit 17 must be set).
        raise fail("expect.policy", "go-sev-guest needs the guest policy; the reference has none")
    policy["policy"] = _bounded(expect, "policy", 64)
    if "vmpl" in expect:
        policy["vmpl"] = _bounded(expect, "vmpl", 2)
    if "min_guest_svn" in expect:
        policy["minimum_guest_svn"] = _bounded(expect, "min_guest_svn", 32)
    product = _product(reference)
    if product is None and "fmc" in expect.get("min_tcb", ()):
        product = "Turin"  # FMC exists from Turin on; the document must name that layout
    if "min_tcb" in expect:
        tcb = _packed_tcb(expect["min_tcb"], product)
        policy["minimum_tcb"] = policy["minimum_launch_tcb"] = tcb
    if "id_key_digest" in expect:
        policy["require_id_block"] = True
        policy["trusted_id_key_hashes"] = [_value(expect, "id_key_digest", 48)]
    if "author_key_digest" in expect:
        policy["require_author_key"] = True
        policy["trusted_author_key_hashes"] = [_value(expect, "author_key_digest", 48)]
    tree: dict[str, Any] = {"policy": policy}
    if product is not None:  # which AMD root the report's VCEK chains to; default Milan
        tree["root_of_trust"] = {"product_line": product}
    return tree


def _bounded(expect: Mapping[str, Any], name: str, bits: int) -> int:
    value: int = _value(expect, name)
    if value >> bits:
        raise fail(f"expect.{name}", f"{value:#x} does not fit the document's {bits}-bit field")
    return value


def _product(reference: Reference) -> str | None:
    """The AMD product line of the configuration's CPU model (its CPUID signature), which
    fixes where the TCB_VERSION components sit; None if unknown."""
    signature = reference.config.get("cpu_signature")
    try:
        eax = int(signature, 16) if isinstance(signature, str) else None
    except ValueError:
        eax = None
    if eax is None:
        return None
    base_family = eax >> 8 & 0xF
    family = base_family + (eax >> 20 & 0xFF if base_family == 0xF else 0)
    model = (eax >> 16 & 0xF) << 4 | (eax >> 4 & 0xF)
    return product_of_cpuid(family, model)


def _packed_tcb(minimum: object, product: str | None) -> int:
    """min_tcb as the TCB_VERSION word go-sev-guest compares byte by byte, in `product`'s
    layout (Turin moved the components)."""
    if not isinstance(minimum, Mapping) or not minimum:
        raise fail("expect.min_tcb", f"expected {{component: 0..255}}, got {minimum!r:.80}")
    layout = TCB_LAYOUTS[product or "Milan"]  # go-sev-guest's default product line
    word = 0
    for name, value in minimum.items():
        if name not in layout:
            raise fail(f"expect.min_tcb.{name}", f"not a TCB component of {product or 'Milan'}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
            raise fail(f"expect.min_tcb.{name}", f"expected 0..255, got {value!r}")
        word |= value << 8 * layout[name]
    return word


def _td_tree(reference: Reference) -> dict[str, Any]:
    expect = reference.expect
    known = {"measurement", "td_attributes", "xfam", "rtmrs", "allow_debug", *_TD_BYTES}
    if "rtmrs" in expect:
        known.add("events")  # the RTMRs claimed bind the events that extend them
    _unexpressed(reference, known)
    body: dict[str, Any] = {}
    for name, field in _TD_BYTES.items():
        if name in expect:
            body[field] = _value(expect, name, _SIZES[name])
    for name in ("td_attributes", "xfam"):
        if name in expect:
            body[name] = _bounded(expect, name, 64).to_bytes(8, "little")  # as the quote has it
    if "measurement" in expect:
        body["mr_td"] = _value(expect, "measurement", 48)
    if "rtmrs" in expect:
        body["rtmrs"] = _rtmr_list(expect["rtmrs"])
    # go-tdx-guest refuses a debuggable TD only when asked to; our audit always does unless
    # the claim allows it.
    if expect.get("allow_debug") is not True:
        body["enable_td_debug_check"] = True
    return {"policy": {"td_quote_body_policy": body}}


def _rtmr_list(rtmrs: object) -> list[bytes]:
    if not isinstance(rtmrs, Mapping) or not rtmrs:
        raise fail("expect.rtmrs", f"expected {{index: 48 bytes}}, got {rtmrs!r:.80}")
    out = [b""] * _RTMRS  # an empty entry is not checked: the claims name only some RTMRs
    for index, value in rtmrs.items():
        if isinstance(index, bool) or index not in range(_RTMRS):
            raise fail("expect.rtmrs", f"RTMR index {index!r} is not 0..3")
        if not isinstance(value, bytes) or len(value) != _SIZES["rtmr"]:
            raise fail(f"expect.rtmrs.{index}", f"expected 48 bytes, got {value!r:.80}")
        out[index] = value
    return out


def _merged(trees: list[dict[str, Any]], technology: Technology) -> dict[str, Any]:
    """The one document for `trees`: equal ones are one, and ones differing only in a
    value the proto keeps a list of become that list."""
    distinct: list[dict[str, Any]] = []
    for tree in trees:
        if tree not in distinct:
            distinct.append(tree)
    flat = [dict(_flatten(tree)) for tree in distinct]
    differing = sorted({p for f in flat for p in {*flat[0], *f} if f.get(p) != flat[0].get(p)})
    lists = _LISTS[technology]
    listable = len(differing) == 1 and differing[0] in lists
    if len(distinct) > 1 and not (listable and all(differing[0] in f for f in flat)):
        tool = _TOOL[technology]
        where = ", ".join(differing)
        raise fail(
            "references",
            f"{len(distinct)} configurations differ in {where}; a {tool} policy holds one "
            "value there: publish one document per configuration (--output-dir DIR)",
        )
    tree = distinct[0]
    if len(distinct) > 1:
        path = differing[0]
        values: list[bytes] = []
        for f in flat:
            for v in f[path] if isinstance(f[path], tuple) else (f[path],):
                if v not in values:
                    values.append(v)
        tree = _without(tree, path)
        _put(tree, lists[path], values)
    return tree


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", tuple(value) if isinstance(value, list) else value


def _without(tree: Mapping[str, Any], path: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    out = dict(tree)
    if rest:
        out[head] = _without(out[head], rest)
    else:
        del out[head]
    return out


def _put(tree: dict[str, Any], path: str, value: Any) -> None:
    *heads, last = path.split(".")
    for head in heads:
        tree = tree.setdefault(head, {})
    tree[last] = value


def _header(references: Sequence[Reference], technology: Technology) -> list[str]:
    """Comments naming the configurations and where the values came from (textproto only:
    protojson has no comments and its parsers refuse unknown fields)."""
    tool = _TOOL[technology]
    message = _ROOT[technology]
    lines = [f"# {tool} {message} for its check tool (-config FILE.textproto)"]
    for n, reference in enumerate(references, 1):
        digest = reference.expect.get("measurement")
        shown = f" measurement {digest.hex()}" if isinstance(digest, bytes) else ""
        lines.append(f"# configuration {n}: {_one_line(reference.config)}{shown}")
    provenance = {json.dumps(r.provenance, sort_keys=True, default=str) for r in references}
    lines += [f"# provenance: {p}" for p in sorted(provenance) if p != "{}"]
    return lines


def _one_line(doc: Mapping[str, Any]) -> str:
    # json.dumps escapes control characters, so a value cannot end the comment line.
    return " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in doc.items() if v is not None)


# ---- reading ---------------------------------------------------------------------------------


def looks_like(data: bytes) -> bool:
    """Whether `data` is a check.Config / checkconfig.Config: a JSON object or textproto
    whose top-level fields are the Config's, with a policy."""
    if len(data) > MAX_DOCUMENT_SIZE:
        return False
    text = data.decode("utf-8", "replace").lstrip()
    if text.startswith("{"):
        try:
            doc = json_document(text)
        except ValueError:
            return False
        keys = {"policy", "rootOfTrust", "root_of_trust"}
        return isinstance(doc, dict) and "policy" in doc and set(doc) <= keys
    names = re.findall(r"^\s*([A-Za-z_]\w*)\s*[:{<]", re.sub(r"#[^\n]*", "", text), re.M)
    return "policy" in names and names[0] in ("policy", "root_of_trust")


def read(data: bytes) -> list[Reference]:
    """The references a document says a report or quote must match: one per alternative it
    accepts (each MRTD of any_mr_td, each trusted key digest). Its checks that are not audit
    expectations are listed in provenance["not_audited"], approximations in ["notes"]."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise fail("document", f"{len(data)} bytes; a policy document is at most 4 MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise fail("document", f"not UTF-8 (byte {e.start})") from None
    is_json = text.lstrip()[:1] in ("{", "[")  # a textproto starts with a field name
    raw = load_json(text) if is_json else parse_text(text)
    technology = _technology_of(raw, is_json)
    message = _ROOT[technology]
    tree = typed_json(raw, _SCHEMA, message) if is_json else typed_text(raw, _SCHEMA, message)
    if technology is Technology.SEV_SNP:
        return _snp_references(tree)
    return _td_references(tree)


_TD_ONLY = {"header_policy", "headerPolicy", "td_quote_body_policy", "tdQuoteBodyPolicy"}


def _technology_of(raw: Any, is_json: bool) -> Technology:
    """SEV-SNP or TDX, from the policy's fields (the two Policy messages share none)."""
    if not isinstance(raw, dict):
        raise fail("document", "expected a JSON object with a policy")
    policy = raw.get("policy")
    if is_json:
        names = set(policy) if isinstance(policy, dict) else set()
    else:
        names = {n for item in policy or [] if isinstance(item[1], dict) for n in item[1]}
    if not names:
        raise fail("policy", "missing or empty: the document checks nothing")
    return Technology.TDX if names & _TD_ONLY else Technology.SEV_SNP


def _sized(tree: Mapping[str, Any], field: str, size: int, where: str) -> bytes | None:
    value: bytes | None = tree.get(field)
    if value is None or value == b"":  # empty bytes: not checked
        return None
    if len(value) != size:
        raise fail(f"{where}{field}", f"expected {size} bytes, got {len(value)}")
    return value


def _snp_references(tree: Mapping[str, Any]) -> list[Reference]:
    policy: dict[str, Any] = dict(tree.get("policy", {}))
    root: dict[str, Any] = dict(tree.get("root_of_trust", {}))
    expect: dict[str, Any] = {}
    notes: list[str] = []
    for name in _SNP_BYTES:
        value = _sized(policy, name, _SIZES[name], "policy.")
        if value is not None:
            expect[name] = value
        policy.pop(name, None)
    for field, name in (("policy", "policy"), ("minimum_guest_svn", "min_guest_svn")):
        number = policy.pop(field, 0)
        if number:  # 0 is proto3's "not set"
            expect[name] = number
    if "vmpl" in policy:
        vmpl = policy.pop("vmpl")
        if vmpl > 3:
            raise fail("policy.vmpl", f"expected 0..3, got {vmpl}")
        expect["vmpl"] = vmpl
    words = policy.pop("minimum_tcb", 0), policy.pop("minimum_launch_tcb", 0)
    tcb = _read_tcb(*words, _read_product(root, policy), notes) if any(words) else {}
    if tcb:
        expect["min_tcb"] = tcb
    keys = _key_alternatives(policy, notes)
    unread = {f"policy.{k}": v for k, v in policy.items()}
    unread |= {f"root_of_trust.{k}": v for k, v in root.items()}
    provenance = _read_provenance("go-sev-guest check.Config", unread, notes)
    return [
        Reference(Technology.SEV_SNP, expect | alternative, {}, provenance) for alternative in keys
    ]


_PRODUCT_OF_NAME = {
    "SEV_PRODUCT_MILAN": "Milan",
    "SEV_PRODUCT_GENOA": "Genoa",
    "SEV_PRODUCT_TURIN": "Turin",
}


def _read_product(root: Mapping[str, Any], policy: Mapping[str, Any]) -> str:
    """The product line whose TCB layout the document's TCB words use (go-sev-guest's
    default is Milan)."""
    named = _PRODUCT_OF_NAME.get(policy.get("product", {}).get("name", ""))
    product = root.get("product_line") or named or "Milan"
    if product not in TCB_LAYOUTS:
        reason = f"expected one of {', '.join(TCB_LAYOUTS)}, got {product!r:.40}"
        raise fail("root_of_trust.product_line", reason)
    return str(product)


def _read_tcb(minimum: int, launch: int, product: str, notes: list[str]) -> dict[str, int]:
    """One min_tcb for both words: the audit holds every TCB of the report to it."""
    layout = TCB_LAYOUTS[product]
    words = [w for w in (minimum, launch) if w]
    if not words:
        return {}
    if len(words) == 2 and minimum != launch:
        notes.append(
            "minimum_tcb and minimum_launch_tcb differ; min_tcb is their component-wise minimum"
        )
    elif minimum != launch:
        which = "minimum_tcb" if minimum else "minimum_launch_tcb"
        notes.append(f"only {which} is set; min_tcb holds every TCB of the report to it")
    parts = {name: min(w >> 8 * byte & 0xFF for w in words) for name, byte in layout.items()}
    return {name: value for name, value in parts.items() if value}


def _key_alternatives(policy: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    """The ID-block claims, one dict per accepted combination. go-sev-guest checks the key
    lists only when asked to (require_author_key / require_id_block)."""
    author = policy.pop("require_author_key", False)
    id_block = policy.pop("require_id_block", False) or author
    ids = policy.pop("trusted_id_key_hashes", [])
    authors = policy.pop("trusted_author_key_hashes", [])
    for field in ("trusted_id_keys", "trusted_author_keys"):
        if policy.get(field) and id_block:
            raise fail(
                f"policy.{field}", "certificates are not read; give their SHA-384 in *_hashes"
            )
    if not id_block:
        if ids or authors:
            policy.update(trusted_id_key_hashes=ids, trusted_author_key_hashes=authors)
        return [{}]
    for field, values in (("trusted_id_key_hashes", ids), ("trusted_author_key_hashes", authors)):
        for n, value in enumerate(values):
            if len(value) != 48:
                raise fail(f"policy.{field}[{n}]", f"expected 48 bytes, got {len(value)}")
    if not ids and not authors:
        raise fail("policy.require_id_block", "set, but no trusted key digest is given")
    if ids and authors:
        notes.append(
            "go-sev-guest accepts a trusted author key in place of a trusted ID key; "
            "the references require both"
        )
    id_choices: list[dict[str, Any]] = [{"id_key_digest": v} for v in ids] or [{}]
    author_choices: list[dict[str, Any]] = [{"author_key_digest": v} for v in authors] or [{}]
    return [a | b for a, b in cartesian(id_choices, author_choices)]


def _td_references(tree: Mapping[str, Any]) -> list[Reference]:
    policy: dict[str, Any] = dict(tree.get("policy", {}))
    body: dict[str, Any] = dict(policy.pop("td_quote_body_policy", {}))
    where = "policy.td_quote_body_policy."
    expect: dict[str, Any] = {}
    for name, field in _TD_BYTES.items():
        value = _sized(body, field, _SIZES[name], where)
        if value is not None:
            expect[name] = value
        body.pop(field, None)
    for name in ("td_attributes", "xfam"):
        value = _sized(body, name, 8, where)
        body.pop(name, None)
        if value is not None:
            expect[name] = int.from_bytes(value, "little")
    rtmrs = body.pop("rtmrs", [])
    if rtmrs and len(rtmrs) != _RTMRS:
        raise fail(f"{where}rtmrs", f"expected 4 entries (or none), got {len(rtmrs)}")
    claimed = {}
    for index, value in enumerate(rtmrs):
        if value and len(value) != _SIZES["rtmr"]:
            raise fail(f"{where}rtmrs[{index}]", f"expected 48 bytes or empty, got {len(value)}")
        if value:
            claimed[index] = value
    if claimed:
        expect["rtmrs"] = claimed
    if not body.pop("enable_td_debug_check", False):
        expect["allow_debug"] = True  # go-tdx-guest then accepts a debuggable TD
    mrtds = _mrtd_alternatives(body, where)
    unread = {f"policy.{k}": v for k, v in policy.items()}
    unread |= {f"{where}{k}": v for k, v in body.items()}
    unread |= {f"root_of_trust.{k}": v for k, v in tree.get("root_of_trust", {}).items()}
    provenance = _read_provenance("go-tdx-guest checkconfig.Config", unread, [])
    return [Reference(Technology.TDX, expect | mrtd, {}, provenance) for mrtd in mrtds]


def _mrtd_alternatives(body: dict[str, Any], where: str) -> list[dict[str, Any]]:
    one = _sized(body, "mr_td", 48, where)
    body.pop("mr_td", None)
    many = body.pop("any_mr_td", [])
    for n, value in enumerate(many):
        if len(value) != 48:
            raise fail(f"{where}any_mr_td[{n}]", f"expected 48 bytes, got {len(value)}")
    if one is not None and many and one not in many:
        raise fail(f"{where}any_mr_td", "does not hold mr_td: no quote can match both")
    choices = [one] if one is not None else list(dict.fromkeys(many))
    return [{"measurement": v} for v in choices] or [{}]


def _read_provenance(what: str, unread: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"format": what}
    shown = {k: _shown(v) for k, v in unread.items() if v not in (b"", "", [], {}, False, 0)}
    if shown:
        out["not_audited"] = dict(_flatten(shown))
    if notes:
        out["notes"] = notes
    return out


def _shown(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    return value
