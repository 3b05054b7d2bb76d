"""The vendor roots cvmlaunch trusts, shipped as package data and pinned by the SHA-256 of
their DER encoding, so a modified data file is noticed rather than trusted."""

from __future__ import annotations

import functools
from pathlib import Path

from cryptography import x509

from cvmlaunch.attest.certs import bundled, common_name, load_certificates, verify_bundled
from cvmlaunch.errors import AttestationError

# SHA-256 of the ARK DER, per product (AMD KDS `vcek/v1/<product>/cert_chain`).
AMD_ARK_SHA256 = {
    "Milan": bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
    "Genoa": bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
    "Turin": bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
}
# Intel SGX Root CA (certificates.trustedservices.intel.com), which also roots TDX PCKs.
INTEL_SGX_ROOT_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)

_ROOTS = Path(__file__).resolve().parent.parent / "data" / "roots"
_AMD_FILES = {
    ("Milan", "vcek"): "amd_ask_ark_milan.pem",
    ("Milan", "vlek"): "amd_ask_ark_milan_vlek.pem",
    ("Genoa", "vcek"): "amd_ask_ark_genoa.pem",
    ("Genoa", "vlek"): "amd_ask_ark_genoa_vlek.pem",
    ("Turin", "vcek"): "amd_ask_ark_turin_vcek.pem",
    ("Turin", "vlek"): "amd_ask_ark_turin_vlek.pem",
}


def _bundled(name: str, count: int) -> list[x509.Certificate]:
    # Beside the package's modules (pyproject's package-data); read by path, as importlib's
    # resources machinery costs ~5 ms of start-up for a plain directory.
    data = (_ROOTS / name).read_bytes()
    certs = load_certificates(data, name)
    if len(certs) != count:
        raise AttestationError(f"bundled {name}: expected {count} certificates (damaged)")
    return certs


@functools.cache
def amd_chain(product: str, key: str) -> tuple[x509.Certificate, x509.Certificate]:
    """(ASK or ASVK, ARK) of `product` ("Milan", "Genoa", "Turin") for key "vcek"/"vlek"."""
    signer, ark = _bundled(_AMD_FILES[product, key], 2)
    if bundled(ark).sha256 != AMD_ARK_SHA256[product]:
        raise AttestationError(f"bundled ARK-{product} does not match its pin (package damaged)")
    # Verified once per process, here, rather than for every report: the ARK is pinned and
    # the bundled ASK/ASVK is package data, so their signatures cannot change between calls.
    # Every `CertMemo` reads these verdicts; a supplied ASK is still verified on its own.
    for child, issuer in ((ark, ark), (signer, ark)):
        problem = verify_bundled(child, issuer)
        if problem is not None:
            raise AttestationError(f"bundled {common_name(child)}: {problem} (package damaged)")
    return signer, ark


@functools.cache
def intel_root() -> x509.Certificate:
    (root,) = _bundled("intel_sgx_root_ca.pem", 1)
    if bundled(root).sha256 != INTEL_SGX_ROOT_SHA256:
        raise AttestationError("bundled Intel SGX Root CA does not match its pin (damaged)")
    return root
