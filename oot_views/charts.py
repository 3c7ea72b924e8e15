"""Geometry of the metrics page's charts, and their rendering as inline SVG.

The charts need no script and no inline style (the Content-Security-Policy
allows neither): shapes carry classes that static/oot/oot.css colours, and
each bar or point has a <title> that browsers show as a tooltip.
"""

import math
from datetime import datetime
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH = 520
HEIGHT = 170
LEFT = 50
RIGHT = 10
TOP = 10
BOTTOM = 26
MAX_X_LABELS = 6
# Pass-rate charts draw the chip thresholds (green from 95 %, yellow from 80 %).
PASS_RATE_GUIDES = (80, 95)


def bucket_label(moment: datetime, hourly: bool) -> str:
    return moment.strftime("%H:%M") if hourly else moment.strftime("%b %d")


def _nice_max(value: float) -> float:
    """Round up to 1, 2 or 5 times a power of ten, so the axis labels are round numbers."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _format(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f}%" if value >= 10 or value == int(value) else f"{value:.1f}%"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f}h"
        if value >= 60:
            return f"{value / 60:.0f}m"
        return f"{value:.0f}s" if value >= 10 or value == int(value) else f"{value:.1f}s"
    return f"{value:,.0f}"


class _Frame:
    """Maps bucket indexes and values to SVG coordinates."""

    def __init__(self, count: int, y_max: float) -> None:
        self.count = max(1, count)
        self.y_max = y_max
        self.plot_width = WIDTH - LEFT - RIGHT
        self.plot_height = HEIGHT - TOP - BOTTOM

    @property
    def slot(self) -> float:
        return self.plot_width / self.count

    def x(self, index: int) -> float:
        return LEFT + self.slot * (index + 0.5)

    def y(self, value: float) -> float:
        return TOP + self.plot_height * (1 - min(value, self.y_max) / self.y_max)


def _axes(frame: _Frame, labels: list[str], unit: str, guides: tuple = ()) -> dict:
    ticks = [0.0, frame.y_max / 2, frame.y_max]
    step = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return {
        "y_ticks": [{"y": round(frame.y(tick), 1), "label": _format(tick, unit)} for tick in ticks],
        "guides": [{"y": round(frame.y(value), 1), "label": _format(value, unit)} for value in guides],
        "x_ticks": [
            {"x": round(frame.x(index), 1), "label": label} for index, label in enumerate(labels) if index % step == 0
        ],
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "baseline": HEIGHT - BOTTOM,
        "label_y": HEIGHT - 6,
    }


def bar_chart(title: str, labels: list[str], series: list[dict], unit: str = "") -> dict:
    """Build overlaid bars: each series is {"label", "tone", "values"}, drawn in order, later ones in front."""
    peak = max((value or 0 for item in series for value in item["values"]), default=0)
    frame = _Frame(len(labels), _nice_max(peak))
    width = max(1.0, frame.slot * 0.72)
    bars = []
    for item in series:
        for index, value in enumerate(item["values"]):
            if not value:
                continue
            top = frame.y(value)
            bars.append(
                {
                    "x": round(frame.x(index) - width / 2, 1),
                    "y": round(top, 1),
                    "width": round(width, 1),
                    "height": round(HEIGHT - BOTTOM - top, 1),
                    "tone": item["tone"],
                    "tip": f"{labels[index]}: {_format(value, unit)} {item['label']}",
                }
            )
    return {
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "empty": peak == 0,
        "bars": bars,
        "lines": [],
        "legend": [{"tone": item["tone"], "label": item["label"]} for item in series],
        **_axes(frame, labels, unit),
    }


def line_chart(
    title: str, labels: list[str], series: list[dict], unit: str = "", y_max: float | None = None, guides: tuple = ()
) -> dict:
    """Build lines with a dot per value: each series is {"label", "tone", "values"}, and None leaves a gap."""
    values = [value for item in series for value in item["values"] if value is not None]
    frame = _Frame(len(labels), y_max if y_max is not None else _nice_max(max(values, default=0)))
    lines = []
    for item in series:
        segments: list[list[str]] = [[]]
        dots = []
        for index, value in enumerate(item["values"]):
            if value is None:
                segments.append([])
                continue
            x, y = round(frame.x(index), 1), round(frame.y(value), 1)
            segments[-1].append(f"{x},{y}")
            dots.append({"x": x, "y": y, "tip": f"{labels[index]}: {_format(value, unit)} {item['label']}"})
        lines.append(
            {
                "tone": item["tone"],
                "segments": [" ".join(points) for points in segments if len(points) > 1],
                "dots": dots,
            }
        )
    return {
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "empty": not values,
        "bars": [],
        "lines": lines,
        "legend": [{"tone": item["tone"], "label": item["label"]} for item in series],
        **_axes(frame, labels, unit, guides),
    }


def _text(value) -> str:
    return escape(str(value), quote=True)


def render(chart: dict) -> SafeString:
    """Return a chart as a <figure> with an inline <svg>, every label escaped.

    The metrics page draws about fifty charts, and building their markup with
    Django's template engine was slow, so it is built here.
    """
    legend = "".join(
        f'<span class="legend legend-{_text(item["tone"])}">{_text(item["label"])}</span>' for item in chart["legend"]
    )
    head = f'<figure class="chart"><figcaption>{_text(chart["title"])}{legend}</figcaption>'
    if chart["empty"]:
        return mark_safe(head + '<p class="chart-empty">No data in this time range.</p></figure>')

    left, right = chart["left"], chart["right"]
    parts = [f'<svg viewBox="0 0 {chart["width"]} {chart["height"]}" role="img" aria-label="{_text(chart["title"])}">']
    for tick in chart["y_ticks"]:
        parts.append(
            f'<line class="grid" x1="{left}" x2="{right}" y1="{tick["y"]}" y2="{tick["y"]}"/>'
            f'<text class="axis" x="{left - 6}" y="{tick["y"]}" text-anchor="end" dominant-baseline="middle">'
            f"{_text(tick['label'])}</text>"
        )
    for guide in chart["guides"]:
        parts.append(
            f'<line class="guide" x1="{left}" x2="{right}" y1="{guide["y"]}" y2="{guide["y"]}"/>'
            f'<text class="axis guide-label" x="{right}" y="{guide["y"]}" text-anchor="end" dy="-3">'
            f"{_text(guide['label'])}</text>"
        )
    for bar in chart["bars"]:
        parts.append(
            f'<rect class="bar bar-{_text(bar["tone"])}" x="{bar["x"]}" y="{bar["y"]}" width="{bar["width"]}" '
            f'height="{bar["height"]}"><title>{_text(bar["tip"])}</title></rect>'
        )
    for line in chart["lines"]:
        tone = _text(line["tone"])
        for points in line["segments"]:
            parts.append(f'<polyline class="line line-{tone}" fill="none" points="{points}"/>')
        for dot in line["dots"]:
            parts.append(
                f'<circle class="dot dot-{tone}" cx="{dot["x"]}" cy="{dot["y"]}" r="2.5">'
                f"<title>{_text(dot['tip'])}</title></circle>"
            )
    parts.append(f'<line class="baseline" x1="{left}" x2="{right}" y1="{chart["baseline"]}" y2="{chart["baseline"]}"/>')
    for tick in chart["x_ticks"]:
        parts.append(
            f'<text class="axis" x="{tick["x"]}" y="{chart["label_y"]}" text-anchor="middle">'
            f"{_text(tick['label'])}</text>"
        )
    parts.append("</svg></figure>")
    # Labels and tips went through _text, and every other value is a number computed here.
    return mark_safe(head + "".join(parts))
