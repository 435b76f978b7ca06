"""Exceptions raised for bad user input.

Every error a user can cause (a bad file, a bad flag value, a bad shape) is a
:class:`Planar3DError`. Its message is one line that names the offending file or
argument and the problem; the command-line tools print it without a traceback and
exit with status 2. An :class:`OutputError` (an output that could not be written while
the work was under way: disk full, a folder removed under the run) is printed the same
way and exits with status 1.
"""

from __future__ import annotations

import os

__all__ = ["Planar3DError", "InputFileError", "OutputError"]


class Planar3DError(ValueError):
    """A problem with the user's input, reported as one line."""

    #: exit status of the command-line tools for this error
    exit_status = 2


class InputFileError(Planar3DError):
    """A problem with one file: the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class OutputError(InputFileError):
    """An output that could not be written once the work had started (exit status 1)."""

    exit_status = 1
