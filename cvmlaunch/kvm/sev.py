"""The SEV, SEV-ES and SEV-SNP launch commands of a VM (reference/kvm-abi.md §3).

Each is KVM_MEMORY_ENCRYPT_OP on the VM fd with a `kvm_sev_cmd` whose `data` points to the
command's struct; `SevVm` has one method per KVM_SEV_* command a launch issues, taking and
returning plain values. The firmware is reached through /dev/sev: `sev_init2` opens it as a
child of the VM (so it closes with the VM) and every command passes it in `sev_fd`.

A failure is a `KvmError` naming `KVM_MEMORY_ENCRYPT_OP(<command>)`, the errno, and the fields
of the command and its data; EIO with `error` set is a firmware refusal (its SEV_RET_* status).
"""

from __future__ import annotations

import errno
from typing import Any

from cvmlaunch.abi.idblock import ID_AUTH_SIZE, ID_BLOCK_SIZE
from cvmlaunch.abi.kvm import SEV_LAUNCH_MEASURE_SIZE, SevCmd, ffi
from cvmlaunch.abi.snp import HOST_DATA_SIZE
from cvmlaunch.errors import KvmError
from cvmlaunch.kvm.fd import Device, OwnedFd, encrypt_op, new_struct
from cvmlaunch.kvm.sys import Kernel, address


def _call(cmd: SevCmd) -> str:
    return f"KVM_MEMORY_ENCRYPT_OP({cmd.name})"


class SevVm(OwnedFd):
    """The KVM_SEV_* commands of one VM, and the /dev/sev fd they go through."""

    def __init__(self, kernel: Kernel, fd: int) -> None:
        super().__init__(kernel, fd)
        self.sev_fd = 0  # /dev/sev, opened by sev_init2

    def sev_command(self, cmd: SevCmd, data: Any = None, sev_fd: int = 0) -> None:
        """KVM_MEMORY_ENCRYPT_OP with a kvm_sev_cmd; the firmware status goes in the error."""
        command: Any = ffi.new(
            "struct kvm_sev_cmd *",
            {"id": cmd, "data": address(data) if data is not None else 0, "sev_fd": sev_fd},
        )
        encrypt_op(self, command, data, _call(cmd))

    def sev_init2(self, vmsa_features: int = 0, ghcb_version: int = 0) -> None:
        """KVM_SEV_INIT2: make this VM (type SEV, SEV_ES or SNP) an SEV guest; opens /dev/sev.

        `vmsa_features` are the VMSA SEV_FEATURES without SNPActive (KVM sets that bit itself
        for an SNP VM); `ghcb_version` 0 means KVM's default, 2. Plain SEV takes neither.
        EINVAL for an unsupported feature or GHCB version, or after a vCPU exists.
        """
        self.sev_fd = Device(self, "/dev/sev").fd
        init = new_struct(
            "kvm_sev_init",
            _call(SevCmd.INIT2),
            vmsa_features=vmsa_features,
            ghcb_version=ghcb_version,
        )
        self.sev_command(SevCmd.INIT2, init, self.sev_fd)

    def sev_launch_start(self, policy: int) -> int:
        """KVM_SEV_LAUNCH_START (SEV, SEV-ES) with the guest `policy`; returns the firmware's
        guest handle. No DH key or session: the launch is not shared with a guest owner."""
        start = new_struct("kvm_sev_launch_start", _call(SevCmd.LAUNCH_START), policy=policy)
        self.sev_command(SevCmd.LAUNCH_START, start, self.sev_fd)
        return int(start.handle)

    def sev_launch_update_data(self, uaddr: int, length: int) -> None:
        """KVM_SEV_LAUNCH_UPDATE_DATA (SEV, SEV-ES): encrypt in place and measure `length`
        bytes of guest memory at user address `uaddr`, exactly those bytes (QEMU hands over
        the 176-byte kernel hashes table so)."""
        update = new_struct(
            "kvm_sev_launch_update_data",
            _call(SevCmd.LAUNCH_UPDATE_DATA),
            uaddr=uaddr,
            len=length,
        )
        self.sev_command(SevCmd.LAUNCH_UPDATE_DATA, update, self.sev_fd)

    def sev_launch_update_vmsa(self) -> None:
        """KVM_SEV_LAUNCH_UPDATE_VMSA (SEV-ES): encrypt and measure every vCPU's VMSA, built
        from its current registers, which are then protected. ENOTTY on plain SEV."""
        self.sev_command(SevCmd.LAUNCH_UPDATE_VMSA, None, self.sev_fd)

    def sev_launch_measure(self) -> bytes:
        """KVM_SEV_LAUNCH_MEASURE (SEV, SEV-ES): the firmware's measurement blob, MEASURE
        (HMAC-SHA256 under the TIK) then MNONCE, SEV_LAUNCH_MEASURE_SIZE bytes."""
        blob = bytearray(SEV_LAUNCH_MEASURE_SIZE)
        request = new_struct(
            "kvm_sev_launch_measure",
            _call(SevCmd.LAUNCH_MEASURE),
            uaddr=address(blob),
            len=len(blob),
        )
        self.sev_command(SevCmd.LAUNCH_MEASURE, request, self.sev_fd)
        return bytes(blob)

    def sev_launch_finish(self) -> None:
        """KVM_SEV_LAUNCH_FINISH (SEV, SEV-ES): end the launch; the guest can run."""
        self.sev_command(SevCmd.LAUNCH_FINISH, None, self.sev_fd)

    def snp_launch_start(self, policy: int) -> None:
        """KVM_SEV_SNP_LAUNCH_START with the guest `policy` (the report's POLICY): once per
        VM; EINVAL for a reserved bit, or without bit 17 (RSVD_MBO, must be one)."""
        start = new_struct(
            "kvm_sev_snp_launch_start", _call(SevCmd.SNP_LAUNCH_START), policy=policy
        )
        self.sev_command(SevCmd.SNP_LAUNCH_START, start, self.sev_fd)

    def snp_launch_finish(
        self,
        host_data: bytes = bytes(HOST_DATA_SIZE),
        id_block: tuple[bytes, bytes, bool] | None = None,
    ) -> None:
        """KVM_SEV_SNP_LAUNCH_FINISH: KVM measures every vCPU's VMSA (vCPU index order), then
        the firmware closes the launch with `host_data`, the report's HOST_DATA (32 bytes),
        and `id_block` if given: the 96-byte ID block, its 4096-byte ID auth and whether the
        auth's author key is to be checked (AUTHOR_KEY_EN)."""
        call = _call(SevCmd.SNP_LAUNCH_FINISH)
        if len(host_data) != HOST_DATA_SIZE:
            raise KvmError(call, errno.EINVAL, {"host_data_len": len(host_data)})
        fields: dict[str, Any] = {"host_data": host_data}
        # KVM copies both from these addresses while the command runs: keep them alive.
        buffers: list[Any] = []
        if id_block is not None:
            block, auth, author_key_enabled = id_block
            if (len(block), len(auth)) != (ID_BLOCK_SIZE, ID_AUTH_SIZE):
                raise KvmError(call, errno.EINVAL, {"id_block_len": len(block),
                                                    "id_auth_len": len(auth)})  # fmt: skip
            buffers = [ffi.from_buffer(bytearray(block)), ffi.from_buffer(bytearray(auth))]
            fields.update(
                id_block_uaddr=address(buffers[0]),
                id_auth_uaddr=address(buffers[1]),
                id_block_en=1,
                auth_key_en=int(author_key_enabled),
            )
        finish = new_struct("kvm_sev_snp_launch_finish", call, **fields)
        self.sev_command(SevCmd.SNP_LAUNCH_FINISH, finish, self.sev_fd)
