"""How much the host takes from a guest: every read from it is bounded (docs/security.md, "the guest boundary").

The defaults are configs/guest-limits.yaml, which says why each is what it is; HARNESS_LIMIT_<KEY> overrides
one for a run (HARNESS_LIMIT_OUTPUT_BYTES=128M). Going over a limit is the guest's doing and ends its work as
the FLOOD outcome (harness/results/outcome.py GuestFlooded, through harness/vm/faults.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from harness import paths, schema
from harness.errors import UserError

LIMITS_FILE = paths.CONFIGS / "guest-limits.yaml"
ENV_PREFIX = "HARNESS_LIMIT_"
_SIZE = re.compile(r"(\d+)\s*([KMG]?)i?B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class LimitsError(UserError):
    """A guest limit that is not a size, or too small for the harness to work under."""


@dataclass(frozen=True)
class GuestLimits:
    frame_bytes: int  # the longest frame the command server may announce
    output_bytes: int  # a command's stdout, and apart from it its stderr
    console_memory_bytes: int  # console text kept in memory (its tail)
    console_log_bytes: int  # console.log on disk; past it the guest flooded


# Below these the harness cannot do its own work: the server's 64 KiB pieces of output, the ready marker's
# line, a boot's console log.
MINIMUM = {"frame_bytes": 65536 + 64, "output_bytes": 1, "console_memory_bytes": 4096, "console_log_bytes": 65536}


def parse_size(text: object, where: str) -> int:
    """1048576, "1M", "64K", "2 GiB" -> bytes; LimitsError naming `where` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise LimitsError(f"{where}: {text!r} is not a size (bytes, or a number ending in K, M or G)")
    return int(m[1]) * _UNITS[m[2].upper()]


# A size: bytes, or a number ending in K, M or G (powers of 1024); parse_size() reads it.
_SIZE_TYPE = schema.Either((schema.Int(min=1), schema.Str(_SIZE.pattern, "a size (bytes, or a number ending in K, "
                                                                          "M or G)")))
SCHEMA = schema.Record({
    "frame_bytes": schema.required(_SIZE_TYPE, "the longest frame the command server may announce"),
    "output_bytes": schema.required(_SIZE_TYPE, "a command's stdout, and apart from it its stderr"),
    "console_memory_bytes": schema.required(_SIZE_TYPE, "the console text kept in memory (its tail)"),
    "console_log_bytes": schema.required(_SIZE_TYPE, "console.log on disk; past it the guest flooded"),
}, "the guest limits")


def load(environ: Mapping[str, str] | None = None, path: Path = LIMITS_FILE) -> GuestLimits:
    """The limits of this run: configs/guest-limits.yaml, each overridden by HARNESS_LIMIT_<KEY> if set."""
    env = os.environ if environ is None else environ
    data = schema.load(path, SCHEMA, LimitsError).data
    values = {}
    for key in sorted(f.name for f in fields(GuestLimits)):
        var = ENV_PREFIX + key.upper()
        where = f"environment variable {var}" if var in env else f"{path}, key {key}"
        value = parse_size(env.get(var, data[key]), where)
        if value < MINIMUM[key]:
            raise LimitsError(f"{where}: {value} bytes is below the least the harness works with ({MINIMUM[key]})")
        values[key] = value
    return GuestLimits(**values)


def size(n: int) -> str:
    """4194304 -> "4 MiB", 1000 -> "1000 bytes": a limit as a message says it."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"
