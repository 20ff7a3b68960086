"""Text from outside (a guest's console, a test's reason) made safe for the files and terminals that show it.

XML 1.0 forbids most C0 controls even as character references, so one \\x07 in a reason makes a JUnit
file that no CI can parse; an ESC in a terminal summary is an escape sequence; HTML calls them parse
errors. Every writer of results passes such text through `visible`, which spells each control
character out as text (\\x07, \\x7f, \\ud800), so that it is still seen, not silently dropped.
"""

from __future__ import annotations

import re

# C0 controls but tab, newline and carriage return; DEL and the C1 controls; lone surrogates and the two
# non-characters XML excludes. Tab, newline and CR stay: XML, JSON and HTML all carry them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _spelled(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character replaced by its escape, e.g. "\\x07"; other text unchanged."""
    return _CONTROL.sub(_spelled, text)

