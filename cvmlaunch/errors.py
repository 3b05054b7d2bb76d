"""The one error root of cvmlaunch and its context-carrying subclasses.

Every failure a caller can act on is a `CvmlaunchError`; the CLI turns any of them into one
line on stderr and exit code 2 (bad input) or 1 (a check that failed).
"""

from __future__ import annotations

from cvmlaunch.namedtuple import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from collections.abc import Sequence


class CvmlaunchError(Exception):
    """Root of every error cvmlaunch raises on purpose."""


class FieldProblem(NamedTuple):
    """One invalid field: its dotted name (as written in the profile or flag) and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ProfileError(CvmlaunchError):
    """A guest profile (file, flags or API arguments) is invalid; lists every problem at once."""

    def __init__(self, problems: Sequence[FieldProblem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(p) for p in self.problems))


class InputError(CvmlaunchError):
    """An input file (kernel, initrd, firmware, key) cannot be read or is unusable."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class OutputError(CvmlaunchError):
    """An output path (a record, a dump) cannot be written safely: it names a device, a
    FIFO, a directory or one of the inputs, or the write failed. Nothing was replaced."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class FirmwareError(CvmlaunchError):
    """A firmware image is malformed, hostile, or lacks what the launch needs.

    `offset` is the file offset of the offending structure when one is known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        self.reason = message
        where = f" (at file offset {offset:#x})" if offset is not None else ""
        super().__init__(message + where)


class KvmError(CvmlaunchError):
    """An ioctl (or open/mmap) on the kernel failed: which call, the errno, the values sent.

    `step` names the launch phase when the launch pipeline knows it.
    """

    def __init__(
        self,
        call: str,
        errno: int,
        fields: dict[str, int] | None = None,
        step: str | None = None,
        status: str | None = None,
    ) -> None:
        from cvmlaunch.abi.kvm import errno_name  # abi is loaded only by launches

        self.call = call
        self.errno = errno
        self.errno_name = errno_name(errno)
        self.fields = dict(fields or {})
        self.step = step
        self.status = status  # the firmware's refusal (SEV_RET_* name) behind an EIO
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.step}: " if self.step else ""
        status = f", firmware status {self.status}" if self.status else ""
        values = " ".join(f"{k}={v:#x}" for k, v in self.fields.items())
        return f"{where}{self.call} failed with {self.errno_name}{status}" + (
            f" ({values})" if values else ""
        )

    def at(self, step: str) -> KvmError:
        """This error, named with the launch phase it happened in."""
        self.step = step
        self.args = (self._message(),)
        return self


class LaunchError(CvmlaunchError):
    """A launch cannot go on: the host lacks what the profile needs, or a readback differs."""


class AttestationError(CvmlaunchError):
    """Evidence (a report, a quote, a certificate) cannot be used: truncated, an unknown
    version, or unreadable. A report that parses but fails a check is not an error: it is a
    failed check in the audit result.

    `offset` is the byte offset of the offending field when one is known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        self.reason = message
        where = f" (at offset {offset:#x})" if offset is not None else ""
        super().__init__(message + where)
