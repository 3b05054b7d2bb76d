"""Pure measurement engines: a LaunchPlan in, the digest the platform will report out."""

from __future__ import annotations

from cvmlaunch.guest.spec import Technology
from cvmlaunch.measure.snp import snp_digest
from cvmlaunch.namedtuple import NamedTuple
from cvmlaunch.plan.ops import Plan, TdPlan
from cvmlaunch.plan.step import Step


class Measurement(NamedTuple):
    """The expected launch measurement of a plan.

    `digest` is the launch digest (SNP MEASUREMENT; SEV/SEV-ES GCTX.LD; TDX MRTD). For sev-snp,
    `firmware_digest` is the digest after the firmware pages, which can be published and
    used instead of the image. For sev/sev-es with launch-secret inputs, `launch_measure` is
    the HMAC the platform reports.
    """

    technology: Technology
    digest: bytes
    firmware_digest: bytes | None
    launch_measure: bytes | None
    trace: tuple[Step, ...] | None
    # tdx with tdx.edk2 given: RTMR0..3 after the boot events OVMF extends (None: a register
    # holding a digest not known offline), and those events.
    rtmrs: tuple[bytes | None, ...] | None = None
    events: tuple[Step, ...] | None = None


def measure(plan: Plan, *, trace: bool = False) -> Measurement:
    """Compute the measurement of `plan`; with `trace`, record every step."""
    if isinstance(plan, TdPlan):
        from cvmlaunch.measure.tdx import mrtd  # loads only for a TD (CLI start-up)

        records: list[Step] | None = [] if trace else None
        # A described firmware gives its MRTD (and has no records to trace).
        digest = plan.mrtd if plan.mrtd is not None else mrtd(plan, records)
        frozen = None if records is None else tuple(records)
        if plan.spec.td_config.edk2 is None:
            return Measurement(plan.spec.technology, digest, None, None, frozen)
        from cvmlaunch.measure.rtmr import boot_events, plan_boot_inputs, rtmrs

        events = tuple(boot_events(plan_boot_inputs(plan)))
        return Measurement(plan.spec.technology, digest, None, None, frozen, rtmrs(events), events)
    steps: list[Step] | None = [] if trace else None
    spec = plan.spec
    if spec.technology is Technology.SEV_SNP:
        digests = snp_digest(plan, steps)
        return Measurement(
            spec.technology, digests.launch_digest, digests.firmware_digest, None, _freeze(steps)
        )
    from cvmlaunch.measure.sev import launch_measure, sev_digest  # and hmac: not for SNP

    digest = sev_digest(plan, steps)
    secret = spec.launch_secret
    hmac = None if secret is None else launch_measure(digest, spec.sev_policy, secret)
    return Measurement(spec.technology, digest, None, hmac, _freeze(steps))


def _freeze(steps: list[Step] | None) -> tuple[Step, ...] | None:
    return None if steps is None else tuple(steps)


__all__ = ["Measurement", "Step", "measure"]
