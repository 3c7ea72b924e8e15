"""JSON text for values decoded with `parse_float=Decimal`.

The standard encoder cannot write a Decimal as a number, and going through
float would change values such as 0.1000000000000000055. `dumps` writes each
Decimal with its own digits, so the stored text keeps exactly the value the
sender sent. Output is compact (no spaces) and keeps non-ASCII characters as
they are.
"""

import math
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any


def dumps(value: Any) -> str:
    """Serialise dicts, lists, strings, ints, Decimals, finite floats, booleans and None."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(encode_basestring(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as JSON")
        parts.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written as JSON")
        parts.append(float.__repr__(value))
    elif isinstance(value, dict):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                parts.append(",")
            parts.append(encode_basestring(str(key)))
            parts.append(":")
            _write(item, parts)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"{type(value).__name__} cannot be written as JSON")
