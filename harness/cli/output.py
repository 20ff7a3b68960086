"""Stdout for a command's result alone: what a script reads (`harness kernel | jq`).

A command with a machine-readable output does its work inside `progress_to_stderr()`: everything written to
stdout meanwhile, by this process or a child (make, apt-get, QEMU's probe boot), lands on stderr, and the
command prints its document after the block.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_to_stderr() -> Iterator[None]:
    """File descriptor 1 is a copy of 2 for the duration, so that children inherit the redirection too."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to keep clean
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):  # where sys.stdout is not fd 1 (a test's capture)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
