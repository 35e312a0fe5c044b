"""Strict reading of what a client sends, shared by every sandbox server (issue 22: hostile input).

Each server answers malformed input with its own error (Kubernetes ``Status``, OSS XML, ACK JSON, the admin
endpoint's ``{"error"}``); these helpers only decide *whether* the input is acceptable, without ever raising
anything but the caller's error:

- :func:`ascii_uint`: a decimal number as HTTP and the cloud APIs mean it, ASCII digits only. Python's
  ``str.isdigit`` is true for ``²`` (and ``int("²")`` then raises), and ``int`` accepts ``٣``, ``1_000`` and
  surrounding blanks; none of those is a number on the wire. Lengths are bounded before ``int`` (which refuses
  strings of more than 4300 digits with a ValueError of its own).
- :func:`same_secret`: constant-time comparison of a computed signature with the one sent, which may hold any
  character (``hmac.compare_digest`` raises TypeError on non-ASCII ``str``).
- :func:`read_capped`: a request body read chunk by chunk, refused as soon as it passes the cap (a declared
  ``Content-Length`` over the cap is refused before a byte is read).
- :func:`nesting_ok`: whether decoded JSON stays within a depth, checked without recursion.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

MAX_UINT_DIGITS = 19  # 9223372036854775807, the largest int64: every numeric field the servers read fits


def ascii_uint(text: str | None, max_digits: int = MAX_UINT_DIGITS) -> int | None:
    """``text`` as a non-negative integer when it is 1..max_digits ASCII digits, else None."""
    if not text or len(text) > max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def same_secret(expected: str, provided: str) -> bool:
    """Constant-time equality of a computed signature and the sent one, whatever characters the latter holds."""
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8", "surrogateescape"))


class TooLarge(Exception):
    """The body passed the cap; the caller answers with its service's own error."""


async def read_capped(headers: Any, stream: Callable[[], AsyncIterator[bytes]], cap: int) -> bytes:
    """The whole body, or :class:`TooLarge` once it passes ``cap`` bytes (or declares it will)."""
    declared = ascii_uint(headers.get("content-length"))
    if declared is not None and declared > cap:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in stream():
        size += len(chunk)
        if size > cap:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_ok(value: Any, max_depth: int) -> bool:
    """Whether every list/dict in ``value`` is at most ``max_depth`` levels deep (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            if level > max_depth:
                return False
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            if level > max_depth:
                return False
            stack.extend((v, level + 1) for v in item)
    return True
