"""Validation of the URLs a callback may carry (workflow run, artifacts).

Only absolute http(s) URLs with a host pass. Browsers forgive a lot (tabs
inside a scheme, backslashes, leading spaces), so anything a browser might
read differently from `urlsplit` is rejected outright instead of cleaned.
"""

import re
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:.]+\]$")
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f-\x9f\\<>\"'`]")


class UrlError(ValueError):
    pass


def check_http_url(value: str) -> str:
    """Return `value` unchanged if it is a safe absolute http(s) URL, else raise UrlError."""
    if len(value) > MAX_URL_CHARS:
        raise UrlError(f"URL is longer than {MAX_URL_CHARS} characters")
    if FORBIDDEN_CHARACTERS.search(value):
        raise UrlError("URL contains whitespace, control characters, quotes or backslashes")
    if not (value.startswith("http://") or value.startswith("https://")):
        raise UrlError("URL must start with http:// or https://")

    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise UrlError("URL must not contain user information before the host")
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if not host or not HOST_PATTERN.match(host) or host.startswith(".") or ".." in host:
        raise UrlError("URL has no valid host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        raise UrlError("URL has an invalid port") from None
    return value


def is_http_url(value: object) -> bool:
    """Tell whether a stored value may be rendered as a link."""
    if not isinstance(value, str) or not value:
        return False
    try:
        check_http_url(value)
    except UrlError:
        return False
    return True
