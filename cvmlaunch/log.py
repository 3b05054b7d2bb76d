"""Structured logging to stderr with stable event names and key/value fields.

structlog is imported only when an event is actually emitted at the configured level, so
a quiet command-line run never pays its import cost.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any

# The standard library's level numbers, without importing `logging` at start-up.
DEBUG, INFO, WARNING = 10, 20, 30
_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning"}


class _State:
    threshold = WARNING
    configured = False


def set_level(level: int) -> None:
    """Emit events at `level` (DEBUG, INFO, WARNING) and above."""
    _State.threshold = level


class Logger:
    """A logger whose events cost nothing until they pass the level threshold."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if level < _State.threshold:
            return
        import structlog

        if not _State.configured:
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.KeyValueRenderer(
                        key_order=["timestamp", "level", "event"], sort_keys=True
                    ),
                ],
                # Bound to whatever sys.stderr is when each event is emitted.
                logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
                cache_logger_on_first_use=False,
            )
            _State.configured = True
        getattr(structlog.get_logger(), _NAMES[level])(event, logger=self._name, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(WARNING, event, fields)


def get_logger(name: str) -> Logger:
    return Logger(name)
