"""The small set of errors a user can cause; the CLI turns each into one line and an exit code."""

from __future__ import annotations


class SmartAssignError(Exception):
    """Base class: a problem the user can fix, with a message naming the file and the fix."""

    exit_code = 2


class ConfigError(SmartAssignError):
    """A configuration value or file is invalid."""


class ImageError(SmartAssignError):
    """An image cannot be read, is too large, or has an unsupported format."""


class WeightsError(SmartAssignError):
    """A weights file is missing, damaged, or does not match the configuration."""


class DataError(SmartAssignError):
    """A dataset folder is missing files or has unreadable or mis-sized pairs."""


class TrainingError(SmartAssignError):
    """Training cannot continue (e.g. too many non-finite losses in a row)."""
