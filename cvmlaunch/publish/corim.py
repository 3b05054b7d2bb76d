"""CoRIM (draft-ietf-rats-corim): reference values as a Concise Reference Integrity Manifest.

One document carries one technology, because a CoRIM names one profile:

* SEV-SNP follows AMD's profile draft (`tag:amd.com,2025:snp-corim-profile`): each report
  field is a measurement whose `mkey` is the draft's number for it, valued as the draft says
  (MEASUREMENT 641 as a SHA-384 digest, POLICY 2 as 8 little-endian raw bytes, ...). The
  target environment is the AMD-SP, whose class the draft ties to the key that signs the
  report (VCEK: by chip, VLEK: by CSP); a launch measurement does not depend on it, so each
  configuration is claimed for both classes.
* TDX follows our own profile, `tag:cvmlaunch,2026:tdx-td-corim-profile`, because Intel's
  profile covers the platform (SEAM, QE, PCE) and no public profile claims a TD's MRTD or
  RTMRs. Its environment is the class {vendor "Intel Corporation", model "TDX TD"}; its
  `mkey`s number the TD quote body's fields in order (docs/corim-tdx-profile.md):

      1 MRSEAM         digests [[7, 48 bytes]]        (2 MRSIGNERSEAM, 3 SEAMATTRIBUTES,
      4 TDATTRIBUTES   raw-value 560(8 bytes LE)       0 TEE_TCB_SVN: not claimed)
      5 XFAM           raw-value 560(8 bytes LE)
      6 MRTD           digests [[7, 48 bytes]]
      7 MRCONFIGID     raw-value 560(48 bytes)
      8 MROWNER        raw-value 560(48 bytes)
      9 MROWNERCONFIG  raw-value 560(48 bytes)
      10 RTMR0-3       integrity-registers {index: [[7, 48 bytes]]}, only those claimed
      11 REPORTDATA    raw-value 560(64 bytes)
      (no mkey)        flags {is-debug: false} when debug must be off

Each configuration (each entry of a matrix) is one CoMID whose reference triples hold its
claims: a verifier accepts a guest when any one CoMID's triple matches, which is what a
matrix means. The CoMID's tag-id carries the configuration point, so `read` gives it back.

With a signing key the CoRIM is a COSE_Sign1 (tag 18, publish/cose.py) whose protected
header holds the content type and the corim-meta (signer, signature validity); the
expiration is also the CoRIM's own validity, so an unsigned document keeps it.

`read` takes what we write and what others write in these profiles, and refuses any claim
it cannot turn into an audit expectation, naming where: dropping a claim would let an audit
pass what the document forbids.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import cbor2

from cvmlaunch.abi.snp_report import TCB_LAYOUTS
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.technology import Technology
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.publish import PublishOptions, Reference, cose, utc
from cvmlaunch.publish.cose import TAG_SIGN1

SNP_PROFILE = "tag:amd.com,2025:snp-corim-profile"
TDX_PROFILE = "tag:cvmlaunch,2026:tdx-td-corim-profile"

# CBOR tags (CoRIM, RFC 9052, RFC 8610, RFC 9090).
TAG_CORIM, TAG_COMID = 501, 506  # COSE_Sign1's 18: publish/cose.py
TAG_URI, TAG_OID, TAG_BYTES, TAG_SVN, TAG_MIN_SVN, TAG_TIME = 32, 111, 560, 552, 553, 1
SHA384 = 7  # IANA Named Information hash algorithm: sha-384

# The draft writes its class OIDs with the DER header (06 09); RFC 9090 leaves it out. We
# write the draft's bytes (verifiers compare the class byte for byte) and read both.
SNP_BY_CHIP = bytes.fromhex("06092b060104019c780301")
SNP_BY_CSP = bytes.fromhex("06092b060104019c780302")
TDX_CLASS = {1: "Intel Corporation", 2: "TDX TD"}
TURIN_FAMILY = 0x1A

# Input bounds: a reference document is small; these stop a hostile one early.
MAX_DOCUMENT = 8 << 20
MAX_DEPTH = 24
TAG_ID_PREFIX = "cvmlaunch:"


def _fail(where: str, reason: str) -> ProfileError:
    return ProfileError([FieldProblem(where, reason)])


# ---- values <-> measurement-values maps ---------------------------------------------------


class Claim(NamedTuple):
    """How one expectation is a measurement: its mkey and its value codec."""

    mkey: int
    encode: Callable[[Any, str], dict[int, Any]]
    decode: Callable[[Any, str], Any]


def _exact_bytes(value: Any, size: int, where: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise _fail(where, f"expected {size} bytes, got {shown}")
    return value


def _uint(value: Any, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise _fail(where, f"expected an integer 0..{high:#x}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _only(mval: Any, key: int, where: str) -> Any:
    """The one entry of a measurement-values map that a claim of ours may have."""
    if not isinstance(mval, Mapping) or set(mval) != {key}:
        keys = sorted(map(str, mval)) if isinstance(mval, Mapping) else _short(mval)
        raise _fail(where, f"expected a measurement-values map with key {key} only, got {keys}")
    return mval[key]


def _tagged(value: Any, tag: int, where: str) -> Any:
    if not isinstance(value, cbor2.CBORTag) or value.tag != tag:
        raise _fail(where, f"expected tag {tag}, got {_short(value)}")
    return value.value


def _digest(size: int) -> Claim:
    """digests: [[sha-384, value]]."""

    def encode(value: Any, where: str) -> dict[int, Any]:
        return {2: [[SHA384, _exact_bytes(value, size, where)]]}

    def decode(mval: Any, where: str) -> bytes:
        entries = _only(mval, 2, where)
        if not (isinstance(entries, list | tuple) and len(entries) == 1):
            raise _fail(where, "expected digests with one SHA-384 digest")
        entry = entries[0]
        if not (isinstance(entry, list | tuple) and len(entry) == 2 and entry[0] == SHA384):
            raise _fail(where, f"expected [7 (sha-384), digest], got {_short(entry)}")
        return _exact_bytes(entry[1], size, where)

    return Claim(-1, encode, decode)


def _raw(size: int, *, integer: bool = False) -> Claim:
    """raw-value 560(bytes): a field's bytes as the report has them (an integer: LE)."""

    def encode(value: Any, where: str) -> dict[int, Any]:
        if integer:
            value = _uint(value, (1 << 8 * size) - 1, where).to_bytes(size, "little")
        elif size == 64 and isinstance(value, bytes) and len(value) <= 64:
            value = value.ljust(64, b"\0")  # REPORT_DATA as the guest pads it
        return {4: cbor2.CBORTag(TAG_BYTES, _exact_bytes(value, size, where))}

    def decode(mval: Any, where: str) -> Any:
        raw = _exact_bytes(_tagged(_only(mval, 4, where), TAG_BYTES, where), size, where)
        return int.from_bytes(raw, "little") if integer else raw

    return Claim(-1, encode, decode)


def _min_svn32() -> Claim:
    def encode(value: Any, where: str) -> dict[int, Any]:
        return {1: cbor2.CBORTag(TAG_MIN_SVN, _uint(value, 0xFFFFFFFF, where))}

    def decode(mval: Any, where: str) -> int:
        inner = _tagged(_only(mval, 1, where), TAG_MIN_SVN, where)
        return _uint(inner, 0xFFFFFFFF, where)

    return Claim(-1, encode, decode)


def _int(high: int) -> Claim:
    """int-range (15) as a single integer: the draft's raw-int."""

    def encode(value: Any, where: str) -> dict[int, Any]:
        return {15: _uint(value, high, where)}

    def decode(mval: Any, where: str) -> int:
        return _uint(_only(mval, 15, where), high, where)

    return Claim(-1, encode, decode)


def _registers() -> Claim:
    """integrity-registers {index: [[sha-384, value]]}: the RTMRs a reference claims."""
    one = _digest(48)

    def encode(value: Any, where: str) -> dict[int, Any]:
        if not isinstance(value, Mapping) or not value:
            raise _fail(where, "expected {index 0..3: 48 bytes}, at least one")
        out = {}
        for index in sorted(value, key=lambda i: (not isinstance(i, int), i)):
            _uint(index, 3, f"{where}[{index!r}]")
            out[index] = one.encode(value[index], f"{where}[{index}]")[2]
        return {14: out}

    def decode(mval: Any, where: str) -> dict[int, bytes]:
        registers = _only(mval, 14, where)
        if not isinstance(registers, Mapping) or not registers:
            raise _fail(where, "expected integrity-registers {index: digests}")
        return {
            _uint(i, 3, f"{where}.{_short(i)}"): one.decode({2: d}, f"{where}.{i}")
            for i, d in registers.items()
        }

    return Claim(-1, encode, decode)


def _at(mkey: int, claim: Claim) -> Claim:
    return claim._replace(mkey=mkey)


# Expectation name -> claim, per technology (the draft's mkeys; ours for a TD).
SNP_CLAIMS = {
    "min_guest_svn": _at(1, _min_svn32()),
    "policy": _at(2, _raw(8, integer=True)),
    "family_id": _at(3, _raw(16)),
    "image_id": _at(4, _raw(16)),
    "vmpl": _at(5, _int(3)),
    "report_data": _at(640, _raw(64)),
    "measurement": _at(641, _digest(48)),
    # The draft's text says bytes48, its byte slice R[0xC0:0xE0] 32: HOST_DATA is 32 bytes.
    "host_data": _at(642, _digest(32)),
    "id_key_digest": _at(643, _digest(48)),
    "author_key_digest": _at(644, _digest(48)),
}
TDX_CLAIMS = {
    "mrseam": _at(1, _digest(48)),
    "td_attributes": _at(4, _raw(8, integer=True)),
    "xfam": _at(5, _raw(8, integer=True)),
    "measurement": _at(6, _digest(48)),
    "mrconfigid": _at(7, _raw(48)),
    "mrowner": _at(8, _raw(48)),
    "mrownerconfig": _at(9, _raw(48)),
    "rtmrs": _at(10, _registers()),
    "report_data": _at(11, _raw(64)),
}
# The report's TCB_VERSIONs a min_tcb bounds (as audit checks them: current, reported,
# committed, launch) and CPUID_FAM_ID, which tells the TCB word's layout.
TCB_MKEYS = (6, 647, 3329, 3968)
FAMILY_MKEY = 648


def _tcb_word(minimum: Any, where: str) -> tuple[int, bool]:
    """min_tcb as the draft's uint64 TCB_VERSION, and whether it is Turin's layout (the only
    one with an fmc component). The draft compares it as one number, not per component."""
    if not isinstance(minimum, Mapping) or not minimum:
        raise _fail(where, "expected {component: 0..255}")
    turin = "fmc" in minimum
    layout = TCB_LAYOUTS["Turin" if turin else "Milan"]
    word = 0
    for name, value in minimum.items():
        if name not in layout:
            raise _fail(where, f"expected components of {', '.join(layout)}, got {name!r}")
        word |= _uint(value, 0xFF, f"{where}.{name}") << 8 * layout[name]
    return word, turin


def _tcb_parts(word: int, turin: bool) -> dict[str, int]:
    layout = TCB_LAYOUTS["Turin" if turin else "Milan"]
    parts = {name: word >> 8 * byte & 0xFF for name, byte in layout.items()}
    return {name: value for name, value in parts.items() if value}


# ---- write --------------------------------------------------------------------------------


def write(references: Sequence[Reference], options: PublishOptions) -> bytes:
    """A CoRIM of `references` (all of one technology), COSE-signed with
    `options.signing_key` when given."""
    if not references:
        raise _fail("references", "nothing to publish")
    technologies = {ref.technology for ref in references}
    if len(technologies) > 1:
        shown = ", ".join(sorted(map(str, technologies)))
        raise _fail("references", f"one CoRIM names one profile; got {shown}")
    technology = references[0].technology
    if technology not in (Technology.SEV_SNP, Technology.TDX):
        raise _fail("technology", f"CoRIM profiles exist for sev-snp and tdx, not {technology}")
    profile = SNP_PROFILE if technology is Technology.SEV_SNP else TDX_PROFILE
    tags = [cbor2.CBORTag(TAG_COMID, _dumps(_comid(i, ref))) for i, ref in enumerate(references)]
    corim: dict[int, Any] = {
        0: TAG_ID_PREFIX + hashlib.sha256(_dumps(tags)).hexdigest()[:32],
        1: tags,
        3: cbor2.CBORTag(TAG_URI, profile),
        5: [{0: _tool(references), 2: [1]}],  # manifest-creator
    }
    validity = None if options.expiration is None else _validity(options.expiration)
    if validity is not None:
        corim[4] = validity
    unsigned = _dumps(cbor2.CBORTag(TAG_CORIM, corim))
    if options.signing_key is None:
        return unsigned
    return cose.sign(unsigned, options.signing_key, validity)  # the signature's validity too


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _tool(references: Sequence[Reference]) -> str:
    from cvmlaunch import __version__

    tool = references[0].provenance.get("tool")
    return tool if isinstance(tool, str) and tool else f"cvmlaunch {__version__}"


def _validity(expiration: datetime) -> dict[int, Any]:
    expiration = utc(expiration)
    return {1: cbor2.CBORTag(TAG_TIME, int(expiration.timestamp()))}  # not-after


def _comid(index: int, ref: Reference) -> dict[int, Any]:
    where = f"references[{index}]"
    claims = _claims(ref, where)
    if ref.technology is Technology.SEV_SNP:
        envs = [_snp_env(SNP_BY_CHIP), _snp_env(SNP_BY_CSP)]
    else:
        envs = [{0: dict(TDX_CLASS)}]
    triples = [[env, claims] for env in envs]
    try:
        config = json.dumps(
            dict(ref.config), sort_keys=True, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise _fail(f"{where}.config", f"not JSON-ready: {exc}") from None
    # Unique per claims and configuration: verifiers key stored CoMIDs by tag-id.
    digest = hashlib.sha256(_dumps(triples) + config.encode()).hexdigest()[:32]
    return {1: {0: f"{TAG_ID_PREFIX}{digest}:{config}"}, 4: {0: triples}}


def _snp_env(class_id: bytes) -> dict[int, Any]:
    return {0: {0: cbor2.CBORTag(TAG_OID, class_id)}}


def _claims(ref: Reference, where: str) -> list[dict[int, Any]]:
    """The measurement maps of one reference, in mkey order (flags first)."""
    snp = ref.technology is Technology.SEV_SNP
    table = SNP_CLAIMS if snp else TDX_CLAIMS
    out: list[tuple[int, dict[int, Any]]] = []
    for name, value in ref.expect.items():
        at = f"{where}.expect.{name}"
        if name in table:
            claim = table[name]
            out.append((claim.mkey, {0: claim.mkey, 1: claim.encode(value, at)}))
        elif name == "allow_debug":
            if value is not False:
                # Debug allowed is the absence of a claim, which reads back as the default
                # (debug forbidden): refuse rather than publish a stricter reference.
                raise _fail(at, "a CoRIM can only claim debug off (false)")
            out.append((-1, {1: {3: {3: False}}}))  # flags: is-debug false
        elif name == "events" and not snp and "rtmrs" in ref.expect:
            continue  # the RTMRs claimed bind the events that extend them
        elif name == "min_tcb" and snp:
            word, turin = _tcb_word(value, at)
            for mkey in TCB_MKEYS:
                out.append((mkey, {0: mkey, 1: {1: cbor2.CBORTag(TAG_MIN_SVN, word)}}))
            if turin:
                out.append((FAMILY_MKEY, {0: FAMILY_MKEY, 1: {15: TURIN_FAMILY}}))
        else:
            profile = SNP_PROFILE if snp else TDX_PROFILE
            raise _fail(at, f"no claim for it in {profile}")
    if not out:
        raise _fail(f"{where}.expect", "no claim to publish")
    return [m for _, m in sorted(out, key=lambda item: item[0])]


# ---- read ---------------------------------------------------------------------------------


def looks_like(data: bytes) -> bool:
    """Whether `data` starts as a CoRIM: tag 501, or tag 18 (COSE_Sign1) on a 4-array."""
    return data[:3] == b"\xd9\x01\xf5" or data[:2] == b"\xd2\x84"


def read(data: bytes) -> list[Reference]:
    """The references of a CoRIM, signed or not (a signature is checked by `verify`)."""
    document = _loads(data, "corim")
    if isinstance(document, cbor2.CBORTag) and document.tag == TAG_SIGN1:
        payload = cose.envelope(document, _loads).payload
        return _references(_loads(payload, "COSE_Sign1.payload"), "corim")
    return _references(document, "corim")


def verify(data: bytes, public_key_pem: bytes) -> list[Reference]:
    """The references of a signed CoRIM whose signature verifies with `public_key_pem` (a
    PEM public key or certificate); AttestationError if it does not or is unsigned."""
    payload = cose.verify(_loads(data, "corim"), public_key_pem, _loads)
    return _references(_loads(payload, "COSE_Sign1.payload"), "corim")


def _raw_tag(tag: int) -> Callable[[Any, bool], Any]:
    return lambda value, _immutable: cbor2.CBORTag(tag, value)


def _refused(_value: Any, _immutable: bool) -> Any:
    raise ValueError("value sharing and string references are not used in a CoRIM")


# cbor2 would turn these tags into Python objects (dates, decimals, regexes, shared, that is
# cyclic, containers); a CoRIM needs none of them, so they stay tags or are refused.
_DECODERS: dict[int, Any] = {
    **{tag: _raw_tag(tag) for tag in (0, 1, 2, 3, 4, 5, 30, 35, 36, 37, 52, 54, 258, 260, 261)},
    **{tag: _refused for tag in (25, 28, 29, 256)},
}


def _loads(data: bytes, where: str) -> Any:
    """One CBOR item that is all of `data`, within the bounds; ProfileError otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _fail(where, f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DOCUMENT:
        raise _fail(where, f"{len(data)} bytes; a CoRIM here is at most {MAX_DOCUMENT}")
    if not data:
        raise _fail(where, "empty")
    import io

    stream = io.BytesIO(data)
    try:
        decoder = cbor2.CBORDecoder(
            stream, semantic_decoders=_DECODERS, max_depth=MAX_DEPTH, allow_duplicate_keys=False
        )
        value = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise _fail(where, f"not well-formed CBOR ({reason})") from None
    if stream.tell() != len(data):
        raise _fail(where, f"{len(data) - stream.tell()} bytes after the CBOR item")
    return value


def _references(document: Any, where: str) -> list[Reference]:
    corim = _tagged(document, TAG_CORIM, where)
    if not isinstance(corim, Mapping):
        raise _fail(where, "expected a corim-map")
    technology = _profile(corim.get(3), f"{where}.profile")
    tags = corim.get(1)
    if not isinstance(tags, list | tuple) or not tags:
        raise _fail(f"{where}.tags", "expected a non-empty array of tags")
    out: list[Reference] = []
    for i, tag in enumerate(tags):
        at = f"{where}.tags[{i}]"
        if not (isinstance(tag, cbor2.CBORTag) and tag.tag == TAG_COMID):
            raise _fail(at, f"expected a CoMID (tag 506), got {_short(tag)[:30]}")
        if not isinstance(tag.value, bytes):
            raise _fail(at, "expected the CoMID as a byte string")
        out += _comid_references(_loads(tag.value, at), technology, at)
    return out


def _profile(value: Any, where: str) -> Technology:
    # The draft's example wraps the profile in an array (early CoRIM); CoRIM now has one
    # tagged URI; some writers use bare text. All name the same thing.
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    if isinstance(value, cbor2.CBORTag) and value.tag == TAG_URI:
        value = value.value
    if value == SNP_PROFILE:
        return Technology.SEV_SNP
    if value == TDX_PROFILE:
        return Technology.TDX
    raise _fail(where, f"expected {SNP_PROFILE!r} or {TDX_PROFILE!r}, got {_short(value)}")


def _comid_references(comid: Any, technology: Technology, where: str) -> list[Reference]:
    if not isinstance(comid, Mapping):
        raise _fail(where, "expected a concise-mid-tag map")
    identity = comid.get(1)
    tag_id = identity.get(0) if isinstance(identity, Mapping) else None
    config = _config(tag_id, f"{where}.tag-identity")
    triples = comid.get(4)
    if not isinstance(triples, Mapping) or set(triples) - {0} or not triples:
        keys = sorted(map(str, triples)) if isinstance(triples, Mapping) else "none"
        raise _fail(f"{where}.triples", f"expected reference triples (0) only, got {keys}")
    records = triples[0]
    if not isinstance(records, list | tuple) or not records:
        raise _fail(f"{where}.triples.reference-triples", "expected a non-empty array")
    out: list[Reference] = []
    seen: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        at = f"{where}.triples.reference-triples[{i}]"
        if not (isinstance(record, list | tuple) and len(record) == 2):
            raise _fail(at, "expected [environment, [measurements]]")
        _environment(record[0], technology, f"{at}.environment")
        expect = _expectations(record[1], technology, f"{at}.claims")
        # The same claims for each AMD-SP class are one reference.
        if expect not in seen:
            seen.append(expect)
            out.append(Reference(technology, expect, dict(config), {}))
    return out


def _config(tag_id: Any, where: str) -> dict[str, Any]:
    """The configuration point of one of our CoMIDs (empty for anyone else's)."""
    if not isinstance(tag_id, str):
        if isinstance(tag_id, bytes) and len(tag_id) == 16:
            return {}  # a UUID tag-id
        raise _fail(where, f"expected a tag-id, got {_short(tag_id)}")
    match = re.fullmatch(re.escape(TAG_ID_PREFIX) + r"[0-9a-f]{32}:(\{.*\})", tag_id, re.S)
    if match is None:
        return {}
    try:
        config = json.loads(match.group(1))
    except (ValueError, RecursionError):
        config = None
    scalar = (str, int, float, bool, type(None))
    if not isinstance(config, Mapping) or not all(isinstance(v, scalar) for v in config.values()):
        raise _fail(where, "expected a JSON object of scalars after the tag-id's digest")
    return dict(config)


def _environment(env: Any, technology: Technology, where: str) -> None:
    if not isinstance(env, Mapping) or set(env) != {0}:
        raise _fail(where, "expected a class only (no instance or group)")
    klass = env[0]
    if technology is Technology.TDX:
        if klass != TDX_CLASS:
            raise _fail(where, f"expected class {TDX_CLASS} ({TDX_PROFILE})")
        return
    if not isinstance(klass, Mapping) or set(klass) != {0}:
        raise _fail(where, "expected a class-id only (the draft forbids model and the rest)")
    oid = _tagged(klass[0], TAG_OID, f"{where}.class-id")
    if oid not in (SNP_BY_CHIP, SNP_BY_CSP, SNP_BY_CHIP[2:], SNP_BY_CSP[2:]):
        raise _fail(f"{where}.class-id", "expected AMD's by-chip or by-CSP class OID")


def _expectations(claims: Any, technology: Technology, where: str) -> dict[str, Any]:
    if not isinstance(claims, list | tuple) or not claims:
        raise _fail(where, "expected a non-empty array of measurements")
    snp = technology is Technology.SEV_SNP
    by_mkey = {c.mkey: name for name, c in (SNP_CLAIMS if snp else TDX_CLAIMS).items()}
    expect: dict[str, Any] = {}
    tcb: dict[int, int] = {}
    family: int | None = None
    for i, measurement in enumerate(claims):
        at = f"{where}[{i}]"
        if not isinstance(measurement, Mapping) or not {1} <= set(measurement) <= {0, 1}:
            raise _fail(at, "expected a measurement-map {mkey, mval} (no authorized-by)")
        mval = measurement[1]
        if 0 not in measurement:
            if mval != {3: {3: False}}:
                raise _fail(f"{at}.mval", "without mkey, expected only flags {is-debug: false}")
            _put(expect, "allow_debug", False, at)
            continue
        mkey = measurement[0]
        if isinstance(mkey, bool) or not isinstance(mkey, int):
            raise _fail(f"{at}.mkey", f"expected a number, got {_short(mkey)}")
        at = f"{at}(mkey {mkey})"
        if mkey in by_mkey:
            name = by_mkey[mkey]
            table = SNP_CLAIMS if snp else TDX_CLAIMS
            _put(expect, name, table[name].decode(mval, at), at)
        elif snp and mkey in TCB_MKEYS:
            inner = _tagged(_only(mval, 1, at), TAG_MIN_SVN, at)
            if mkey in tcb:
                raise _fail(at, "claimed twice")
            tcb[mkey] = _uint(inner, (1 << 64) - 1, at)
        elif snp and mkey == FAMILY_MKEY:
            family = _uint(_only(mval, 15, at), 0xFF, at)
        else:
            raise _fail(at, "a claim cvmlaunch audit has no expectation for")
    if family is not None and (not tcb or family not in (0x19, TURIN_FAMILY)):
        raise _fail(where, f"CPUID_FAM_ID {family:#x}: only read as a min_tcb layout hint")
    if tcb:
        words = set(tcb.values())
        if len(words) > 1:
            raise _fail(where, "the TCB minimums differ; audit's min_tcb bounds all four alike")
        parts = _tcb_parts(words.pop(), family == TURIN_FAMILY)
        if parts:
            expect["min_tcb"] = parts
    if not expect:
        raise _fail(where, "no claim")
    return expect


def _put(expect: dict[str, Any], name: str, value: Any, where: str) -> None:
    if name in expect:
        raise _fail(where, f"{name} claimed twice")
    expect[name] = value
