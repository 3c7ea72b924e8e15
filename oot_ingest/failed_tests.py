"""Caps on the failed-test details stored with a record.

At most 1,000 entries, a message of at most 1 KiB and a stack trace of at
most 4 KiB (UTF-8 bytes, never splitting a character), and 256 KiB for the
whole JSON list. When the list is still too large, stack traces are dropped
first, then entries from the end. The caller stores how much was cut.
"""

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MAX_ENTRIES = 1000
MAX_MESSAGE_BYTES = 1024
MAX_STACKTRACE_BYTES = 4096
MAX_NAME_BYTES = 1024
MAX_LIST_BYTES = 256 * 1024


@dataclass
class CappedFailedTests:
    json: str
    entries_cut: int
    bytes_cut: int


def cut_utf8(text: str, max_bytes: int) -> tuple[str, int]:
    """Cut `text` to at most `max_bytes` UTF-8 bytes on a character boundary; return it and the bytes removed."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, 0
    kept = encoded[:max_bytes].decode("utf-8", errors="ignore")
    return kept, len(encoded) - len(kept.encode("utf-8"))


def _text_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _duration(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    number = float(value)
    return number if number >= 0 else None


def _normalise(entry: Any) -> tuple[dict, int]:
    """Keep the known fields of one entry, each cut to its cap."""
    if not isinstance(entry, dict):
        entry = {"name": _text_field(entry)}
    cut_total = 0
    result: dict[str, Any] = {}
    for name, cap in (
        ("name", MAX_NAME_BYTES),
        ("classname", MAX_NAME_BYTES),
        ("file", MAX_NAME_BYTES),
        ("message", MAX_MESSAGE_BYTES),
        ("stacktrace", MAX_STACKTRACE_BYTES),
    ):
        if entry.get(name) is None:
            continue
        text, cut = cut_utf8(_text_field(entry[name]), cap)
        result[name] = text
        cut_total += cut
    duration = _duration(entry.get("duration", entry.get("duration_s")))
    if duration is not None:
        result["duration"] = duration
    return result, cut_total


def _size(entries: list[dict]) -> int:
    return len(json.dumps(entries, ensure_ascii=False).encode("utf-8"))


def cap_failed_tests(entries: list) -> CappedFailedTests:
    """Apply every cap and return the JSON text with the number of entries and bytes cut."""
    entries_cut = max(0, len(entries) - MAX_ENTRIES)
    bytes_cut = 0
    kept: list[dict] = []
    for entry in entries[:MAX_ENTRIES]:
        normalised, cut = _normalise(entry)
        kept.append(normalised)
        bytes_cut += cut

    size = _size(kept)
    if size > MAX_LIST_BYTES:
        for entry in reversed(kept):
            trace = entry.pop("stacktrace", None)
            if trace is None:
                continue
            removed = len(json.dumps(trace, ensure_ascii=False).encode("utf-8")) + len(', "stacktrace": ')
            bytes_cut += removed
            size -= removed
            if size <= MAX_LIST_BYTES:
                break
        size = _size(kept)

    while kept and size > MAX_LIST_BYTES:
        removed_entry = kept.pop()
        removed = len(json.dumps(removed_entry, ensure_ascii=False).encode("utf-8")) + 2
        bytes_cut += removed
        entries_cut += 1
        size -= removed

    text = json.dumps(kept, ensure_ascii=False)
    while kept and len(text.encode("utf-8")) > MAX_LIST_BYTES:
        # The running size above is exact for this encoding; this only guards it.
        kept.pop()
        entries_cut += 1
        text = json.dumps(kept, ensure_ascii=False)

    return CappedFailedTests(json=text, entries_cut=entries_cut, bytes_cut=bytes_cut)
