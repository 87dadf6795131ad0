"""Errors that are the user's to fix (a damaged file, a wrong option): their message names the
problem and the fix, so the plugin's commands print it without a traceback. Under fairseq's own
commands (``fairseq-train --user-dir nq_plugin`` ...) :func:`install_excepthook` does the same
for these errors -- and only these; any other exception keeps its traceback."""
from __future__ import annotations

import sys


class UserError(Exception):
    """Marker base: a problem with the user's input, explained by the message."""


def install_excepthook() -> None:
    """Print an uncaught :class:`UserError` as one line (exit status 1), no traceback."""
    previous = sys.excepthook
    if getattr(previous, "_nq_plugin", False):
        return

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"error: {value}", file=sys.stderr)
            return
        previous(kind, value, tb)

    hook._nq_plugin = True
    sys.excepthook = hook


class DataNotFoundError(UserError, FileNotFoundError):
    """A data directory or split that is missing; the message says how to make it."""


class DataFormatError(UserError, ValueError):
    """A data file that cannot be read (truncated, corrupt, another format)."""
