"""The line between what the user can fix and everything else.

A `UserError` is bad input or a machine state the user can change: an unknown Kconfig symbol, a
fragment that does not stick, a missing tree or QEMU, malformed YAML, an unwritable results
directory. Each stage raises its own subclass (ConfigError, PackageError, MachineError, ...), and
`harness` catches the base class once, in harness/cli/main.py: one paragraph on stderr, exit 2.
"""


class UserError(Exception):
    """Bad input or machine state that the user can fix; the message says what and how."""
