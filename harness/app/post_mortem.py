"""The `post-mortem` use case: the vmcores a crash or a hang left in a results directory, analysed, or one of
them opened in drgn (harness/observe/vmcore.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.observe import vmcore
from harness.vm.vmcore import INFO


@dataclass(frozen=True)
class PostMortem:
    dumps: list[Path]
    analyses: list[str]  # with --analyse: each dump's, in order
    drgn: list[str]  # without: the command that opens the one dump in drgn


def post_mortem(result: Path, analyse: bool) -> PostMortem:
    if not result.exists():
        raise UserError(f"{result}: no such results directory or vmcore")
    dumps = list(vmcore.dumps_in(result))
    if not dumps:
        raise UserError(f"no vmcore under {result}: a dump is left by a CRASH or TIMEOUT on a kernel built with "
                        "--fragment debug/dump (configs/fragments/debug/dump.config)")
    if not all((d.parent / INFO).exists() for d in dumps):
        raise UserError(f"{', '.join(str(d) for d in dumps if not (d.parent / 'vmcore.json').exists())}: "
                        "no vmcore.json beside it (the vmlinux and modules it needs)")
    if analyse:
        return PostMortem(dumps, [vmcore.analyse(d) for d in dumps], [])
    if len(dumps) > 1:
        raise UserError(f"{len(dumps)} vmcores under {result}; name one:\n" + "\n".join(f"  {d}" for d in dumps))
    return PostMortem(dumps, [], vmcore.drgn_argv(dumps[0]))
