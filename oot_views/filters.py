"""Query-string parameters of the pages and JSON endpoints: time range, event type and page number.

An invalid value is a `FilterError` naming the parameter, which the views turn
into a 400 response, so a mistyped URL never silently shows other data.
"""

from dataclasses import dataclass

from oot_ingest.vocabulary import EVENT_PULL_REQUEST, EVENT_TYPES

DAY_CHOICES = {1: "24h", 7: "7d", 30: "30d"}
DEFAULT_DAYS = 7
EVENT_LABELS = {
    "pull_request": "Pull requests",
    "push": "Push (ciflow/trunk)",
    "nightly": "Nightly",
    "periodic": "Periodic",
}
MAX_PAGE = 10_000


class FilterError(ValueError):
    """A query-string parameter has a value the pages do not accept."""


@dataclass(frozen=True)
class Filters:
    days: int
    event_type: str

    @property
    def range_label(self) -> str:
        return DAY_CHOICES[self.days]


def parse_filters(query) -> Filters:
    """Read ?days= (1, 7 or 30) and ?event= from a query string, using the defaults for absent values."""
    raw_days = query.get("days", "")
    if raw_days == "":
        days = DEFAULT_DAYS
    elif raw_days.isdigit() and int(raw_days) in DAY_CHOICES:
        days = int(raw_days)
    else:
        choices = ", ".join(str(choice) for choice in DAY_CHOICES)
        raise FilterError(f"days must be one of {choices}, got {raw_days[:40]!r}")

    event_type = query.get("event", "") or EVENT_PULL_REQUEST
    if event_type not in EVENT_TYPES:
        raise FilterError(f"event must be one of {', '.join(EVENT_TYPES)}, got {event_type[:40]!r}")
    return Filters(days=days, event_type=event_type)


def parse_page(query) -> int:
    """Read ?page= (1 or more); an absent value is page 1."""
    raw = query.get("page", "")
    if raw == "":
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise FilterError(f"page must be a whole number from 1 to {MAX_PAGE}, got {raw[:40]!r}")
    return int(raw)
