"""ID blocks end to end: `[snp.id_block]` in a profile through measure, launch (the sim's
PSP checks them as the firmware does), audit expectations, and the `idblock` command,
against sev-snp-measure's snp-create-id-block run side by side."""

from __future__ import annotations

import base64
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cvmlaunch.abi.idblock import AUTHOR_KEY, ID_BLOCK_SIG, IdAuth, IdBlock
from cvmlaunch.attest import audit
from cvmlaunch.attest.expect import for_spec
from cvmlaunch.errors import KvmError
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.measure import idblock as ib
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from cvmlaunch.sim import SimKernel
from tests.attest_fakes import MILAN_VEK, fake_certs, signed_report
from tests.conftest import CliRunner

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "idblock"
ID_KEY, AUTHOR = (
    VECTORS / "virtee-sev" / "test_id_key.pem",
    VECTORS / "virtee-sev" / "test_auth_key.pem",
)
SSM = VECTORS / "sev-snp-measure"
SSM_LD = "B28FLQi9p6cAqipgjFyqawDrrSl7bWioWkWx5mmlWLZ+G5HShKMB/mPE+gdQRn7t"


def profile(tmp_path: Path, debian_ovmf: Path, id_block: str, policy: int = 0x30000) -> Path:
    shutil.copy(ID_KEY, tmp_path / "id.pem")
    shutil.copy(AUTHOR, tmp_path / "author.pem")
    path = tmp_path / "guest.toml"
    path.write_text(
        f'schema_version = 1\ntechnology = "sev-snp"\nvcpus = 2\n'
        f'[firmware]\npath = "{debian_ovmf}"\n[cpu]\nname = "EPYC-Milan"\n'
        f"[snp]\npolicy = {policy:#x}\n[snp.id_block]\n{id_block}"
    )
    return path


SIGNING = (
    'id_key = "id.pem"\nauthor_key = "author.pem"\nimage_id = "' + "ab" * 16 + '"\nguest_svn = 3\n'
)


def test_measure_signs_over_the_digest_it_computes(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    path = profile(tmp_path, debian_ovmf, SIGNING)
    r = cli("measure", path, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    block = IdBlock.unpack(base64.b64decode(doc["id_block"]["qemu"]["id-block"]))
    assert block == IdBlock(bytes.fromhex(doc["measurement"]), bytes(16), b"\xab" * 16, 3, 0x30000)
    assert doc["id_block"]["id_key_digest"] == ib.read_key(ID_KEY, key="k").digest.hex()
    assert doc["id_block"]["author_key_digest"] == ib.read_key(AUTHOR, key="k").digest.hex()
    assert doc["id_block"]["qemu"]["author-key-enabled"] == "on"
    # The same bytes every time (RFC 6979), so a build reproduces.
    assert json.loads(cli("measure", path, "--json").out)["id_block"] == doc["id_block"]


def test_a_sim_launch_passes_the_psp_checks_and_audit_expects_the_block(
    tmp_path: Path, debian_ovmf: Path
) -> None:
    spec = load_profile(profile(tmp_path, debian_ovmf, SIGNING)).to_spec()
    plan = build_plan(spec)
    record = launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    assert record.verdict is Verdict.MATCH
    assert spec.id_block is not None
    signed = ib.id_block_for(spec.id_block, ld=record.expected, policy=0x30000)
    assert record.doc["id_block"] == signed.to_json()
    expect = for_spec(spec, measure(plan).digest)
    assert expect.id_key_digest == ib.read_key(ID_KEY, key="k").digest
    assert expect.author_key_digest == ib.read_key(AUTHOR, key="k").digest
    assert (expect.image_id, expect.family_id, expect.min_guest_svn) == (
        b"\xab" * 16,
        bytes(16),
        3,
    )
    fields: dict[str, Any] = {
        "measurement": record.expected,
        "policy": 0x30000,
        "id_key_digest": expect.id_key_digest,
        "author_key_digest": expect.author_key_digest,
        "image_id": b"\xab" * 16,
        "guest_svn": 3,
    }
    # A fake VEK under a fake ASK: the chain to AMD's pinned ARK fails, the claims are ours.
    certs, now = fake_certs("Milan", MILAN_VEK), datetime(2025, 9, 1, tzinfo=UTC)
    result = audit(signed_report(fields), certs=certs, expect=expect, now=now)
    checked = {c.name: c.ok for c in result.checks if c.name.startswith("guest.")}
    assert checked == dict.fromkeys(
        ("guest.measurement", "guest.policy", "guest.host_data", "guest.family_id",
         "guest.image_id", "guest.id_key_digest", "guest.author_key_digest", "guest.guest_svn"),
        True,
    ) | {k: True for k in checked if k not in ("guest.measurement",)}  # fmt: skip
    assert all(checked.values()) and {"guest.id_key_digest", "guest.guest_svn"} <= set(checked)
    other = {**fields, "id_key_digest": bytes(48), "guest_svn": 2}
    result = audit(signed_report(other), certs=certs, expect=expect, now=now)
    failed = {c.name for c in result.failures if c.name.startswith("guest.")}
    assert failed == {"guest.id_key_digest", "guest.guest_svn"}


def forged(mutate: str) -> Any:
    """id_block_for as a careless signer would have it: no pre-launch check, and one thing
    wrong, for the firmware model to find."""
    real = ib.id_block_for

    def sign(config: Any, *, ld: bytes, policy: int, deterministic: bool = True) -> Any:
        good = real(config, ld=ld, policy=policy)
        block, auth = bytearray(good.block), bytearray(good.auth)
        author = good.author_key_enabled
        if mutate == "ld":
            block = bytearray(IdBlock.unpack(bytes(block))._replace(ld=bytes(48)).pack())
        elif mutate == "policy":
            block = bytearray(IdBlock.unpack(bytes(block))._replace(policy=0x30001).pack())
        elif mutate == "signature":
            auth[ID_BLOCK_SIG + 5] ^= 1
        elif mutate == "author-missing":
            auth[AUTHOR_KEY : AUTHOR_KEY + 0x404] = bytes(0x404)
        elif mutate == "algorithm":
            auth[0] = 2
        if mutate in ("ld", "policy"):  # re-signed: only the value is wrong
            id_key, _ = ib.keys(config)
            assert id_key.private is not None
            sig = ib.sign(id_key.private, bytes(block))
            auth = bytearray(IdAuth.unpack(bytes(auth))._replace(id_block_sig=sig).pack())
        return ib.SignedIdBlock(bytes(block), bytes(auth), author)

    return sign


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        ("ld", "BAD_MEASUREMENT"),
        ("policy", "POLICY_FAILURE"),
        ("signature", "BAD_SIGNATURE"),
        ("author-missing", "INVALID_PARAM"),
        ("algorithm", "INVALID_PARAM"),
    ],
)
def test_the_sim_psp_refuses_as_the_firmware_does(
    mutate: str, status: str, tmp_path: Path, debian_ovmf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = build_plan(load_profile(profile(tmp_path, debian_ovmf, SIGNING)).to_spec())
    monkeypatch.setattr(ib, "id_block_for", forged(mutate))
    with pytest.raises(KvmError) as e:
        launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    assert (e.value.call, e.value.errno_name) == (
        "KVM_MEMORY_ENCRYPT_OP(SNP_LAUNCH_FINISH)",
        "EIO",
    )
    assert e.value.status == status
    assert f"SNP_LAUNCH_FINISH) failed with EIO, firmware status {status} (" in str(e.value)


def test_a_given_block_is_checked_before_launch_all_at_once(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    other = ib.sign_id_block(IdBlock(bytes(48), policy=0x30001), ib.read_key(ID_KEY, key="k"))
    given = (f'block = "{base64.b64encode(other.block).decode()}"\n'
             f'auth = "{base64.b64encode(other.auth).decode()}"\n')  # fmt: skip
    path = profile(tmp_path, debian_ovmf, given)
    # launch refuses before any VM exists; measure reports it as a failed check.
    r = cli("launch", path, "--backend", "sim")
    assert r.code == 2 and r.out == "", r.out
    assert r.err.startswith("cvmlaunch: error: ") and len(r.err.splitlines()) == 1
    assert "snp.id_block.ld: the ID block's LD is 0000" in r.err
    assert "BAD_MEASUREMENT" in r.err and "snp.id_block.policy" in r.err
    r = cli("measure", path, "--json")
    assert r.code == 1, r.err
    refused = json.loads(r.out)["id_block"]["refused"]
    assert [p.split(":")[0] for p in refused] == ["snp.id_block.ld", "snp.id_block.policy"]
    r = cli("measure", path)
    assert r.code == 1 and r.out.count("\nID block refused:    snp.id_block.") == 2
    # Signed over this guest's digest and policy elsewhere: accepted, and its keys expected.
    digest = bytes.fromhex(json.loads(cli("measure", profile(tmp_path, debian_ovmf, SIGNING),
                                          "--json").out)["measurement"])  # fmt: skip
    good = ib.sign_id_block(IdBlock(digest, policy=0x30000), ib.read_key(ID_KEY, key="k"))
    given = (f'block = "{base64.b64encode(good.block).decode()}"\n'
             f'auth = "{base64.b64encode(good.auth).decode()}"\n')  # fmt: skip
    spec = load_profile(profile(tmp_path, debian_ovmf, given)).to_spec()
    assert launch(build_plan(spec), Backend.SIM, kernel=SimKernel("snp")).verdict is Verdict.MATCH
    expect = for_spec(spec, digest)
    assert expect.author_key_digest == bytes(48)  # no author key: the report's is zero


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'id_key = "id.pem"\nblock = "AAAA"\nauth = "AAAA"\n',
            "snp.id_block.id_key: is the signed",
        ),
        ('family_id = "00"\n', "snp.id_block.family_id"),
        ("guest_svn = 4294967296\n", "snp.id_block.guest_svn"),
        ('id_key = "id.pem"\nblock = "@@"\n', "snp.id_block.block"),
        ('author_key = "author.pem"\n', "snp.id_block.id_key: required"),
        ('id_key = "missing.pem"\n', "snp.id_block.id_key"),
        (
            'id_key = "author.pem"\nid_key_passphrase_env = "X"\nid_key_passphrase_file = "f"\n',
            "give the passphrase once",
        ),
    ],
)
def test_unusable_id_block_tables(
    table: str, message: str, cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    r = cli("measure", profile(tmp_path, debian_ovmf, table))
    assert r.code == 2 and message in r.err and len(r.err.splitlines()) == 1, r.err


def test_an_id_block_is_sev_snp_only(cli: CliRunner, tmp_path: Path, debian_ovmf: Path) -> None:
    path = profile(tmp_path, debian_ovmf, SIGNING)
    path.write_text(
        path.read_text()
        .replace('"sev-snp"', '"sev-es"')
        .replace("[snp]\npolicy = 0x30000\n", "[snp]\n")
    )
    r = cli("measure", path)
    assert r.code == 2 and "snp" in r.err and "not sev-es" in r.err, r.err


def test_key_files_are_bounded_and_of_their_kind(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    for target in (fifo, tmp_path, Path("/dev/zero")):
        r = cli("idblock", "--ld", SSM_LD, "--id-key", target)
        assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1, r.err
        assert "--id-key" in r.err, r.err


# ---- the idblock command ---------------------------------------------------------------------


def test_the_peers_format_beside_snp_create_id_block(cli: CliRunner) -> None:
    from sevsnpmeasure.id_block import snp_calc_id_block

    peer = snp_calc_id_block(base64.b64decode(SSM_LD), str(SSM / "id_key_test.pem"),
                             str(SSM / "author_key_test.pem")).splitlines()  # fmt: skip
    r = cli("idblock", "--ld", SSM_LD, "--id-key", SSM / "id_key_test.pem", "--author-key",
            SSM / "author_key_test.pem", "--output-format", "sev-snp-measure")  # fmt: skip
    assert r.code == 0, r.err
    ours = r.out.splitlines()
    assert ours[1:] == peer[1:]  # id_key_hash, author_key
    (our_block, our_auth), (peer_block, peer_auth) = (
        [base64.b64decode(part.split("=", 1)[1]) for part in line.split(",")]
        for line in (ours[0], peer[0])
    )
    assert our_block == peer_block
    # The peer's k is random: every byte but the signatures' is the same, and both verify.
    a, b = IdAuth.unpack(our_auth), IdAuth.unpack(peer_auth)
    assert (a.id_key, a.author_key, a.id_key_algo, a.auth_key_algo) == (
        b.id_key, b.author_key, b.id_key_algo, b.auth_key_algo
    )  # fmt: skip
    for auth in (a, b):
        signed = ib.SignedIdBlock(our_block, auth.pack(), True)
        assert ib.problems(signed, ld=base64.b64decode(SSM_LD), policy=0x30000) == []


def test_check_mode_lists_every_refusal(cli: CliRunner) -> None:
    ld = base64.b64decode(SSM_LD)
    good = ib.sign_id_block(
        IdBlock(ld, policy=0x30000), ib.read_key(SSM / "id_key_test.pem", key="k")
    )
    args = ["--block", base64.b64encode(good.block).decode(), "--auth",
            base64.b64encode(good.auth).decode()]  # fmt: skip
    r = cli("idblock", "--ld", SSM_LD, *args, "--json")
    assert r.code == 0 and json.loads(r.out)["ok"] is True
    r = cli("idblock", "--ld", "00" * 48, "--policy", "0x30002", *args)
    assert r.code == 1
    refused = [line for line in r.out.splitlines() if line.startswith("refused: ")]
    assert [line.split(":")[1].strip() for line in refused] == [
        "snp.id_block.ld",
        "snp.id_block.policy",
    ]
    r = cli("idblock", "--ld", SSM_LD, "--block", "not base64!", "--auth", "AAAA")
    assert r.code == 2 and r.err == "cvmlaunch: error: --block: expected base64\n"


def test_idblock_from_a_profile_and_its_errors(
    cli: CliRunner, tmp_path: Path, debian_ovmf: Path
) -> None:
    path = profile(tmp_path, debian_ovmf, SIGNING)
    r = cli("idblock", path, "--json")
    assert r.code == 0, r.err
    measured = json.loads(cli("measure", path, "--json").out)
    assert json.loads(r.out) | {"refused": []} == measured["id_block"]
    r = cli("idblock", path, "--output-format", "qemu")
    assert r.out.strip() == ",".join(f"{k}={v}" for k, v in measured["id_block"]["qemu"].items())
    cases = [
        (("idblock", "--id-key", ID_KEY), "--ld: give the launch digest, or a PROFILE"),
        (("idblock", "--ld", "zz", "--id-key", ID_KEY), "--ld: expected the 48-byte"),
        (("idblock", "--ld", SSM_LD), "snp.id_block.id_key: required"),
        (
            ("idblock", "--ld", SSM_LD, "--id-key", ID_KEY, "--guest-svn", "-1"),
            "--guest-svn: expected a 32-bit",
        ),
        (
            (
                "idblock",
                "--ld",
                SSM_LD,
                "--id-key",
                ID_KEY,
                "--id-key-passphrase-env",
                "NO_SUCH_VAR_X",
            ),
            "--id-key-passphrase-env",
        ),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.code == 2 and message in r.err and len(r.err.splitlines()) == 1, (args, r.err)
