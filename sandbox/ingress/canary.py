"""Canary Ingresses as ingress-nginx implements them: the annotations, and the per-request choice (pure functions).

Sources (kubernetes/ingress-nginx):

- ``internal/ingress/annotations/canary/main.go`` (``Parse``): ``nginx.ingress.kubernetes.io/canary`` is a Go
  ``strconv.ParseBool`` value (``1 t T TRUE true True`` / ``0 f F FALSE false False``; anything else: not a canary);
  ``canary-weight`` and ``canary-weight-total`` are ``strconv.Atoi`` integers (invalid or missing: weight 0, total
  100); ``canary-by-header``, ``-value`` and ``canary-by-cookie`` must be "basic chars" (``parser.BasicCharsRegex``,
  spaces removed first: letters, digits, ``- . _ ~ / :``), ``canary-by-header-pattern`` ``parser.IsValidRegex``;
  a value failing its validator is treated as unset. Canary settings on an Ingress without ``canary: "true"`` are
  "configured but not enabled" and ignored (the Ingress is an ordinary one).
- ``rootfs/etc/nginx/lua/balancer.lua`` (``route_to_alternative_balancer``), evaluated per request, in this order:
  1. the header named by ``canary-by-header`` (``ngx.var["http_" .. name]``: case-insensitive, ``-`` and ``_``
     alike), if present: with ``canary-by-header-value`` set, equal to it -> canary, else fall through; otherwise
     with ``canary-by-header-pattern`` set, a PCRE search (``ngx.re.match``, unanchored) -> canary on a match, fall
     through on no match, **main** when the pattern fails to compile; otherwise ``always`` -> canary, ``never`` ->
     main, anything else falls through;
  2. the cookie named by ``canary-by-cookie`` (``ngx.var["cookie_" .. name]``): ``always`` -> canary, ``never`` ->
     main, anything else falls through;
  3. ``math.random(total) <= weight``, ``total`` = ``canary-weight-total`` when it is above 100, else 100 (a
     total below 100 is ignored by the Lua code).
  Session affinity (``is_affinitized``) is not emulated: the sandbox has no sticky sessions.
- Request headers nginx never sees: ``ngx_http_parse_header_line`` (nginx ``src/http/ngx_http_parse.c``) marks a
  header name with a character other than letters, digits and ``-`` invalid (``_`` as well, unless
  ``underscores_in_headers on``), and ``ngx_http_process_request_headers`` (``ngx_http_request.c``) skips it with
  "client sent invalid header line" when ``ignore_invalid_headers`` is on. ingress-nginx's ConfigMap defaults are
  ``ignore-invalid-headers: "true"`` and ``enable-underscores-in-headers: "false"``
  (``internal/ingress/controller/config/config.go``; ``nginx.tmpl`` writes both directives), as on ACK. So
  ``X_Canary: always`` selects nothing, while an annotation ``canary-by-header: X_Canary`` (valid for the annotation
  parser) is ``$http_x_canary`` and matches the request header ``X-Canary`` (:func:`header_value`).
- Documentation: ``docs/user-guide/nginx-configuration/annotations.md#canary`` ("Canary rules are evaluated in order
  of precedence ... canary-by-header -> canary-by-cookie -> canary-weight"; "Currently a maximum of one canary
  ingress can be applied per Ingress rule").
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
WEIGHT_TOTAL = PREFIX + "canary-weight-total"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
BY_HEADER_PATTERN = PREFIX + "canary-by-header-pattern"
BY_COOKIE = PREFIX + "canary-by-cookie"
DEFAULT_WEIGHT_TOTAL = 100

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_ATOI = re.compile(r"[+-]?[0-9]+")
_ALNUM = r"\-._~a-zA-Z0-9:"  # parser.alphaNumericChars
_BASIC_CHARS = re.compile(rf"[/{_ALNUM}]*")
_REGEX_CHARS = re.compile(rf"[/{_ALNUM}\^$\[\](){{}}*+?|&=\\]*")  # parser.IsValidRegex (alphanumeric + regex chars)


@dataclass(frozen=True)
class TrafficShapingPolicy:
    """``ingress.TrafficShapingPolicy`` of the canary's upstream (``newTrafficShapingPolicy``)."""

    weight: int = 0
    weight_total: int = DEFAULT_WEIGHT_TOTAL
    header: str = ""
    header_value: str = ""
    header_pattern: str = ""
    cookie: str = ""


def _atoi(value: str | None) -> int | None:
    return int(value) if value is not None and _ATOI.fullmatch(value) else None


def _chars(value: str | None, rx: re.Pattern[str], remove_space: bool = True) -> str:
    if value is None:
        return ""
    return value if rx.fullmatch(value.replace(" ", "") if remove_space else value) else ""


def parse(annotations: dict[str, str] | None) -> TrafficShapingPolicy | None:
    """The canary policy of an Ingress, or None when the Ingress is not a canary."""
    ann = annotations or {}
    if ann.get(CANARY) not in _GO_TRUE:
        return None
    weight = _atoi(ann.get(WEIGHT))
    total = _atoi(ann.get(WEIGHT_TOTAL))
    return TrafficShapingPolicy(
        weight=weight if weight is not None else 0,
        weight_total=total if total is not None else DEFAULT_WEIGHT_TOTAL,
        header=_chars(ann.get(BY_HEADER), _BASIC_CHARS),
        header_value=_chars(ann.get(BY_HEADER_VALUE), _BASIC_CHARS),
        header_pattern=_chars(ann.get(BY_HEADER_PATTERN), _REGEX_CHARS, remove_space=False),
        cookie=_chars(ann.get(BY_COOKIE), _BASIC_CHARS),
    )


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _nginx_header_name(name: str) -> str:
    return name.lower().replace("-", "_")


_VALID_NAME = re.compile(rb"[A-Za-z0-9-]+")


@lru_cache(maxsize=1024)
def valid_header_name(name: bytes) -> bool:
    """Whether nginx keeps a request header of this name (``ignore_invalid_headers on``, no underscores)."""
    return _VALID_NAME.fullmatch(name) is not None


def header_value(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """``$http_<name>``: every request header of that name (case-insensitive, ``-`` as ``_``), joined by ``, ``
    (nginx >= 1.23.0 joins repeated headers; ingress-nginx's current images are built on nginx 1.25+). Headers
    nginx dropped as invalid are not there."""
    want = _nginx_header_name(name)
    found = [v.decode("latin-1") for k, v in headers
             if valid_header_name(k) and _nginx_header_name(k.decode("latin-1")) == want]
    return ", ".join(found) if found else None


def cookie_value(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """``$cookie_<name>``: the first cookie of that name (case-insensitive, as nginx's cookie lookup) in the
    ``Cookie`` header(s)."""
    want = name.lower()
    for k, v in headers:
        if k.lower() != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, sep, val = part.strip().partition("=")
            if sep and key.lower() == want:
                return val
    return None


def effective_total(policy: TrafficShapingPolicy) -> int:
    return policy.weight_total if policy.weight_total > DEFAULT_WEIGHT_TOTAL else DEFAULT_WEIGHT_TOTAL


def route_to_canary(policy: TrafficShapingPolicy, headers: Iterable[tuple[bytes, bytes]],
                    randint: Callable[[int, int], int] = random.randint) -> bool:
    """``route_to_alternative_balancer``: does this request go to the canary? ``headers`` as ASGI gives them."""
    headers = list(headers)
    if policy.header:
        value = header_value(headers, policy.header)
        if value is not None:
            if policy.header_value:
                if value == policy.header_value:
                    return True
            elif policy.header_pattern:
                rx = _compile(policy.header_pattern)
                if rx is None:
                    return False  # "error when matching canary-by-header-pattern": main
                if rx.search(value):
                    return True
            elif value == "always":
                return True
            elif value == "never":
                return False
    if policy.cookie:
        value = cookie_value(headers, policy.cookie)
        if value == "always":
            return True
        if value == "never":
            return False
    return randint(1, effective_total(policy)) <= policy.weight
