"""Caps on the failed-test details stored with a record.

Only the first 1,000 entries are considered. Each keeps its known fields: a
message of at most 1 KiB, a stack trace of at most 4 KiB and names of at most
1 KiB, cut by UTF-8 bytes on a character boundary. The whole JSON list stays
within 256 KiB: when it is larger, stack traces are dropped first (from the
last entry backwards), then whole entries from the end.

`entries_cut` counts the entries beyond the 1,000th plus those dropped for
size. `bytes_cut` is how many UTF-8 bytes of JSON the caps removed from the
first 1,000 entries: the JSON of those entries with every known field uncut,
minus the stored JSON. Entries beyond the 1,000th are counted in
`entries_cut` only, so the count stays cheap whatever the list holds.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from oot_ingest import jsontext

MAX_ENTRIES = 1000
MAX_MESSAGE_BYTES = 1024
MAX_STACKTRACE_BYTES = 4096
MAX_NAME_BYTES = 1024
MAX_LIST_BYTES = 256 * 1024
MAX_DURATION_SECONDS = Decimal(10**9)

# Known fields in the order they are stored, each with its cap in UTF-8 bytes.
TEXT_FIELDS = (
    ("name", MAX_NAME_BYTES),
    ("classname", MAX_NAME_BYTES),
    ("file", MAX_NAME_BYTES),
    ("message", MAX_MESSAGE_BYTES),
    ("stacktrace", MAX_STACKTRACE_BYTES),
)
TEXT_CAPS = dict(TEXT_FIELDS)


@dataclass
class CappedFailedTests:
    json: str
    entries_cut: int
    bytes_cut: int


def cut_utf8(text: str, max_bytes: int) -> tuple[str, int]:
    """Cut `text` to at most `max_bytes` UTF-8 bytes on a character boundary; return it and the bytes removed."""
    if len(text) * 4 <= max_bytes:
        return text, 0
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, 0
    # A cut inside a multi-byte character leaves an incomplete sequence at the
    # end, which "ignore" drops; the input is valid UTF-8 everywhere else.
    kept = encoded[:max_bytes].decode("utf-8", errors="ignore")
    return kept, len(encoded) - len(kept.encode("utf-8"))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return jsontext.dumps(value)


def _duration(value: Any) -> int | Decimal | None:
    """Keep a duration in seconds exactly as sent, when it is a number from 0 to 1e9."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        return None
    if isinstance(value, Decimal) and not value.is_finite():
        return None
    if not 0 <= value <= MAX_DURATION_SECONDS:
        return None
    return value


def _known_fields(entry: Any) -> dict[str, Any]:
    """Return the stored fields of one entry, texts still uncut."""
    if not isinstance(entry, dict):
        return {"name": _as_text(entry)}
    result: dict[str, Any] = {}
    for name, _cap in TEXT_FIELDS:
        if entry.get(name) is not None:
            result[name] = _as_text(entry[name])
    duration = _duration(entry.get("duration", entry.get("duration_s")))
    if duration is not None:
        result["duration"] = duration
    return result


def _cut_texts(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: cut_utf8(value, TEXT_CAPS[name])[0] if name in TEXT_CAPS else value for name, value in entry.items()}


def _size(value: Any) -> int:
    return len(jsontext.dumps(value).encode("utf-8"))


def _list_size(entry_sizes: list[int]) -> int:
    # "[" and "]", plus one comma between neighbours.
    return 2 + sum(entry_sizes) + max(0, len(entry_sizes) - 1)


def cap_failed_tests(entries: list) -> CappedFailedTests:
    """Apply every cap and return the JSON text with the number of entries and bytes cut."""
    considered = [_known_fields(entry) for entry in entries[:MAX_ENTRIES]]
    entries_cut = len(entries) - len(considered)
    uncut_size = _list_size([_size(entry) for entry in considered])

    kept = [_cut_texts(entry) for entry in considered]
    sizes = [_size(entry) for entry in kept]
    total = _list_size(sizes)

    index = len(kept) - 1
    while total > MAX_LIST_BYTES and index >= 0:
        if kept[index].pop("stacktrace", None) is not None:
            smaller = _size(kept[index])
            total -= sizes[index] - smaller
            sizes[index] = smaller
        index -= 1

    while kept and total > MAX_LIST_BYTES:
        kept.pop()
        total -= sizes.pop() + (1 if kept else 0)
        entries_cut += 1

    text = jsontext.dumps(kept)
    return CappedFailedTests(json=text, entries_cut=entries_cut, bytes_cut=uncut_size - len(text.encode("utf-8")))
