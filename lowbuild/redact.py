"""Credentials never leave lowbuild in what it shows or logs.

An artifact URL may carry a user and password (`https://user:pw@host/...`); every
message, progress line, printed digest and log line that names a URL passes it
through `redact` first. The URL itself is used as written: only what is shown changes.
"""

from __future__ import annotations

import re

# scheme://userinfo@ inside the authority (up to the first '/', '?', '#' or space). Greedy
# up to the last '@' there, so a password holding an unescaped '@' is hidden whole.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]+)@")


def _hide(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    # A user alone may itself be a token (`https://TOKEN@host`): hide it as well.
    shown = f"{user}:***" if colon else "***"
    return f"{match['scheme']}{shown}@"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (`user:***@`), and a
    user given without a password (often a token) replaced by `***`."""
    return _USERINFO.sub(_hide, text)
