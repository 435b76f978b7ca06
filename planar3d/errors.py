"""Exceptions raised for bad user input.

Every error a user can cause (a bad file, a bad flag value, a bad shape) is a
:class:`Planar3DError`. Its message is one line that names the offending file or
argument and the problem; the command-line tools print it without a traceback and
exit with status 2.
"""

from __future__ import annotations

import os

__all__ = ["Planar3DError", "InputFileError"]


class Planar3DError(ValueError):
    """A problem with the user's input, reported as one line."""


class InputFileError(Planar3DError):
    """A problem with one file: the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
