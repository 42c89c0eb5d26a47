"""Errors with enough context for a user to fix their input."""

from __future__ import annotations


class SemlayerError(Exception):
    """Base class of the errors the CLI reports as a clear message (exit status 2, no traceback)."""


class FormatError(SemlayerError, ValueError):
    """Bad input file: names the file, the JSON path inside it and what was expected there."""

    def __init__(self, file: str, json_path: str, expected: str):
        self.file = str(file)
        self.json_path = json_path
        self.expected = expected
        where = f"{self.file}: {json_path}" if json_path else self.file
        super().__init__(f"{where}: {expected}")


class ConfigError(SemlayerError, ValueError):
    """Bad configuration file or option."""
