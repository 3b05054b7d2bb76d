"""VMSA pages per VMM flavour, asserted against published hashes."""

from __future__ import annotations

import hashlib

import pytest

from cvmlaunch.guest.spec import Vmm
from cvmlaunch.plan.vmsa import BSP_RESET_ADDRESS, save_area

# SHA-384 of complete VMSA pages (CPU signature 0x800F12, AP reset address 0x80B004), as
# dumped by sev-snp-measure --dump-vmsa (reference/snp-measure.md, appendix A).
VMSA_PAGE_SHA384 = {
    (Vmm.QEMU, True, 0x1): "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b"
    "3856f55378e9518d0da99452d51c553a",
    (Vmm.QEMU, True, 0x21): "ae79efa6efbe1594a2717dfd42af495a0e4ed37b00e529a5fdf349bea04c3513"
    "962ffb0c74cf65b0d9a1857271833d6e",
    (Vmm.QEMU, False, 0x1): "8413b852790765a310d95867a8b00bfca3a802b5a80830044b45e253fe962226"
    "57e11e53fcf63eb0e0afd722385bf7b4",
    (Vmm.QEMU, False, 0x21): "180ef2675dc01615d31b3e84ef27a0a69d08bfbbb58ea4f6a0188f08884ab640"
    "7591ada42f99749ce9a406fb4e5d8355",
    (Vmm.EC2, True, 0x1): "d08442e8bcdb6a5dcd7f22e4f7fd6979beffb9f0bb54a9d1977407fe84f482ab"
    "f23c1baae6ce95a6a9e7a94c3c51f412",
    (Vmm.EC2, False, 0x1): "acff2d22db95b8eb82272d844aa2ad1f8f84218ccbab003697acade12228a6e9"
    "01256e160d41713c22fed92e0a1ed0e1",
    (Vmm.EC2, True, 0x21): "e0897e8839a89263c86c623a0a739839fbf54dd00526df52c2a854fd36e6557c"
    "8260f21c8030441e5e3e79d5e8da7c5f",
    (Vmm.EC2, False, 0x21): "bb757c6aec783f41492857eaa32b3d931e2faa80976bee4a4ee6b2f4f3d50744"
    "d1b02b4bf30d191d504cc686d30f642f",
    (Vmm.GCE, True, 0x1): "f9e03177dad7f4819ee193af7cfb70507d8a923ab513412e908bc73460a9dfda"
    "a54215d58952816118ffb2ec281e7fd2",
    (Vmm.GCE, False, 0x1): "5302d262c88780a7a13159a327fa99cf188cab234c680e1f3b6729171380a431"
    "2511813a354cab136d69c778050c245a",
    (Vmm.GCE, True, 0x21): "2ac3e2eb183da064d16da7d4847eb61d536624530f60c996435309368358cd64"
    "c3e1b32b24d61269914a78b8370ca256",
    (Vmm.GCE, False, 0x21): "81dc79b7f59a6814d3812aaf3cd07a7df861c863b4b9e1cdf3709b5c4b209c90"
    "c5f6442a284ebfb5ef3978a20f70e9ac",
}


@pytest.mark.parametrize(("vmm", "bsp", "features"), sorted(VMSA_PAGE_SHA384, key=str))
def test_vmsa_pages(vmm: Vmm, bsp: bool, features: int) -> None:
    eip = BSP_RESET_ADDRESS if bsp else 0x80B004
    page = save_area(vmm, eip, 0x800F12, features, bsp).pack()
    assert len(page) == 4096
    assert hashlib.sha384(page).hexdigest() == VMSA_PAGE_SHA384[vmm, bsp, features]


def test_sev_es_bsp_page() -> None:
    page = save_area(Vmm.QEMU, BSP_RESET_ADDRESS, 0x800F12, 0, bsp=True).pack()
    expected = "8295cef559b57130391d59605890ef93297720b48bef9a8c3c985b9c3fb0788c"
    assert hashlib.sha256(page).hexdigest() == expected
