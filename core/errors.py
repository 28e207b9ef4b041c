"""Errors a user can fix: every job prints them as one line and exits non-zero, never a traceback."""


class AisleError(Exception):
    """Base of the errors a user can act on; the message says what is wrong and where."""


class InputError(AisleError):
    """An input file or value cannot be used (missing, empty, wrong encoding, missing column)."""
