"""Where the harness keeps things: the repo's data, the artifact cache, and the results of runs.

The layout inside one run's directory, and how a new one is named, is harness/results/rundir.py.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
GUEST = REPO / "guest"
IMAGES = REPO / "images"


def cache_root() -> Path:
    """Kernel trees, builds, images and ccache: content-keyed, shared by every run and checkout.

    Outside the checkout on purpose: a fresh clone (as CI makes) still finds the warm ccache.
    """
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmu-notifier-harness"
    # absolute: build directories are symlinks into the trees (harness/kernel/build.py:build_dir)
    return Path(os.environ.get("HARNESS_CACHE", default)).absolute()


def results_root() -> Path:
    return Path(os.environ.get("HARNESS_RESULTS", REPO / "results"))

