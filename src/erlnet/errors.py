"""Errors a user can act on. The CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations


class ErlnetError(Exception):
    """Base class of errors whose message is meant for the user."""


class InputError(ErlnetError):
    """Bad user input: missing file, not a video, corrupt stream, no face, ..."""


class FormatError(ErlnetError):
    """A file written by erlnet (subject, avatar, model) is missing, corrupt or of another schema version."""
