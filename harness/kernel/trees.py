"""KSRC, the one way every command names a kernel tree: `debian:X.Y` (or nothing: Debian's 6.12), a path to
a tree of the user's, or `patched:<key>` (a base plus a series, made by `harness compare`).

The kinds live in source.py (Debian's and the user's) and patches.py (patched copies, which build on
source.py's trees): this module is above both, so neither imports the other back.
"""

from __future__ import annotations

from harness.kernel import patches, source
from harness.kernel.source import KernelTree


def resolve(ksrc: str | None) -> KernelTree:
    """The tree a KSRC names, of any kind."""
    if ksrc and ksrc.startswith(patches.KSRC_PREFIX):
        return patches.cached_tree(ksrc)
    return source.resolve(ksrc)
