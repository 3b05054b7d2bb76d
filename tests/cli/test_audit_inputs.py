"""`cvmlaunch audit` on hostile or mistaken input files: every file it reads goes through the
bounded reader (kind and size checked before reading), every error is one line naming the
flag and the path, and a `--certs` directory tolerates what is not a certificate."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cvmlaunch.attest.amd import gather
from cvmlaunch.errors import CvmlaunchError, ProfileError
from tests.conftest import VECTORS, CliResult, CliRunner

SNP = VECTORS / "attestation" / "snp"
ROOT = Path(__file__).parents[2]
NOW = "2025-09-01T00:00:00Z"
REPORT = SNP / "oak_genoa_report_v5.bin"
VCEK = SNP / "oak_genoa_vcek.der"
# One claim, true of this report, so that a passing audit exits 0 whatever the default
# for an audit without claims.
CLAIM = ("--expect-policy", "0x30000")


def one_line_error(r: CliResult, *words: str) -> None:
    assert r.code == 2, r
    assert r.out == "" and "Traceback" not in r.err
    assert len(r.err.splitlines()) == 1 and r.err.startswith("cvmlaunch: error: "), r.err
    for w in words:
        assert w in r.err, r.err


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


# ---- every file through the bounded reader, named by its flag ----------------------------


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        (flag, kind)
        for flag in ("--report", "--vcek", "--vlek", "--certs")
        for kind in ("fifo", "/dev/zero", "missing", "directory")
        if (flag, kind) != ("--certs", "directory")  # a directory of certificates
    ],
)
def test_unreadable_inputs_are_named_by_flag(
    cli: CliRunner, tmp_path: Path, fifo: Path, flag: str, kind: str
) -> None:
    path = {
        "fifo": fifo,
        "/dev/zero": Path("/dev/zero"),
        "missing": tmp_path / "absent.bin",
        "directory": tmp_path,
    }[kind]
    base: tuple[str | Path, ...] = () if flag == "--report" else ("--report", REPORT)
    start = time.monotonic()
    r = cli("audit", *base, flag, path, "--now", NOW, *CLAIM)
    assert time.monotonic() - start < 2
    reason = {
        "fifo": "a FIFO; expected a regular file",
        "/dev/zero": "a character device; expected a regular file",
        "missing": "No such file or directory",
        "directory": "a directory; expected a regular file",
    }[kind]
    one_line_error(r, f"{flag} {path}: {reason}")


def test_oversized_inputs_are_refused_before_reading(cli: CliRunner, tmp_path: Path) -> None:
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:  # sparse: 4 GiB that take no room and must never be read
        f.truncate(4 << 30)
    for flag in ("--report", "--vcek", "--certs"):
        base: tuple[str | Path, ...] = () if flag == "--report" else ("--report", REPORT)
        start = time.monotonic()
        r = cli("audit", *base, flag, huge, "--now", NOW)
        assert time.monotonic() - start < 2
        one_line_error(r, f"{flag} {huge}: larger than 1 MiB")
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "vcek.der").symlink_to(huge)
    r = cli("audit", "--report", REPORT, "--certs", folder, "--now", NOW)
    one_line_error(r, f"--certs {folder / 'vcek.der'}: larger than 1 MiB")


def test_special_files_in_a_certs_directory_are_skipped_unopened(
    cli: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "vcek.der").write_bytes(VCEK.read_bytes())
    os.mkfifo(folder / "pipe")  # opening it for reading would wait for a writer
    (folder / "zero").symlink_to("/dev/zero")
    start = time.monotonic()
    r = cli("-v", "audit", "--report", REPORT, "--certs", folder, "--now", NOW, *CLAIM)
    assert time.monotonic() - start < 2
    assert r.code == 0, r
    for name in ("pipe", "zero"):
        assert f"path='{folder / name}' reason='not a regular file'" in r.err


# ---- a --certs directory: certificates are read, everything else is skipped ---------------


def _skips(err: str) -> dict[str, str]:
    """path -> reason of each `attest.certs_file_skipped` event in `err`."""
    out = {}
    for line in err.splitlines():
        if "event='attest.certs_file_skipped'" in line:
            path = line.split("path='")[1].split("'")[0]
            out[path] = line.split("reason='")[1].split("'")[0]
    return out


def _der_crl() -> bytes:
    """A DER CRL, which is a SEQUENCE like a certificate but not one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now)
        .next_update(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(Encoding.DER)


def test_a_certs_directory_skips_what_is_not_a_certificate(cli: CliRunner, tmp_path: Path) -> None:
    """The report itself, a README and an unnamed CRL beside the certificates used to abort
    the audit ("certificate table entry 0 points past the table"); now each is skipped and
    the skip logged, and the audit uses the certificates."""
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "vcek.der").write_bytes(VCEK.read_bytes())
    chain = (ROOT / "cvmlaunch/data/roots/amd_ask_ark_genoa.pem").read_bytes()
    (folder / "cert_chain.pem").write_bytes(chain)
    (folder / "report.bin").write_bytes(REPORT.read_bytes())
    (folder / "README").write_text("Fetched from the KDS with snpguest on 2025-08-08.\n")
    (folder / "revoked.der").write_bytes(_der_crl())
    (folder / "notes.pem").write_bytes(b"-----BEGIN PRIVATE NOTE-----\nAAAA\n-----END")
    r = cli("-v", "audit", "--report", REPORT, "--certs", folder, "--now", NOW, *CLAIM)
    assert r.code == 0, r
    skipped = _skips(r.err)
    assert skipped == {
        str(folder / name): "not a certificate"
        for name in ("README", "notes.pem", "report.bin", "revoked.der")
    }
    assert "ark.pinned" in r.out and "ARK-Genoa\n" in r.out  # the supplied ARK was read


def test_a_damaged_certificate_in_a_directory_is_named_not_skipped(
    cli: CliRunner, tmp_path: Path
) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "vcek.der").write_bytes(VCEK.read_bytes()[:-40])
    r = cli("audit", "--report", REPORT, "--certs", folder, "--now", NOW)
    one_line_error(r, f"--certs {folder / 'vcek.der'}: not a DER or PEM X.509 certificate")


def test_a_report_given_as_certs_is_named(cli: CliRunner) -> None:
    r = cli("audit", "--report", REPORT, "--certs", REPORT, "--now", NOW)
    one_line_error(r, f"--certs {REPORT}: an SEV-SNP attestation report, not a certificate")
    assert "points past" not in r.err


def test_a_text_file_given_as_certs_is_named(cli: CliRunner, tmp_path: Path) -> None:
    readme = tmp_path / "README"
    readme.write_text("These are the certificates of the host, fetched from the AMD KDS.\n")
    r = cli("audit", "--report", REPORT, "--certs", readme, "--now", NOW)
    one_line_error(r, f"--certs {readme}: neither a DER or PEM certificate nor a certificate")
    assert "points past" not in r.err


# ---- certificate files: plain words, never a parser's internals ----------------------------


@pytest.mark.parametrize("content", [b"", b"\n", b"  \r\n\t"], ids=["empty", "newline", "blank"])
@pytest.mark.parametrize("flag", ["--vcek", "--vlek"])
def test_an_empty_certificate_file(
    cli: CliRunner, tmp_path: Path, content: bytes, flag: str
) -> None:
    path = tmp_path / "vek.der"
    path.write_bytes(content)
    r = cli("audit", "--report", REPORT, flag, path, "--now", NOW)
    one_line_error(r, f"{flag} {path}: empty; expected a DER or PEM certificate")
    assert "ParseError" not in r.err


def test_not_a_certificate_shows_no_parser_internals(cli: CliRunner) -> None:
    r = cli("audit", "--report", REPORT, "--vcek", REPORT, "--now", NOW)
    one_line_error(r, f"--vcek {REPORT}: not a DER or PEM X.509 certificate")
    assert "ParseError" not in r.err and "{" not in r.err


# ---- --vcek and --vlek ---------------------------------------------------------------------


def test_vcek_with_vlek_is_refused(cli: CliRunner) -> None:
    vlek = SNP / "trustee_milan_vlek.der"
    r = cli("audit", "--report", REPORT, "--vcek", VCEK, "--vlek", vlek, "--now", NOW)
    one_line_error(r, "--vlek: given with --vcek")
    with pytest.raises(ProfileError, match="--vlek: given with --vcek") as e:
        gather(vcek=VCEK, vlek=vlek)
    assert isinstance(e.value, CvmlaunchError)
