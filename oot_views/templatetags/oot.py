"""Formatting for the pages: durations, percentages, times, event names and safe links."""

from datetime import UTC, datetime

from django import template

from oot_views.filters import EVENT_LABELS
from oot_views.links import safe_link

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """Format seconds as 45s, 12m 05s or 3h 07m, and an unknown duration as a dash."""
    if seconds is None:
        return "–"
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def percent(value) -> str:
    return "–" if value is None else f"{value:.1f}%"


@register.filter
def utc(value) -> str:
    if not isinstance(value, datetime):
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@register.filter
def utc_short(value) -> str:
    """Format a time as "Dec 04 14:05" (UTC), for narrow table columns."""
    if not isinstance(value, datetime):
        return "–"
    return value.astimezone(UTC).strftime("%b %d %H:%M")


@register.filter
def ago(value) -> str:
    if not isinstance(value, datetime):
        return "never"
    seconds = (datetime.now(UTC) - value).total_seconds()
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 36 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


@register.filter
def event_label(value) -> str:
    return EVENT_LABELS.get(value, str(value))


@register.filter
def http_url(value) -> str:
    """Return the value when it is a safe http(s) URL, else an empty string, so that no link is rendered."""
    return safe_link(value) or ""


@register.filter
def short_sha(value) -> str:
    return (value or "")[:7]


@register.simple_tag(takes_context=True)
def query_with(context, **changes) -> str:
    """Return the current query string with some parameters replaced."""
    query = context["request"].GET.copy()
    for key, value in changes.items():
        query[key] = value
    return "?" + query.urlencode()


@register.simple_tag
def cell_details(cell: dict):
    """Render a matrix cell and its details panel (see oot_views/cell_html.py)."""
    from oot_views.cell_html import cell_details as render

    return render(cell)


@register.simple_tag
def chart(geometry: dict):
    """Render a chart of oot_views/charts.py as inline SVG."""
    from oot_views.charts import render

    return render(geometry)
