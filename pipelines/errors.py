"""The exceptions the pipelines raise, in one module that imports nothing of the project, so
that any pipeline module can catch another's errors without importing it."""

from __future__ import annotations


class DataError(ValueError):
    """The data set cannot be used for training."""


class PromotionError(RuntimeError):
    """The version cannot serve: it is missing, does not load, or predicts nonsense."""


class LockTimeout(RuntimeError):
    """Another promotion held the lock for longer than this one would wait."""


class GatewayUnreadable(OSError):
    """The gateway could not be reached, or did not answer as one."""


class KeyRefused(GatewayUnreadable):
    """The gateway wants an API key this job does not have."""


class BatchError(Exception):
    """The batch scoring job cannot run as asked; the message says what to fix."""


class MonitorError(Exception):
    """The monitor job cannot run as asked; the message says what to fix."""
