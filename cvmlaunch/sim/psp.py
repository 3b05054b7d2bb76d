"""The AMD Secure Processor's SEV, SEV-ES and SEV-SNP guest launch, behind KVM's
KVM_MEMORY_ENCRYPT_OP with a kvm_sev_cmd.

KVM's side (arch/x86/kvm/svm/sev.c as kvm-abi.md §3 records it): which VM and which state
accept which command, and with which errno. The firmware's side: SEV API 55766 (the
LAUNCH_* commands, one running SHA-256 over every byte given to LAUNCH_UPDATE_DATA and
LAUNCH_UPDATE_VMSA, LAUNCH_MEASURE's HMAC) and SEV-SNP ABI 56860 (SNP_LAUNCH_UPDATE: one
PAGE_INFO record per page, chained with SHA-384). A firmware refusal is EIO with the SEV
status in kvm_sev_cmd.error. An ID block given to SNP_LAUNCH_FINISH is checked as the
firmware does (its own ECDSA verification, not the signer's code): the ID key's signature of
the block and, with AUTHOR_KEY_EN, the author key's of the ID key (BAD_SIGNATURE), then the
LD against the launch digest (BAD_MEASUREMENT) and POLICY against the launch's
(POLICY_FAILURE); an algorithm or curve other than ECDSA P-384/SHA-384 is INVALID_PARAM.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from itertools import count
from typing import Any

from cvmlaunch.abi.idblock import (
    ALGO_ECDSA_P384_SHA384,
    CURVE_P384,
    ID_AUTH_SIZE,
    ID_BLOCK_SIZE,
    IdAuth,
    IdBlock,
    public_key_numbers,
    signature_numbers,
)
from cvmlaunch.abi.kvm import (
    PAGE_SHIFT,
    PAGE_SIZE,
    SEV_LAUNCH_MEASURE_SIZE,
    SevCmd,
    SevStatus,
    VmType,
)
from cvmlaunch.abi.snp import (
    GUEST_POLICY_MBO,
    GUEST_POLICY_MBZ,
    KVM_VMSA_GPA,
    SEV_FEATURES_DEFINED,
    PageType,
    SevFeature,
)
from cvmlaunch.sim.faults import PageBudget
from cvmlaunch.sim.hosts import SEV_VM_TYPES
from cvmlaunch.sim.memory import GuestMemfd
from cvmlaunch.sim.sev_guest import GuestState, SevGuest
from cvmlaunch.sim.usercopy import (
    copy_from_user,
    copy_to_user,
    fail,
    read_struct,
    user_struct,
    write_struct,
)
from cvmlaunch.sim.vm import Vm
from cvmlaunch.sim.vmsa import vmsa_page

_GHCB_VERSION_MAX = 2
# INIT2 takes any defined SEV_FEATURES bit but SNP_ACTIVE, which KVM sets itself.
SUPPORTED_VMSA_FEATURES = SEV_FEATURES_DEFINED & ~(1 << SevFeature.SNP_ACTIVE)
SNP_UPDATE_TYPES = frozenset(
    {PageType.NORMAL, PageType.ZERO, PageType.UNMEASURED, PageType.SECRETS, PageType.CPUID}
)
_ZERO_PAGE = bytes(PAGE_SIZE)
_LEGACY_ALIGN = 16  # LAUNCH_UPDATE_DATA address and length


class FirmwareFailure(Exception):
    """KVM reports EIO and passes the firmware status up in kvm_sev_cmd.error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


Handler = Callable[[Vm, Any], None]


class Psp:
    """The SEV firmware of one host, reached through /dev/sev fds of the emulated process."""

    def __init__(self, is_sev_device: Callable[[int], bool], budget: PageBudget) -> None:
        self._is_sev_device = is_sev_device
        self._budget = budget
        self._handles = count(1)
        self._handlers: dict[int, Handler] = {
            SevCmd.INIT2: self._init2,
            SevCmd.LAUNCH_START: self._launch_start,
            SevCmd.LAUNCH_UPDATE_DATA: self._launch_update_data,
            SevCmd.LAUNCH_UPDATE_VMSA: self._launch_update_vmsa,
            SevCmd.LAUNCH_MEASURE: self._launch_measure,
            SevCmd.LAUNCH_FINISH: self._launch_finish,
            SevCmd.SNP_LAUNCH_START: self._snp_launch_start,
            SevCmd.SNP_LAUNCH_UPDATE: self._snp_launch_update,
            SevCmd.SNP_LAUNCH_FINISH: self._snp_launch_finish,
        }

    def encrypt_op(self, vm: Vm, arg: int) -> int:
        """KVM_MEMORY_ENCRYPT_OP on a VM of an AMD host; a NULL argument probes for SEV."""
        if vm.type not in SEV_VM_TYPES:
            fail(errno.ENOTTY)
        if arg == 0:
            return 0
        cmd = user_struct("kvm_sev_cmd", arg)
        handler = self._handler(vm, cmd.id)
        try:
            handler(vm, cmd)
        except FirmwareFailure as e:
            cmd.error = e.status
            fail(errno.EIO)
        cmd.error = SevStatus.SUCCESS
        return 0

    def _handler(self, vm: Vm, cmd_id: int) -> Handler:
        sev = vm.sev
        # Once INIT2 made the VM an SNP guest, only the SNP commands remain.
        if sev is not None and sev.snp and cmd_id < SevCmd.SNP_LAUNCH_START:
            fail(errno.EPERM)
        handler = self._handlers.get(cmd_id)
        if handler is None:
            fail(errno.EINVAL)
        snp_command = cmd_id >= SevCmd.SNP_LAUNCH_START
        if cmd_id != SevCmd.INIT2 and (sev is None or sev.snp != snp_command):
            fail(errno.ENOTTY)
        return handler

    def firmware_fd(self, fd: int | None) -> None:
        """The /dev/sev fd a firmware command goes through must be open (else EBADF)."""
        if fd is None or not self._is_sev_device(fd):
            fail(errno.EBADF)

    def _init2(self, vm: Vm, cmd: Any) -> None:
        if vm.sev is not None or vm.vcpus:
            fail(errno.EINVAL)
        init = read_struct("kvm_sev_init", cmd.data)
        es = vm.type is not VmType.SEV
        bad = (
            init.flags
            or init.vmsa_features & ~SUPPORTED_VMSA_FEATURES
            or (not es and (init.vmsa_features or init.ghcb_version))
            or init.ghcb_version > _GHCB_VERSION_MAX
            # 0 means the default, 2; SNP needs at least version 2.
            or (vm.type is VmType.SNP and 0 < init.ghcb_version < 2)
        )
        if bad:
            fail(errno.EINVAL)
        vm.sev = SevGuest(vm.type, init.vmsa_features, next(self._handles))

    @staticmethod
    def _guest(vm: Vm) -> SevGuest:
        if vm.sev is None:  # _handler admits no other command before INIT2
            fail(errno.ENOTTY)
        return vm.sev

    def _in_state(self, vm: Vm, state: GuestState) -> SevGuest:
        """The guest, which must be in `state`; the command reaches the firmware through
        the fd LAUNCH_START recorded."""
        sev = self._guest(vm)
        if sev.state is not state:
            raise FirmwareFailure(SevStatus.INVALID_GUEST_STATE)
        self.firmware_fd(sev.fd)
        return sev

    def _launch_start(self, vm: Vm, cmd: Any) -> None:
        start = read_struct("kvm_sev_launch_start", cmd.data)
        sev = self._guest(vm)
        self.firmware_fd(cmd.sev_fd)
        if sev.state is not GuestState.INIT:
            raise FirmwareFailure(SevStatus.INVALID_GUEST_STATE)
        sev.policy, sev.fd, sev.state = start.policy, cmd.sev_fd, GuestState.LUPDATE
        start.handle = sev.handle
        write_struct(cmd.data, start)

    def _launch_update_data(self, vm: Vm, cmd: Any) -> None:
        params = read_struct("kvm_sev_launch_update_data", cmd.data)
        if params.len == 0:  # nothing to pin
            fail(errno.EINVAL)
        sev = self._in_state(vm, GuestState.LUPDATE)
        if params.uaddr % _LEGACY_ALIGN:
            raise FirmwareFailure(SevStatus.INVALID_ADDRESS)
        if params.len % _LEGACY_ALIGN:
            raise FirmwareFailure(SevStatus.INVALID_LEN)
        sev.sha256.update(copy_from_user(params.uaddr, params.len))

    def _launch_update_vmsa(self, vm: Vm, cmd: Any) -> None:
        if not self._guest(vm).es:
            fail(errno.ENOTTY)
        sev = self._in_state(vm, GuestState.LUPDATE)
        if any(vcpu.protected for vcpu in vm.vcpus.values()):
            fail(errno.EINVAL)
        for vcpu in vm.vcpus.values():
            sev.sha256.update(vmsa_page(vcpu, sev.vmsa_features))
            vcpu.protected = True

    def _launch_measure(self, vm: Vm, cmd: Any) -> None:
        params = read_struct("kvm_sev_launch_measure", cmd.data)
        sev = self._in_state(vm, GuestState.LUPDATE)
        if params.len < SEV_LAUNCH_MEASURE_SIZE:
            # The firmware says how long the blob is; this is how callers ask (len 0).
            params.len = SEV_LAUNCH_MEASURE_SIZE
            write_struct(cmd.data, params)
            raise FirmwareFailure(SevStatus.INVALID_LEN)
        copy_to_user(params.uaddr, sev.measure_blob())
        params.len = SEV_LAUNCH_MEASURE_SIZE
        write_struct(cmd.data, params)
        sev.digest, sev.state = sev.sha256.digest(), GuestState.LSECRET

    def _launch_finish(self, vm: Vm, cmd: Any) -> None:
        self._in_state(vm, GuestState.LSECRET).state = GuestState.RUNNING

    def _snp_launch_start(self, vm: Vm, cmd: Any) -> None:
        start = read_struct("kvm_sev_snp_launch_start", cmd.data)
        sev = self._guest(vm)
        if sev.state is not GuestState.INIT:  # one launch context per VM
            fail(errno.EINVAL)
        if start.flags or start.policy & GUEST_POLICY_MBZ or not start.policy & GUEST_POLICY_MBO:
            fail(errno.EINVAL)
        self.firmware_fd(cmd.sev_fd)
        sev.policy, sev.fd, sev.state = start.policy, cmd.sev_fd, GuestState.LUPDATE

    def _snp_launching(self, vm: Vm) -> SevGuest:
        """The SNP guest between SNP_LAUNCH_START and SNP_LAUNCH_FINISH."""
        sev = self._guest(vm)
        if sev.state is GuestState.INIT:  # no launch context yet
            fail(errno.EINVAL)
        if sev.state is not GuestState.LUPDATE:
            raise FirmwareFailure(SevStatus.INVALID_GUEST_STATE)
        return sev

    def _snp_launch_update(self, vm: Vm, cmd: Any) -> None:
        params = read_struct("kvm_sev_snp_launch_update", cmd.data)
        sev = self._snp_launching(vm)
        zero = params.type == PageType.ZERO
        bad = (
            params.len == 0
            or params.len % PAGE_SIZE
            or params.flags
            or params.type not in SNP_UPDATE_TYPES
            or (not zero and (params.uaddr == 0 or params.uaddr % PAGE_SIZE))
        )
        if bad:
            fail(errno.EINVAL)
        self.firmware_fd(cmd.sev_fd)
        page_type = PageType(params.type)

        def fill(gfn: int, gmem: GuestMemfd, index: int) -> None:
            offset = (gfn - params.gfn_start) << PAGE_SHIFT
            page = _ZERO_PAGE if zero else copy_from_user(params.uaddr + offset, PAGE_SIZE)
            gmem.write_page(index, page)
            sev.snp_measure(page_type, gfn << PAGE_SHIFT, page)

        done = self._populate(vm, params.gfn_start, params.len >> PAGE_SHIFT, fill)
        params.gfn_start += done
        params.len -= done << PAGE_SHIFT
        if not zero:
            params.uaddr += done << PAGE_SHIFT
        write_struct(cmd.data, params)

    def _populate(
        self, vm: Vm, gfn: int, npages: int, fill: Callable[[int, GuestMemfd, int], None]
    ) -> int:
        """kvm_gmem_populate for SNP_LAUNCH_UPDATE: partial progress is success; a run that
        did nothing fails, with EIO unless a pending Partial stopped it."""
        result = vm.memory.populate(gfn, npages, self._budget, fill)
        if result.done or result.stop is None:
            return result.done
        if result.interrupted:
            fail(result.stop)
        # An assigned page is what the firmware would refuse; a page that is not private
        # never reaches it, and KVM still says EIO, with no firmware status.
        already = result.stop == errno.EEXIST
        raise FirmwareFailure(SevStatus.INVALID_PAGE_STATE if already else SevStatus.SUCCESS)

    def _snp_launch_finish(self, vm: Vm, cmd: Any) -> None:
        finish = read_struct("kvm_sev_snp_launch_finish", cmd.data)
        if self._guest(vm).state is GuestState.INIT or finish.flags:
            fail(errno.EINVAL)
        sev = self._in_state(vm, GuestState.LUPDATE)
        id_block = id_auth = None
        if finish.id_block_en:  # KVM copies both in before it calls the firmware
            id_block = copy_from_user(finish.id_block_uaddr, ID_BLOCK_SIZE)
            id_auth = copy_from_user(finish.id_auth_uaddr, ID_AUTH_SIZE)
        # KVM measures every vCPU's VMSA first, in vCPU index order, all at one GPA.
        for vcpu in vm.vcpus.values():
            sev.snp_measure(PageType.VMSA, KVM_VMSA_GPA, vmsa_page(vcpu, sev.vmsa_features))
            vcpu.protected = True
        if id_block is not None and id_auth is not None:
            _check_id_block(id_block, id_auth, bool(finish.auth_key_en), sev)
        sev.host_data = bytes(finish.host_data)
        sev.digest, sev.state = sev.ld, GuestState.RUNNING
        vm.pre_fault_allowed = True


def _check_id_block(block: bytes, auth: bytes, author_key_enabled: bool, sev: SevGuest) -> None:
    """SNP_LAUNCH_FINISH's checks of an ID block, failing with the firmware's status."""
    parsed, signed = IdBlock.unpack(block), IdAuth.unpack(auth)
    keys = [(signed.id_key_algo, signed.id_key, signed.id_block_sig, block)]
    if author_key_enabled:
        keys.append((signed.auth_key_algo, signed.author_key, signed.id_key_sig, signed.id_key))
    for algo, public, signature, message in keys:
        if algo != ALGO_ECDSA_P384_SHA384 or public_key_numbers(public)[0] != CURVE_P384:
            raise FirmwareFailure(SevStatus.INVALID_PARAM)
        if not _ecdsa_p384_verifies(public, signature, message):
            raise FirmwareFailure(SevStatus.BAD_SIGNATURE)
    if parsed.ld != sev.ld:
        raise FirmwareFailure(SevStatus.BAD_MEASUREMENT)
    if parsed.policy != sev.policy:
        raise FirmwareFailure(SevStatus.POLICY_FAILURE)
    sev.id_block, sev.id_auth = parsed, signed


def _ecdsa_p384_verifies(public: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    _, x, y = public_key_numbers(public)
    r, s = signature_numbers(signature)
    try:
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
    except (ValueError, InvalidSignature):  # not a point of the curve, or no signature
        return False
    return True
