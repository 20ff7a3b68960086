"""What `harness run` hands its pytest session: the kernel it prepared, so that prepare() runs once per run.

harness/app/run.py prepares the kernel, then starts pytest in-process with a `PreparedKernel` among
pytest.main's plugins; the plugin's `kernel` fixture takes it from there instead of preparing again, and
timings.json's source_s/config_s/kernel_s/image_s are the figures of that one preparation. Under
pytest-xdist the workers are other processes: the controller sends each a serialized reference to the
same artifacts (`to_json`: paths, keys and the tree's identity, no file contents), and a worker rebuilds
the Prepared from it (`from_json`), checking that the build and image are still where the controller
left them. A pytest started without this plugin (`pytest suites/`) prepares the kernel itself.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.kernel.build import KernelBuild
from harness.kernel.image import Image
from harness.kernel.prepare import Prepared
from harness.kernel.source import KernelTree

PLUGIN_NAME = "harness-prepared-kernel"
WORKERINPUT_KEY = "harness_prepared"


class PreparedKernel:
    """A pytest plugin object that only carries the run's Prepared (its hooks are the harness plugin's)."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        self.__name__ = PLUGIN_NAME  # pytest registers a plugin object under its __name__; the fixture looks it up


def to_json(prepared: Prepared) -> dict[str, Any]:
    return {"tree": _tree_json(prepared.tree), "build": {"dir": str(prepared.build.dir), "key": prepared.build.key,
                                                         "release": prepared.build.release},
            "image": {k: str(v) for k, v in asdict(prepared.image).items()}, "notifier": prepared.notifier,
            "fragments": list(prepared.fragments), "timings": dict(prepared.timings)}


def from_json(data: dict[str, Any]) -> Prepared:
    """The controller's Prepared in a worker; the artifacts must still be there (a cache cleaned meanwhile is not)."""
    tree = _tree_from(data["tree"])
    build = KernelBuild(tree, Path(data["build"]["dir"]), str(data["build"]["key"]), str(data["build"]["release"]))
    image = Image(**{k: Path(v) for k, v in data["image"].items()})
    for needed in (build.kernel_image, build.config, image.initramfs, image.host_key_pub):
        if not needed.is_file():
            raise UserError(f"the kernel this run prepared is gone: {needed} is missing (was the cache cleaned?)")
    return Prepared(tree, build, image, str(data["notifier"]), tuple(data["fragments"]),
                    {str(k): float(v) for k, v in data["timings"].items()})


def _tree_json(tree: KernelTree) -> dict[str, Any]:
    return {"path": str(tree.path), "version": tree.version, "identity": tree.identity, "immutable": tree.immutable,
            "base": _tree_json(tree.base) if tree.base else None, "changed": list(tree.changed),
            "imported": tree.imported, "owned": tree.owned}


def _tree_from(d: dict[str, Any]) -> KernelTree:
    return KernelTree(Path(d["path"]), str(d["version"]), str(d["identity"]), bool(d["immutable"]),
                      _tree_from(d["base"]) if d.get("base") else None, tuple(d.get("changed") or ()),
                      bool(d.get("imported")), bool(d.get("owned")))
