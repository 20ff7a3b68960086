"""`harness`: a thin CLI over the pipeline, one module per command in harness/cli/.

Each command module has `register(subparsers)`, which sets `func` (args -> exit status). Errors are
caught once, here: a UserError (harness/errors.py) or a fault of the machine under test is one
paragraph on stderr and exit status 2, never a traceback; Ctrl-C or SIGTERM is 130.
"""

from __future__ import annotations

import argparse
import os
import sys

from harness.cli import bench, compare, config, driver, evidence, kernel, matrix, report, run, shell, trace
from harness.errors import UserError
from harness.results.outcome import HarnessFault
from harness.vm.ssh import SSHError

COMMANDS = (kernel, run, shell, bench, config, matrix, report, trace, driver, evidence, compare)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HarnessFault as e:  # the machine's fault, said the one way (harness/vm/faults.py): outcome first
        text = str(e)
        print(f"harness: {text if text.startswith(e.outcome.value) else f'{e.outcome.value}: {text}'}",
              file=sys.stderr)
        return 2
    except (UserError, SSHError) as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `harness matrix list | head`: the reader is gone, and so is the point of output
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- replaces the closed stream until exit
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
