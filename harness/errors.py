"""The line between what the user can fix, what the machine failed at, and everything else.

A `UserError` is bad input or a state of the user's own making: an unknown Kconfig symbol, a fragment
that does not stick, a missing tree, malformed YAML, an unwritable results directory, a tree of theirs
that does not compile. An `InfraError` is the machine or the world failing under good input: apt or the
network, a missing QEMU or tool, a full disk. Each stage raises its own subclass (ConfigError,
PackageError, AptFailed, QemuMissing, ...), and `harness` catches both roots once, in harness/cli/main.py
(through harness/app/failures.py): one paragraph on stderr and the exit status below, never a traceback.

A CI reads the exit status: 1 is a verdict on the kernel, 2 is for the person who typed the command,
EXIT_INFRA is for whoever runs the machine (retrying, or fixing the machine, may help; the input is fine).
"""

EXIT_OK = 0
EXIT_VERDICT = 1  # the kernel under test failed something: a test, a regression, a flake
EXIT_USER = 2  # bad input (UserError), or a fault of the guest the command itself drove (harness/vm/faults.py)
EXIT_CHANGED = 3  # `harness compare`: only notifier events changed
EXIT_INFRA = 75  # sysexits' EX_TEMPFAIL: apt, the network, a missing QEMU, a full disk (InfraError)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


class UserError(Exception):
    """Bad input or machine state that the user can fix; the message says what and how."""


class InfraError(Exception):
    """The machine or the network failed under good input: apt, a download, a missing QEMU, a full disk.
    The message says what failed and, where it can, how to fix the machine."""
