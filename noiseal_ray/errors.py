"""Errors a user can act on. The CLI maps each class to one exit code, in one place (cli.py)."""

from __future__ import annotations


class NoisealError(Exception):
    """Base class: a message meant for the user, no traceback needed."""

    exit_code: int = 1


class InputError(NoisealError):
    """The input corpus (or test data) is unreadable or invalid. Names file, column, rows."""

    exit_code = 2


class ConfigError(NoisealError):
    """A configuration value or flag combination is invalid."""

    exit_code = 2


class OutputError(NoisealError):
    """The output location cannot be written, or holds a run that does not match."""

    exit_code = 3


class AnnotatorError(NoisealError):
    """The annotator (LLM endpoint, model) cannot be used at all."""

    exit_code = 4
