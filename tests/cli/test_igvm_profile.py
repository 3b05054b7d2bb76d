"""An IGVM file as a profile's firmware (`[firmware] igvm`): measured to igvm-tooling's
digests, explained directive by directive, its GUEST_POLICY and SNP_ID_BLOCK taken as the
launch's (and checked), published, and, for a file laid out as KVM measures, launched
through the sim to the same digest with its signed ID block."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from cvmlaunch.abi.idblock import IdBlock
from cvmlaunch.abi.snp import KVM_VMSA_GPA
from cvmlaunch.attest.expect import for_spec
from cvmlaunch.errors import LaunchError
from cvmlaunch.firmware.igvm import parse_igvm
from cvmlaunch.guest.profile import load_profile
from cvmlaunch.guest.spec import Vmm
from cvmlaunch.launch import Backend, Verdict, launch
from cvmlaunch.measure import idblock as ib
from cvmlaunch.measure import measure
from cvmlaunch.plan import build_plan
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area
from cvmlaunch.publish import references
from cvmlaunch.sim import SimKernel
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[1]
IGVM = ROOT / "vectors" / "igvm"
EXPECTED = {e["file"]: e for e in json.loads((IGVM / "expected.json").read_text())}
ID_KEY = ROOT / "vectors" / "idblock" / "virtee-sev" / "test_id_key.pem"
FILE_POLICY = 0x3001F  # igvm-tooling's GUEST_POLICY in all five


def profile(folder: Path, igvm: Path, extra: str = "", policy: int | None = FILE_POLICY) -> Path:
    path = folder / f"{igvm.stem}.toml"
    snp = "" if policy is None else f"[snp]\npolicy = {policy:#x}\n"
    path.write_text(f'schema_version = 1\ntechnology = "sev-snp"\n{extra}'
                    f'[firmware]\nigvm = "{igvm}"\n{snp}')  # fmt: skip
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_measures_to_igvm_toolings_digest(
    name: str, cli: CliRunner, tmp_path: Path
) -> None:
    path = profile(tmp_path, IGVM / name)
    r = cli("measure", path, "--json")
    doc = json.loads(r.out)
    assert doc["measurement"] == EXPECTED[name]["igvm_tooling_launch_digest"]
    assert doc["inputs"]["firmware_format"] == "igvm"
    assert doc["inputs"]["firmware_sha256"] == EXPECTED[name]["sha256"]
    # The file's SNP_ID_BLOCK carries its LD and keys but no signature (built without a
    # signing key): the launch would fail, which measure reports as a failed check.
    assert r.code == 1
    block = IdBlock.unpack(bytes.fromhex(doc["id_block"]["ld"]) + bytes(48))
    assert doc["id_block"]["ld"] == doc["measurement"] and block.ld.hex() == doc["measurement"]
    assert doc["id_block"]["refused"] == [
        "snp.id_block.id_key: the ID key's signature of the ID block does not verify "
        "(BAD_SIGNATURE)"
    ]
    assert (doc["id_block"]["family_id"], doc["id_block"]["guest_svn"]) == ("01" + "00" * 15, 2)


def test_explain_shows_the_directives_as_steps(cli: CliRunner, tmp_path: Path) -> None:
    path = profile(tmp_path, IGVM / "test_bzImage.igvm")
    spec = load_profile(path).to_spec()
    plan = build_plan(spec)
    r = cli("explain", path, "--json")
    assert r.code == 0, r.err
    runs = json.loads(r.out)["runs"]
    titles = [run["title"] for run in runs]
    assert all(t.startswith("igvm header ") for t in titles)
    assert "igvm header 136 VP_CONTEXT: 0x803000-0x803fff VMSA x1" in titles
    assert sum(run["pages"] for run in runs) == sum(-(-op.size // 4096) for op in plan.ops)
    assert runs[-1]["digest"] == EXPECTED["test_bzImage.igvm"]["igvm_tooling_launch_digest"]


def test_the_files_policy_is_the_launchs(cli: CliRunner, tmp_path: Path) -> None:
    r = cli("measure", profile(tmp_path, IGVM / "test_elf.igvm", policy=None))
    assert r.code == 2 and len(r.err.splitlines()) == 1
    assert "snp.policy: 0x30000, but the IGVM file's GUEST_POLICY is 0x3001f" in r.err


@pytest.mark.parametrize(
    ("extra", "firmware", "message"),
    [
        ("", 'path = "/usr/share/ovmf/OVMF.fd"\n', "firmware.path: give the image's path"),
        ("", "igvm_native_zero = 1\n", "firmware.igvm_native_zero"),
        ('[boot]\ncmdline = "x"\n', "", "boot: the IGVM file holds the whole initial image"),
    ],
)
def test_what_an_igvm_profile_cannot_say(
    extra: str, firmware: str, message: str, cli: CliRunner, tmp_path: Path
) -> None:
    path = profile(tmp_path, IGVM / "test_elf.igvm")
    text = path.read_text().replace("[firmware]\n", f"[firmware]\n{firmware}") + extra
    path.write_text(text)
    r = cli("measure", path)
    assert r.code == 2 and message in r.err and len(r.err.splitlines()) == 1, r.err
    td = profile(tmp_path, IGVM / "test_elf.igvm", policy=None)
    td.write_text(td.read_text().replace('"sev-snp"', '"tdx"'))
    r = cli("measure", td)
    assert r.code == 2 and "firmware.igvm: applies to sev-snp guests, not tdx" in r.err, r.err


def test_published_like_any_guest(tmp_path: Path) -> None:
    spec = load_profile(profile(tmp_path, IGVM / "test_elf_x64.igvm")).to_spec()
    [ref] = references(spec)
    assert (
        ref.expect["measurement"].hex()
        == EXPECTED["test_elf_x64.igvm"]["igvm_tooling_launch_digest"]
    )
    assert ref.expect["policy"] == FILE_POLICY


# ---- a file laid out as KVM measures it, signed --------------------------------------------


def kvm_igvm(source: Path, out: Path) -> Path:
    """`source` with its VMSA at KVM's GPA holding a state KVM can set (QEMU's reset state),
    and its SNP_ID_BLOCK signed over the digest that gives with virtee's test ID key."""
    data = bytearray(source.read_bytes())
    igvm = parse_igvm(bytes(data))
    # KVM measures the VMSAs last, at SNP_LAUNCH_FINISH: the VP_CONTEXT goes after the rest.
    [vp] = [h for h in igvm.headers if h.name == "VP_CONTEXT"]
    end = igvm.variable_header_offset + igvm.variable_header_size
    size = 8 + -(-vp.length // 8) * 8
    moved = data[vp.offset : vp.offset + size]
    data[vp.offset : end] = data[vp.offset + size : end] + moved
    vp = vp.__class__(vp.index, end - size, vp.type, vp.length, vp.body)
    [directive] = [h for h in igvm.headers if h.name == "SNP_ID_BLOCK"]
    directive = directive.__class__(directive.index, directive.offset - size, directive.type,
                                    directive.length, directive.body)  # fmt: skip
    struct.pack_into("<Q", data, vp.offset + 8, KVM_VMSA_GPA)
    page = save_area(Vmm.QEMU, BSP_RESET_ADDRESS, 0, 1, bsp=True).pack()
    offset = vp.body.file_offset  # type: ignore[union-attr]
    data[offset : offset + 4096] = page

    def rechecksum() -> None:
        end = igvm.variable_header_offset + igvm.variable_header_size
        crc = zlib.crc32(bytes(data[:20]) + bytes(4) + bytes(data[24:end]))
        struct.pack_into("<I", data, 20, crc)

    rechecksum()
    out.write_bytes(data)
    unsigned = build_plan(load_profile(profile(out.parent, out)).to_spec())
    ld = measure(unsigned).digest
    config = unsigned.spec.id_block
    assert config is not None and config.block is not None  # the file's SNP_ID_BLOCK
    block = IdBlock.unpack(config.block)._replace(ld=ld)
    key = ib.read_key(ID_KEY, key="k")
    signed = ib.sign_id_block(block, key)
    payload = directive.offset + 8
    data[payload + 8 : payload + 56] = ld
    data[payload + 104 : payload + 248] = signed.auth[0x40 : 0x40 + 144]
    data[payload + 248 : payload + 252] = signed.auth[0x240:0x244]
    data[payload + 256 : payload + 400] = signed.auth[0x244 : 0x244 + 144]
    rechecksum()
    out.write_bytes(data)
    return out


def test_a_kvm_layout_file_launches_through_the_sim_with_its_id_block(
    cli: CliRunner, tmp_path: Path
) -> None:
    path = profile(tmp_path, kvm_igvm(IGVM / "test_elf.igvm", tmp_path / "kvm.igvm"))
    r = cli("measure", path, "--json")
    assert r.code == 0, r.out + r.err
    doc = json.loads(r.out)
    assert doc["id_block"]["refused"] == []
    assert doc["id_block"]["id_key_digest"] == ib.read_key(ID_KEY, key="k").digest.hex()
    spec = load_profile(path).to_spec()
    plan = build_plan(spec)
    record = launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    assert record.verdict is Verdict.MATCH and record.expected.hex() == doc["measurement"]
    assert record.doc["id_block"]["ld"] == doc["measurement"]  # type: ignore[index]
    expect = for_spec(plan.spec, record.expected)
    assert expect.id_key_digest == ib.read_key(ID_KEY, key="k").digest
    assert (expect.family_id, expect.image_id, expect.min_guest_svn) == (
        b"\x01" + bytes(15), b"\x02" + bytes(15), 2
    )  # fmt: skip


def test_a_hyper_v_layout_file_is_refused_for_launch(tmp_path: Path) -> None:
    plan = build_plan(load_profile(profile(tmp_path, IGVM / "test_elf.igvm")).to_spec())
    with pytest.raises(LaunchError) as e:
        launch(plan, Backend.SIM, kernel=SimKernel("snp"))
    assert "VMSA is at GPA 0x803000; KVM measures every VMSA at 0xfffffffff000" in str(e.value)


def test_the_igvm_file_is_read_bounded_and_named(cli: CliRunner, tmp_path: Path) -> None:
    fifo = tmp_path / "guest.igvm"
    os.mkfifo(fifo)
    r = cli("measure", profile(tmp_path, fifo))
    assert r.code == 2 and r.out == ""
    reason = "a FIFO; expected a regular file (a firmware image)"
    assert r.err == f"cvmlaunch: error: firmware.igvm {fifo}: {reason}\n"
    truncated = tmp_path / "short.igvm"
    truncated.write_bytes((IGVM / "test_elf.igvm").read_bytes()[:5000])
    r = cli("measure", profile(tmp_path, truncated))
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "IGVM" in r.err, r.err
