"""How a command that did not reach its verdict ended: the one mapping from an exception to an exit status.

harness/cli/main.py calls `failure_of` once for every command; what it returns is printed as one paragraph
on stderr and, with `harness --record FILE`, written as an ExitRecord (harness/results/model.py), which is
how the matrix runner learns how a cell or a build ended without reading its output.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from harness.errors import EXIT_INFRA, EXIT_INTERRUPTED, EXIT_USER, InfraError, UserError
from harness.results.outcome import HarnessFault
from harness.vm.ssh import SSHError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Failure:
    exit_status: int
    kind: str  # user | infra | fault | interrupted (harness/results/model.py ExitRecord)
    message: str  # one paragraph, without the "harness: " of stderr


def failure_of(e: BaseException) -> Failure | None:
    """The failure `e` is, or None for an exception that is a bug (a traceback is then the right report)."""
    if isinstance(e, HarnessFault):  # the machine's fault, said the one way (harness/vm/faults.py): outcome first
        text = str(e)
        return Failure(EXIT_USER, "fault", text if text.startswith(e.outcome.value) else f"{e.outcome.value}: {text}")
    if isinstance(e, SSHError):  # the channel to a guest this command drove, outside faults.guarded
        return Failure(EXIT_USER, "fault", str(e))
    if isinstance(e, UserError):
        return Failure(EXIT_USER, "user", str(e))
    if isinstance(e, InfraError):
        return Failure(EXIT_INFRA, "infra", str(e))
    if isinstance(e, OSError) and e.errno in NO_SPACE:  # wherever it happened: the machine's disk, not the input
        return Failure(EXIT_INFRA, "infra", f"{e.filename or 'a write'}: {e.strerror} (free some space, or set "
                                            "HARNESS_CACHE / --results-dir to a larger disk)")
    if isinstance(e, KeyboardInterrupt):
        return Failure(EXIT_INTERRUPTED, "interrupted", "interrupted")
    return None
