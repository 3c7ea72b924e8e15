"""Validation of the URLs a callback may carry (workflow run, artifacts).

Only absolute http(s) URLs with a host pass. Browsers forgive a lot (tabs
inside a scheme, backslashes, leading spaces), so anything a browser might
read differently from `urlsplit` is rejected outright instead of cleaned.
The scheme is matched case-insensitively, as RFC 3986 says it is.
"""

import re
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
SCHEMES = ("http", "https")
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:.]+\]$")
PORT_PATTERN = re.compile(r"^[0-9]{0,5}$")
FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x20\x7f-\x9f\\<>\"'`]")


class UrlError(ValueError):
    pass


def check_http_url(value: str) -> str:
    """Return `value` unchanged if it is a safe absolute http(s) URL, else raise UrlError."""
    if len(value) > MAX_URL_CHARS:
        raise UrlError(f"URL is longer than {MAX_URL_CHARS} characters")
    if FORBIDDEN_CHARACTERS.search(value):
        raise UrlError("URL contains whitespace, control characters, quotes or backslashes")
    scheme, separator, rest = value.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise UrlError("URL must start with http:// or https://")

    # The authority ends at the first "/", "?" or "#", as in every browser.
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise UrlError("URL must not contain user information before the host")
    if authority.startswith("["):
        host, _bracket, port = authority.partition("]")
        host += "]"
        if port and not port.startswith(":"):
            raise UrlError("URL has no valid host")
        port = port[1:]
    else:
        host, _colon, port = authority.partition(":")
    if not HOST_PATTERN.match(host) or host.startswith(".") or ".." in host:
        raise UrlError("URL has no valid host")
    if not PORT_PATTERN.match(port) or (port and int(port) > 65535):
        raise UrlError("URL has an invalid port")

    try:
        # The standard parser must agree on the host; it also rejects
        # malformed IPv6 literals.
        parsed_host = urlsplit(value).netloc
    except ValueError:
        raise UrlError("URL has no valid host") from None
    if parsed_host != authority:
        raise UrlError("URL has no valid host")
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
