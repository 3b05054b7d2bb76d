"""`cvmlaunch idblock`: sign (or check) an SEV-SNP ID block for a launch digest, given or
measured from a profile, and print what QEMU takes and what the report will carry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cvmlaunch.cli.common import EXIT_MISMATCH, EXIT_OK, json_text
from cvmlaunch.errors import FieldProblem, ProfileError
from cvmlaunch.guest.argtypes import hex_bytes, integer

if TYPE_CHECKING:
    from cvmlaunch.guest.spec import IdBlockConfig
    from cvmlaunch.measure.idblock import SignedIdBlock

# sev-snp-measure's snp-create-id-block signs POLICY 0x30000 (SMT allowed, bit 17 set).
_PEER_POLICY = 0x30000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Sign an SEV-SNP ID block over a launch digest and policy with an ECDSA P-384 ID key "
        "(and author key), deterministically (RFC 6979) unless --random-k; or, with --block "
        "and --auth, check a block signed elsewhere. The digest and policy are --ld and "
        "--policy, or those of PROFILE (measured), whose [snp.id_block] also gives the keys "
        "where the flags do not. Every reason the firmware would refuse the block at "
        "SNP_LAUNCH_FINISH is reported at once (exit 1)."
    )
    p.add_argument("profile", type=Path, nargs="?", help="guest profile: LD and policy")
    p.add_argument("--ld", metavar="DIGEST",
                   help="the launch digest: 96 hex digits or base64")  # fmt: skip
    p.add_argument("--policy", type=integer, metavar="INT",
                   help=f"POLICY (default: the profile's, or {_PEER_POLICY:#x})")  # fmt: skip
    k = p.add_argument_group("signing")
    k.add_argument("--id-key", type=Path, metavar="PEM", help="ECDSA P-384 ID key (PEM/DER)")
    k.add_argument("--author-key", type=Path, metavar="PEM", help="ECDSA P-384 author key")
    for who in ("id-key", "author-key"):
        key = who.replace("-", " ")
        k.add_argument(f"--{who}-passphrase-file", type=Path, metavar="FILE",
                       help=f"the {key}'s passphrase (its first line)")  # fmt: skip
        k.add_argument(f"--{who}-passphrase-env", metavar="VAR",
                       help=f"the variable holding the {key}'s passphrase")  # fmt: skip
    k.add_argument("--family-id", type=hex_bytes(16), metavar="HEX", help="FAMILY_ID (16 bytes)")
    k.add_argument("--image-id", type=hex_bytes(16), metavar="HEX", help="IMAGE_ID (16 bytes)")
    k.add_argument("--guest-svn", type=integer, metavar="N", help="GUEST_SVN (default 0)")
    k.add_argument("--random-k", action="store_true",
                   help="sign with a random nonce (as sev-snp-measure does)")  # fmt: skip
    c = p.add_argument_group("checking a signed block")
    c.add_argument("--block", metavar="BASE64", help="a signed ID block (QEMU's id-block)")
    c.add_argument("--auth", metavar="BASE64", help="its ID auth (QEMU's id-auth)")
    o = p.add_argument_group("output")
    o.add_argument("--output-format", choices=("text", "qemu", "sev-snp-measure"),
                   default="text",
                   help="text; qemu: the sev-snp-guest properties; sev-snp-measure: its "
                   "snp-create-id-block lines")  # fmt: skip
    o.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cvmlaunch.measure.idblock import id_block_for, problems

    ld, policy, config, names = _inputs(args)
    if config.block is not None and config.auth is not None:
        from cvmlaunch.measure.idblock import SignedIdBlock

        signed = SignedIdBlock(config.block, config.auth, config.author_key_enabled)
        found = problems(signed, ld=ld, policy=policy)
        if args.json:
            doc = {"ok": not found, "problems": [str(p) for p in found], **signed.to_json()}
            print(json_text(doc))
        else:
            for problem in found:
                print(f"refused: {problem}")
            if not found:
                print("the firmware will accept this ID block")
        return EXIT_MISMATCH if found else EXIT_OK
    signed = id_block_for(config, ld=ld, policy=policy, deterministic=not args.random_k,
                          names=names)  # fmt: skip
    if args.json:
        print(json_text(signed.to_json()))
    else:
        print(_text(signed, args.output_format))
    return EXIT_OK


def _inputs(args: argparse.Namespace) -> tuple[bytes, int, IdBlockConfig, dict[str, str]]:
    """The launch digest, the policy and the ID block configuration the arguments give, and
    the flags that gave its fields (errors name them)."""
    import base64

    from cvmlaunch.guest.spec import IdBlockConfig

    config, ld, policy = IdBlockConfig(), None, _PEER_POLICY
    if args.profile is not None:
        from cvmlaunch.guest.profile import load_profile
        from cvmlaunch.guest.spec import Technology
        from cvmlaunch.measure import measure
        from cvmlaunch.plan import build_plan

        spec = load_profile(args.profile).to_spec()
        if spec.technology is not Technology.SEV_SNP:
            reason = f"ID blocks sign SEV-SNP launches; this guest is {spec.technology}"
            raise ProfileError([FieldProblem("profile", reason)])
        ld, policy = measure(build_plan(spec)).digest, spec.snp_policy
        config = spec.id_block or config
    if args.ld is not None:
        from cvmlaunch.cli.measure import expected_digest

        try:
            ld = expected_digest(args.ld, 48)
        except ProfileError as e:
            raise ProfileError([FieldProblem("--ld", e.problems[0].reason)]) from None
    if ld is None:
        raise ProfileError([FieldProblem("--ld", "give the launch digest, or a PROFILE")])
    if args.policy is not None:
        policy = args.policy
    flags = {
        "id_key": args.id_key,
        "author_key": args.author_key,
        "id_key_passphrase_file": args.id_key_passphrase_file,
        "id_key_passphrase_env": args.id_key_passphrase_env,
        "author_key_passphrase_file": args.author_key_passphrase_file,
        "author_key_passphrase_env": args.author_key_passphrase_env,
        "family_id": args.family_id,
        "image_id": args.image_id,
        "guest_svn": args.guest_svn,
    }
    for name in ("block", "auth"):
        text = getattr(args, name)
        if text is not None:
            try:
                flags[name] = base64.b64decode(text, validate=True)
            except ValueError:
                raise ProfileError([FieldProblem(f"--{name}", "expected base64")]) from None
    given = {k: v for k, v in flags.items() if v is not None}
    if "id_key" in given or "block" in given:  # the flags name the block: not the profile's
        config = IdBlockConfig()
    from cvmlaunch.guest.spec import checked_id_block

    names = {name: f"--{name.replace('_', '-')}" for name in given}
    try:  # the spec's checks of an ID block, named by the flags that gave it
        return ld, policy, checked_id_block(config._replace(**given)), names
    except ProfileError as e:
        problems = [_as_flag(p, names) for p in e.problems]
        raise ProfileError(problems) from None


def _as_flag(problem: FieldProblem, names: dict[str, str]) -> FieldProblem:
    """`problem` named by its flag where a flag gave the value (else by the profile key)."""
    flag = names.get(problem.field.removeprefix("snp.id_block."))
    return problem if flag is None else FieldProblem(flag, problem.reason)


def _text(signed: SignedIdBlock, output_format: str) -> str:
    import base64

    if output_format == "sev-snp-measure":
        lines = [
            f"id-block={base64.b64encode(signed.block).decode()},"
            f"id-auth={base64.b64encode(signed.auth).decode()}",
            f"id_key_hash: {base64.b64encode(signed.id_key_digest).decode()}",
        ]
        author = signed.author_key_digest
        if author is not None:
            lines.append(f"author_key: {base64.b64encode(author).decode()}")
        return "\n".join(lines)
    if output_format == "qemu":
        return ",".join(f"{k}={v}" for k, v in signed.qemu().items())
    from cvmlaunch.cli.render import id_block_text

    return f"LD:                  {signed.id_block.ld.hex()}\n{id_block_text(signed)}"
