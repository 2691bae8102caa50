r"""Redaction: no configured secret, URL query or key-like parameter survives in a text.

The one redaction of every error text and every record that leaves the job (exceptions,
dead letters, retry records, logs)::

    redact("POST /services/T/B/xoxb-123 failed", ["xoxb-123"])   # 'POST /services/T/B/*** failed'

:func:`redact` removes each known secret however it is spelled in the text: raw,
percent-encoded (``%2F`` or ``%2f``, ``+`` for a space), JSON-escaped (``\u00e9``,
``\/``) or Python-escaped (``\xe9``), in any mix; then the query string of any URL, and
key-like parameters (``sig=``, ``key=``, ``X-Amz-Signature=``...). A secret shorter than
:data:`MIN_SECRET_CHARS` is not hidden (it would hide ordinary words); a replacement can
never form a secret again (replacing repeats until none is left).

Plain text rules, so the connectors (:mod:`transforms.connectors._policy`) and the
dead-letter and retry-record writers (:mod:`transforms.rules.letters`) share them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "***"
"""What a secret is replaced with in any message."""

MIN_SECRET_CHARS = 4
"""Secrets shorter than this are not redacted (they would hide ordinary text)."""

_QUERY = re.compile(r"(https?://[^\s?'\"<>]*)\?[^\s'\"<>]*")
_SECRET_PARAM = re.compile(
    r"(?i)\b(sig|accountkey|sharedaccesssignature|x-amz-signature|x-amz-credential"
    r"|x-amz-security-token|x-goog-signature|x-goog-credential|key|access_token|token"
    r"|api_key|apikey)=[^&;\s'\"<>]+"
)


def secret_values(*secrets: Any) -> tuple[str, ...]:
    """The plain values to redact: from strings or ``SecretStr``s, short ones left out.

    Longest first, so a secret containing another is replaced whole.
    """
    out = set()
    for s in secrets:
        value = s.get_secret_value() if hasattr(s, "get_secret_value") else s
        if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS:
            out.add(value)
    return tuple(sorted(out, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` (however encoded), URL queries or key parameters.

    >>> redact("GET https://a.example/c/x?sv=1&sig=abc failed")
    'GET https://a.example/c/x?*** failed'
    >>> redact('{"url": "/hooks/s%2Fcr%C3%A9t"}', ["s/crét"])
    '{"url": "/hooks/***"}'
    """
    patterns = [_pattern(s) for s in secret_values(*secrets)]
    changed = True
    while changed:  # a replacement may join text into another occurrence: repeat
        changed = False
        for pattern in patterns:
            text, n = pattern.subn(REDACTED, text)
            changed = changed or n > 0
    text = _QUERY.sub(r"\1?" + REDACTED, text)
    return _SECRET_PARAM.sub(r"\1=" + REDACTED, text)


def _hex(byte: int) -> str:
    """A regex matching ``byte`` as two hex digits in either case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{byte:02X}")


def _spellings(char: str) -> str:
    """A regex matching one character of a secret as any encoding may write it."""
    forms = [re.escape(char)]
    forms.append("".join("%" + _hex(b) for b in char.encode("utf-8")))  # percent-encoding
    if char == " ":
        forms.append(r"\+")  # form encoding
    code = ord(char)
    if code < 0x10000:
        forms.append(r"\\u" + _hex(code >> 8) + _hex(code & 0xFF))
    else:  # JSON writes astral characters as a surrogate pair
        high, low = divmod(code - 0x10000, 0x400)
        forms.append(
            r"\\u" + _hex((0xD800 + high) >> 8) + _hex((0xD800 + high) & 0xFF)
            + r"\\u" + _hex((0xDC00 + low) >> 8) + _hex((0xDC00 + low) & 0xFF)
        )  # fmt: skip
    if code < 0x100:
        forms.append(r"\\x" + _hex(code))  # repr()
    if char in "\"\\/'":
        forms.append(r"\\" + re.escape(char))  # JSON or repr escapes
    return "(?:" + "|".join(forms) + ")"


@functools.lru_cache(maxsize=256)
def _pattern(secret: str) -> re.Pattern[str]:
    return re.compile("".join(_spellings(c) for c in secret))
