"""Write-then-rename helpers: an interrupted run never leaves a partial artifact under its final name; and whether
a results directory can take a run. The cache's locks are locks.py's."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import UserError


class OutputDirError(UserError):
    """Where results are to go cannot take them: not a directory, read-only, or (nearly) full."""


MIN_FREE_MIB = 20  # a run writes console logs, dmesg, the .config and its reports: a few MiB at most


def check_output_dir(path: Path, min_free_mib: int = MIN_FREE_MIB) -> None:
    """Before anything is built or booted: can `path` (or the directory it would be made in) take a run?

    Creates nothing: the nearest existing ancestor must be a writable directory with room to spare.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"results directory {path} cannot be made: {existing} is not a directory")
    st = os.statvfs(existing)
    if st.f_flag & os.ST_RDONLY:
        raise OutputDirError(f"results directory {path} is on a read-only file system")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"results directory {path} is not writable ({existing}: permission denied)")
    free_mib = st.f_bavail * st.f_frsize / 2**20
    if free_mib < min_free_mib:
        raise OutputDirError(f"results directory {path} has {free_mib:.1f} MiB free; a run needs at least "
                             f"{min_free_mib} MiB (disk full?)")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory next to `final`; it becomes `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
